"""Dashboard sessions across processes: a login's cookie holds on every replica that shares the session secret and on
every worker of a host, and a logout ends it on all of them within a second (through the store they share, or the
host's telemetry process)."""

from __future__ import annotations

import http.client
import json

import pytest

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


@pytest.mark.parametrize("store", ["sqlite", "none"])
def test_a_login_holds_on_every_worker_of_a_host_without_a_configured_secret(fake: Fake, tmp_path, store: str):
    # no dashboard.session_secret; a logout reaches the other worker through the store, or without one through
    # the telemetry process
    extra = f"store: {{path: {tmp_path}/store.db}}\n" if store == "sqlite" else "store: {enabled: false}\n"
    gw = GatewayProcess(
        standard_config(fake.url, extra), extra_args=("--workers", "2"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    ).wait_ready()
    try:
        cookie = session_cookie(gw)

        def answer() -> tuple[int, int | None]:
            """(status, the worker that answered) of /admin/stats on a connection of its own, with the cookie."""
            conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            conn.request("GET", "/admin/stats", headers={"cookie": cookie})
            r = conn.getresponse()
            body = r.read()
            conn.close()
            return r.status, json.loads(body)["telemetry"]["worker"] if r.status == 200 else None

        # The kernel gives each new connection to whichever worker takes it first: ask until both have answered.
        workers: set[int | None] = set()

        def both_answered() -> bool:
            status, worker = answer()
            assert status == 200, f"the login was refused on another connection ({len(workers)} answered before)"
            workers.add(worker)
            return workers == {0, 1}

        wait_for(both_answered, "an answer from each worker")
        # A logout on one worker ends the session on both, within a second.
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        conn.request("POST", "/dashboard/logout", headers={"cookie": cookie})
        assert conn.getresponse().status == 303
        conn.close()
        wait_for(lambda: all(answer()[0] == 401 for _ in range(8)), "the logout on both workers")
    finally:
        gw.stop()
