"""Dashboard sessions across processes: a login's cookie holds on every replica that shares the session secret,
and a logout ends it on all of them within a second (through the store they share)."""

from __future__ import annotations

import http.client

from tests.browser import session_cookie
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.integration.test_broadcast_settings import wait_for


def test_a_logout_ends_the_session_on_every_replica(fake: Fake, tmp_path):
    extra = f"store: {{path: {tmp_path}/shared.db}}\ndashboard: {{session_secret: shared-session-secret-0123456789}}\n"
    a = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    b = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        cookie = session_cookie(a)

        def status_on(gw: GatewayProcess) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            conn.request("GET", "/admin/broadcast/destinations", headers={"cookie": cookie})
            status = conn.getresponse().status
            conn.close()
            return status

        assert status_on(a) == 200 and status_on(b) == 200  # one login holds on both (a shared secret)
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        conn.request("POST", "/dashboard/logout", headers={"cookie": cookie})
        assert conn.getresponse().status == 303
        conn.close()
        assert status_on(a) == 401
        wait_for(lambda: status_on(b) == 401, "the logout on replica b")
    finally:
        a.stop()
        b.stop()
