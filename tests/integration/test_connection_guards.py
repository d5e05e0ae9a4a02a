"""Connection-level guards, as the attacks they stop: `relaycast serve` on loopback with short deadlines, driven
with raw sockets (slowloris headers, an unfinished body, a 1 MiB header, a flood of connections) and the `openai`
SDK (a long stream that must not be cut)."""

from __future__ import annotations

import select
import socket
import time
import urllib.request
from collections.abc import Iterator

import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaycast.config import ConfigError, ServerConfig, parse
from relaycast.fake.server import FakeUpstream
from relaycast.server.runner import ThreadedServer
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, standard_config

DEADLINE_S = 0.5
GUARDS = f"""
server:
  header_timeout: {DEADLINE_S}
  body_timeout: {DEADLINE_S}
  max_header_bytes: 16384
"""


@pytest.fixture(scope="module")
def gw(fake: Fake) -> Iterator[GatewayProcess]:
    g = GatewayProcess(standard_config(fake.url, GUARDS), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield g
    g.stop()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(s: socket.socket, within: float = 10.0) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    s.settimeout(within)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - start


def read_response(s: socket.socket) -> tuple[int, bytes]:
    """One response with a content-length body, read off a connection that stays open."""
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:]) if k.lower() == b"content-length"
    )
    while len(body) < length:
        body += s.recv(65536)
    return int(head.split()[1]), body


def healthz(port: int) -> bytes:
    return f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def error_code(response: bytes) -> str:
    body = response.partition(b"\r\n\r\n")[2]
    code: str = orjson.loads(body)["error"]["code"]
    return code


def trickle(s: socket.socket, piece: bytes, for_s: float = 8.0) -> bool:
    """Send `piece` every 100 ms for `for_s` seconds, far longer than the deadline; True once the gateway answers
    or closes the connection first."""
    start = time.monotonic()
    try:
        while time.monotonic() - start < for_s:
            s.sendall(piece)
            if select.select([s], [], [], 0.1)[0]:
                return True
    except (BrokenPipeError, ConnectionResetError):
        return True
    return False


def test_slowloris_headers_are_answered_408_and_closed(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    s.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\n".encode())
    # One header line at a time: each arrives in time, the end of the headers never does.
    assert trickle(s, b"x-pad: a\r\n"), "the gateway kept a slowloris connection open"
    data, _ = read_until_closed(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert error_code(data) == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    data, took = read_until_closed(s)
    s.close()
    assert data == b""  # nothing was asked, so nothing is answered
    assert took < 5


def test_an_unfinished_body_is_answered_408_and_closed(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    s.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\ncontent-type: application/json\r\n"
        'content-length: 1000\r\n\r\n{"model": "gpt-4o-mini",'.encode()
    )
    data, took = read_until_closed(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert error_code(data) == "request_timeout"
    assert took < 5


def test_a_1_mib_header_gets_431(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nx-big: {'a' * (1 << 20)}\r\n\r\n".encode()
    try:
        s.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass  # answered and shut before the whole header was sent
    data, took = read_until_closed(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 431"), data[:200]
    assert error_code(data) == "headers_too_large"
    assert took < 5


def test_metrics_show_open_connections_and_refusals_by_reason(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nx-big: {'a' * 20000}\r\n\r\n".encode())
    read_until_closed(s)
    s.close()
    req = urllib.request.Request(gw.url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    refused = {s.labels["reason"]: s.value for s in families["relaycast_connections_refused"].samples}
    assert refused["headers_too_large"] >= 1
    assert set(refused) == {"header_timeout", "body_timeout", "headers_too_large", "over_capacity", "malformed"}
    assert families["relaycast_connections_open"].samples[0].value >= 1  # the scrape's own connection


def test_headers_sent_whole_but_over_the_limit_get_431(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nx-big: {'a' * 20000}\r\n\r\n".encode())
    data, _ = read_until_closed(s)
    s.close()
    assert data.startswith(b"HTTP/1.1 431"), data[:200]


def test_a_kept_alive_connection_may_idle_longer_than_the_header_deadline(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    s.sendall(healthz(gw.port))
    assert read_response(s)[0] == 200
    time.sleep(DEADLINE_S * 2.5)  # idle between requests is keep_alive_timeout's (75 s), not header_timeout's
    s.sendall(healthz(gw.port))
    assert read_response(s)[0] == 200
    s.close()


def test_blank_lines_do_not_keep_a_connection_open(gw: GatewayProcess) -> None:
    s = connect(gw.port)
    s.sendall(healthz(gw.port))
    assert read_response(s)[0] == 200
    # Bytes that begin no request, forever.
    assert trickle(s, b"\r\n"), "blank lines kept the connection open"
    read_until_closed(s)
    s.close()


def test_a_long_stream_is_not_cut_by_the_body_deadline(gw: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    start = time.monotonic()
    stream = client.chat.completions.create(
        model="fakeai/gpt-4o-mini@tps=10,tokens=20",
        messages=[{"role": "user", "content": "count slowly"}],
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    took = time.monotonic() - start
    assert took > 4 * DEADLINE_S  # the stream lasted several deadlines...
    assert text  # ...and arrived whole
    assert stream.response.status_code == 200


def test_connections_above_the_cap_get_503_while_admitted_ones_keep_working(fake: Fake) -> None:
    cap = 4
    g = GatewayProcess(
        standard_config(fake.url, f"server:\n  max_connections: {cap}\n"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    ).wait_ready()
    admitted: list[socket.socket] = []
    flood: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 10
        while len(admitted) < cap and time.monotonic() < deadline:
            s = connect(g.port)
            s.sendall(healthz(g.port))
            if read_response(s)[0] == 200:
                admitted.append(s)
            else:  # the readiness probe's connection had not been released yet
                s.close()
                time.sleep(0.05)
        assert len(admitted) == cap

        for _ in range(10):
            s = connect(g.port)
            s.sendall(healthz(g.port))
            flood.append(s)
        for s in flood:
            data, took = read_until_closed(s)
            assert data.startswith(b"HTTP/1.1 503"), data[:200]
            assert error_code(data) == "over_capacity"
            assert took < 5

        for s in admitted:  # an operator's probe on a connection it already holds still answers
            s.sendall(healthz(g.port))
            assert read_response(s)[0] == 200

        admitted.pop().close()  # a slot frees up: the next connection is served
        time.sleep(0.2)
        s = connect(g.port)
        s.sendall(healthz(g.port))
        assert read_response(s)[0] == 200
        admitted.append(s)
    finally:
        for s in admitted + flood:
            s.close()
        g.stop()


def test_every_refusal_is_counted_by_reason() -> None:
    settings = ServerConfig(header_timeout=DEADLINE_S, body_timeout=DEADLINE_S, max_connections=2)
    with ThreadedServer(FakeUpstream(api_key=UPSTREAM_KEY), settings=settings) as srv:
        port = srv.port
        held = [connect(port), connect(port)]
        for s in held:
            s.sendall(healthz(port))
            read_response(s)
        over = connect(port)
        over.sendall(healthz(port))
        assert read_until_closed(over)[0].startswith(b"HTTP/1.1 503")
        for s in [*held, over]:
            s.close()
        time.sleep(0.2)

        slow = connect(port)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        unfinished = connect(port)
        unfinished.sendall(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 10\r\n\r\n{")
        for s in (slow, unfinished):
            assert read_until_closed(s)[0].startswith(b"HTTP/1.1 408")
            s.close()
        big = connect(port)
        big.sendall(f"GET / HTTP/1.1\r\nx-big: {'a' * 100_000}\r\n\r\n".encode())
        assert read_until_closed(big)[0].startswith(b"HTTP/1.1 431")
        big.close()
        garbage = connect(port)
        garbage.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a TLS hello on the plain port
        assert read_until_closed(garbage)[0].startswith(b"HTTP/1.1 400")
        garbage.close()
        time.sleep(0.2)
        assert srv.guard.counts() == {
            "header_timeout": 1,
            "body_timeout": 1,
            "headers_too_large": 1,
            "over_capacity": 1,
            "malformed": 1,
            "open": 0,
        }


@pytest.mark.parametrize(
    ("server", "where"),
    [
        ("{header_timeout: 0}", "server.header_timeout"),
        ("{body_timeout: -1}", "server.body_timeout"),
        ("{keep_alive_timeout: soon}", "server.keep_alive_timeout"),
        ("{max_header_bytes: 10}", "server.max_header_bytes"),
        ("{max_connections: 0}", "server.max_connections"),
        ("{allowed_hosts: ['a b']}", "server.allowed_hosts[0]"),
        ("{allowed_hosts: ['ok.example', 'gateway.example:8080']}", "server.allowed_hosts[1]"),
        ("{allowed_hosts: ['[::1]:8080']}", "server.allowed_hosts[0]"),
    ],
)
def test_bad_guard_settings_are_refused_at_load(server: str, where: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(f"server: {server}\nproviders: [{{name: openai, api_key: x}}]\n")
    assert e.value.where == where


def test_guard_settings_are_read() -> None:
    cfg = parse(
        "server: {header_timeout: 2.5, body_timeout: 60, keep_alive_timeout: 5, max_header_bytes: 8192,"
        " max_connections: 50, allowed_hosts: [Gateway.Internal, '*']}\nproviders: [{name: openai, api_key: x}]\n"
    )
    assert cfg.server == ServerConfig(
        header_timeout=2.5,
        body_timeout=60.0,
        keep_alive_timeout=5.0,
        max_header_bytes=8192,
        max_connections=50,
        allowed_hosts=("gateway.internal", "*"),
    )
