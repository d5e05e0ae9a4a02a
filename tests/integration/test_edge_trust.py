"""Trust at the edge, tried as the attacker would: a web page in the browser of someone running a keyless gateway
(cross-site simple requests, DNS rebinding), a stolen dashboard cookie after logout, a password guesser at the
login form, and a client that picks another client's request id."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from relaycast.config import ServerConfig
from relaycast.server.app import allowed_hosts
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, exact_request, standard_config
from tests.store_helpers import wait_stored

CHAT = orjson.dumps({"model": "fakeai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


class Gw:
    def __init__(self, proc: GatewayProcess, records: Path) -> None:
        self.proc = proc
        self.records = records

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request exactly as given (`exact_request`)."""
        return exact_request(self.proc.port, method, path, body, headers, source)


@pytest.fixture(scope="module")
def gw(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    records = tmp_path_factory.mktemp("edge") / "records.jsonl"
    extra = f"""
broadcast:
  destinations:
    - {{name: local, kind: file, path: "{records}", flush_interval: 0.1}}
"""
    # No `keys:`: the gateway is open to anyone who can reach it, which is what a web page tries.
    proc = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield Gw(proc, records)
    proc.stop()


def _error(body: bytes) -> dict[str, Any]:
    err: dict[str, Any] = orjson.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"}, "OpenAI's error format"
    return err


# --- cross-site requests and DNS rebinding -----------------------------------------------------------


@pytest.mark.parametrize(
    "ctype",
    [
        "text/plain",  # fetch(url, {method: "POST", body: JSON.stringify(...)}) from any web page
        "application/x-www-form-urlencoded",  # an auto-submitted <form>
        "multipart/form-data; boundary=x",
        None,  # a Blob body without a type
        "application/json-patch+json",
        "text/plain; a=application/json",
    ],
)
def test_a_chat_body_that_is_not_declared_json_is_refused_before_any_upstream_call(
    gw: Gw, fake: Fake, ctype: str | None
) -> None:
    before = len(fake.requests())
    status, _, body = gw.call("POST", "/v1/chat/completions", CHAT, {"Content-Type": ctype} if ctype else {})
    assert status == 415
    assert _error(body)["code"] == "unsupported_media_type"
    assert len(fake.requests()) == before, "nothing was spent upstream"


def test_json_with_a_charset_is_answered(gw: Gw) -> None:
    status, _, body = gw.call("POST", "/v1/chat/completions", CHAT, {"Content-Type": "Application/JSON; charset=utf-8"})
    assert status == 200, body


def test_a_text_plain_post_to_the_admin_api_is_refused(gw: Gw) -> None:
    status, _, body = gw.call(
        "POST",
        "/admin/keys",
        b'{"name": "planted"}',
        {"Content-Type": "text/plain", "Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert status == 415 and _error(body)["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/chat/completions", CHAT, {"Content-Type": "application/json"}),
        (
            "POST",
            "/v1/embeddings",
            b'{"model":"fakeai/text-embedding-3-small","input":"x"}',
            {"Content-Type": "application/json"},
        ),
        ("GET", "/v1/models", None, {}),
        ("GET", "/admin/stats", None, {"Authorization": f"Bearer {ADMIN_KEY}"}),
        ("GET", "/metrics", None, {"Authorization": f"Bearer {ADMIN_KEY}"}),
        ("GET", "/dashboard/login", None, {}),
        (
            "POST",
            "/dashboard/login",
            f"key={ADMIN_KEY}".encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        ("GET", "/no/such/path", None, {}),
    ],
)
def test_dns_rebinding_a_foreign_host_name_is_refused_on_every_route(
    gw: Gw, fake: Fake, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> None:
    before = len(fake.requests())
    port = gw.proc.port
    status, answer, raw = gw.call(method, path, body, {**headers, "Host": f"attacker.example:{port}"})
    assert status == 403
    assert "server.allowed_hosts" in _error(raw)["message"]
    assert "set-cookie" not in answer
    assert len(fake.requests()) == before


def test_a_cross_site_origin_is_refused_even_with_a_json_body(gw: Gw) -> None:
    for origin in ("http://attacker.example", "https://attacker.example:443", "null"):
        status, _, raw = gw.call(
            "POST", "/v1/chat/completions", CHAT, {"Content-Type": "application/json", "Origin": origin}
        )
        assert status == 403, origin
        assert _error(raw)["code"] == "forbidden"
    # The dashboard's own forms, sent from a cross-site page.
    status, answer, _ = gw.call(
        "POST",
        "/dashboard/login",
        f"key={ADMIN_KEY}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://attacker.example"},
    )
    assert status == 403 and "set-cookie" not in answer


def test_loopback_names_and_same_machine_origins_are_answered(gw: Gw) -> None:
    port = gw.proc.port
    for host, origin in (
        (f"localhost:{port}", f"http://localhost:{port}"),
        (f"[::1]:{port}", None),
        ("127.0.0.1", "http://127.0.0.1:5173"),
        (f"LOCALHOST:{port}", "http://localhost"),
    ):
        headers = {"Content-Type": "application/json", "Host": host, **({"Origin": origin} if origin else {})}
        status, _, raw = gw.call("POST", "/v1/chat/completions", CHAT, headers)
        assert status == 200, (host, raw)


def test_healthz_answers_probes_that_use_any_host(gw: Gw) -> None:
    status, _, body = gw.call("GET", "/healthz", None, {"Host": "10.1.2.3:8080"})
    assert status == 200 and orjson.loads(body) == {"status": "ok"}


def test_the_official_openai_sdk_still_works(gw: Gw) -> None:
    c = openai.OpenAI(base_url=gw.proc.base_url, api_key="unused", max_retries=0, timeout=15)
    done = c.chat.completions.create(model="fakeai/gpt-4o-mini@tokens=3", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content == "the quick brown"
    chunks = list(
        c.chat.completions.create(
            model="fakeai/gpt-4o-mini@tokens=2", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(x.choices[0].delta.content or "" for x in chunks if x.choices) == "the quick"
    assert len(c.embeddings.create(model="fakeai/text-embedding-3-small", input="x").data) == 1
    assert any(m.id == "fast" for m in c.models.list())


def test_the_default_hosts_follow_the_listen_address() -> None:
    loopback = {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts(ServerConfig(host="127.0.0.1")) == loopback
    assert allowed_hosts(ServerConfig(host="::1")) == loopback
    assert allowed_hosts(ServerConfig(host="127.0.0.2")) == loopback | {"127.0.0.2"}
    assert allowed_hosts(ServerConfig(host="10.0.0.5")) == {"10.0.0.5"}
    assert allowed_hosts(ServerConfig(host="0.0.0.0")) is None  # any
    assert allowed_hosts(ServerConfig(host="::")) is None
    assert allowed_hosts(ServerConfig(host="0.0.0.0", allowed_hosts=("gw.example.com",))) == {"gw.example.com"}
    assert allowed_hosts(ServerConfig(host="127.0.0.1", allowed_hosts=("*",))) is None


# --- dashboard sessions and logins ---------------------------------------------------------------------


def _login(gw: Gw, key: str, source: str | None = None) -> tuple[int, dict[str, str]]:
    status, headers, _ = gw.call(
        "POST",
        "/dashboard/login",
        f"key={key}".encode(),
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{gw.proc.port}"},
        source=source,
    )
    return status, headers


def _proxied_login(gw: Gw, key: str, forwarded: dict[str, str], source: str | None = None) -> tuple[int, str]:
    """A login as a reverse proxy forwards it: with its X-Forwarded-* headers. The status and the cookie set."""
    status, headers, _ = gw.call(
        "POST",
        "/dashboard/login",
        f"key={key}".encode(),
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": f"http://127.0.0.1:{gw.proc.port}",
            **forwarded,
        },
        source=source,
    )
    return status, headers.get("set-cookie", "")


def test_a_reverse_proxy_on_loopback_names_the_client_and_https_and_no_one_else_can(gw: Gw) -> None:
    """Behind a reverse proxy on the same host, which connects from 127.0.0.1, the login throttle counts each client
    by its X-Forwarded-For and the session cookie is Secure when X-Forwarded-Proto says https. A client connecting
    from any other address cannot use those headers: not to get a Secure cookie, nor to escape the throttle."""
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    status, cookie = _proxied_login(gw, ADMIN_KEY, https)
    assert status == 303 and "; Secure" in cookie and "HttpOnly" in cookie
    status, cookie = _proxied_login(gw, ADMIN_KEY, {})
    assert status == 303 and cookie and "Secure" not in cookie
    status, cookie = _proxied_login(gw, ADMIN_KEY, https, source="127.0.0.4")
    assert status == 303 and cookie and "Secure" not in cookie, "only the proxy's address is believed"

    for i in range(5):
        assert _proxied_login(gw, f"proxied-{i}", {"X-Forwarded-For": "198.51.100.1"})[0] == 401
    assert _proxied_login(gw, "proxied-5", {"X-Forwarded-For": "198.51.100.1"})[0] == 429
    assert _proxied_login(gw, "proxied-6", {"X-Forwarded-For": "198.51.100.2"})[0] == 401, "another client behind it"

    spoofer = "127.0.0.5"  # not the proxy: a new X-Forwarded-For on every guess changes nothing
    for i in range(5):
        assert _proxied_login(gw, f"spoof-{i}", {"X-Forwarded-For": f"192.0.2.{i}"}, source=spoofer)[0] == 401
    assert _proxied_login(gw, "spoof-5", {"X-Forwarded-For": "192.0.2.99"}, source=spoofer)[0] == 429


def _session(gw: Gw) -> str:
    status, headers = _login(gw, ADMIN_KEY)
    assert status == 303 and headers["location"] == "/dashboard"
    return headers["set-cookie"].split(";", 1)[0]


def test_a_logged_out_session_cookie_is_refused(gw: Gw) -> None:
    stolen, other = _session(gw), _session(gw)
    assert stolen != other, "every login is its own session"
    assert gw.call("GET", "/dashboard", None, {"Cookie": stolen})[0] == 200
    assert gw.call("GET", "/admin/analytics/spend?since=1h", None, {"Cookie": stolen})[0] == 200

    status, headers, _ = gw.call("POST", "/dashboard/logout", b"", {"Cookie": stolen})
    assert status == 303 and "Max-Age=0" in headers["set-cookie"]

    # The cookie kept (by a browser that ignored the reset, or by someone who copied it) no longer works.
    status, headers, _ = gw.call("GET", "/dashboard", None, {"Cookie": stolen})
    assert status == 303 and headers["location"] == "/dashboard/login"
    status, _, raw = gw.call("GET", "/admin/analytics/spend?since=1h", None, {"Cookie": stolen})
    assert status == 401 and _error(raw)["code"] == "unauthorized"
    # Another session (another browser) is not affected.
    assert gw.call("GET", "/dashboard", None, {"Cookie": other})[0] == 200


def test_a_concurrent_burst_of_bad_logins_gets_only_five_guesses(gw: Gw) -> None:
    """Logins sent at once all pass the throttle while their bodies arrive: they are checked again after."""
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda i: _login(gw, f"burst-{i}", source="127.0.0.3")[0], range(40)))
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses


def test_the_sixth_bad_login_in_a_minute_gets_429_even_with_the_right_key(gw: Gw) -> None:
    guesser = "127.0.0.2"  # another loopback address: the throttle is per client address
    for i in range(5):
        assert _login(gw, f"guess-{i}", source=guesser)[0] == 401
    t0 = time.monotonic()
    status, headers, raw = gw.call(
        "POST",
        "/dashboard/login",
        b"key=guess-5",
        {"Content-Type": "application/x-www-form-urlencoded"},
        source=guesser,
    )
    assert status == 429 and _error(raw)["code"] == "rate_limit_exceeded"
    assert 1 <= int(headers["retry-after"]) <= 60
    status, headers = _login(gw, ADMIN_KEY, source=guesser)
    assert status == 429 and "set-cookie" not in headers, "a throttled address learns nothing, not even a hit"
    assert time.monotonic() - t0 < 10
    # Someone else, from another address, still logs in.
    assert _login(gw, ADMIN_KEY)[0] == 303


# --- request ids -----------------------------------------------------------------------------------------


def test_two_requests_with_the_same_client_request_id_are_two_records(gw: Gw) -> None:
    c = openai.OpenAI(base_url=gw.proc.base_url, api_key="unused", max_retries=0, timeout=15)
    ours = []
    for _ in range(2):
        raw = c.chat.completions.with_raw_response.create(
            model="fakeai/gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": "victim-request-1"},
        )
        assert raw.headers["x-request-id"] == "victim-request-1", "the client's id is echoed for correlation"
        ours.append(raw.headers["x-relaycast-request-id"])
    assert ours[0] != ours[1] and all(r.startswith("req_") for r in ours)

    # The file destination (the broadcast's dedupe key) sees two records, each keyed by the gateway's id.
    deadline = time.monotonic() + 10
    found: dict[str, dict[str, Any]] = {}
    while len(found) < 2 and time.monotonic() < deadline:
        if gw.records.exists():
            for line in gw.records.read_bytes().splitlines():
                doc = orjson.loads(line)
                if doc["request_id"] in ours:
                    found[doc["request_id"]] = doc
        time.sleep(0.05)
    assert set(found) == set(ours)
    assert all(d["client_request_id"] == "victim-request-1" for d in found.values())
    # And the store keeps both.
    stored = wait_stored(gw.proc.url, ours)
    assert {stored[r]["request"]["request_id"] for r in ours} == set(ours)
