"""relaycast's HTTP/1.1 protocol (`server/http1.py`) as clients meet it: a small ASGI app served by `ThreadedServer`
on loopback, driven with raw sockets (pipelining, `Expect: 100-continue`, HEAD, chunked bodies, malformed bytes,
keep-alive) and the standard library's `http.client` (large bodies both ways, a slow reader)."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from relaycast.asgi import DISCONNECT, read_body
from relaycast.config import ServerConfig
from relaycast.server.runner import ThreadedServer
from tests.conftest import exact_request

KEEP_ALIVE_S = 0.6


class App:
    """Echoes what it was asked, by path: `/echo` the body, `/scope...` the request as the app saw it, `/big/N` N
    bytes without a content-length (chunked), `/bad-header` a header value with CR LF, `/boom` an exception,
    `/wait` until the client leaves."""

    def __init__(self) -> None:
        self.gone: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/boom":
            raise ValueError("boom")
        if path == "/wait":
            left = asyncio.Event()
            scope["extensions"][DISCONNECT].watch(left.set)
            await left.wait()
            self.gone.append(path)
            return
        body = await read_body(receive, 64 * 1024 * 1024)
        if path == "/echo":
            await answer(send, 200, body)
        elif path.startswith("/scope"):
            seen = {
                "method": scope["method"],
                "path": scope["path"],
                "raw_path": scope["raw_path"].decode(),
                "query": scope["query_string"].decode(),
                "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
                "client": scope["client"][0],
                "scheme": scope["scheme"],
                "http_version": scope["http_version"],
            }
            await answer(send, 200, orjson.dumps(seen))
        elif path.startswith("/big/"):
            size = int(path.rsplit("/", 1)[1])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            piece = b"x" * 65536
            while size > 0:
                await send({"type": "http.response.body", "body": piece[:size], "more_body": True})
                size -= len(piece)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/bad-header":
            try:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1\r\nx-b: 2")]})
            except RuntimeError:
                await answer(send, 502, b"refused")
        else:
            await answer(send, 404, b"")


async def answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[ThreadedServer, App]]:
    app = App()
    settings = ServerConfig(keep_alive_timeout=KEEP_ALIVE_S, header_timeout=5, body_timeout=5)
    with ThreadedServer(app, settings=settings) as server:
        yield server, app


def fetch(
    server: ThreadedServer, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    return exact_request(server.port, method, path, body, headers, timeout=30)


def connect(server: ThreadedServer) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return s


def read_responses(s: socket.socket, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """`count` responses read off `s` (content-length or chunked bodies; HEAD answers have none)."""
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, f"closed after {out} and {buf!r}"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        if status == 100:
            continue
        body = b""
        if b"content-length" in headers:
            n = int(headers[b"content-length"])
            while len(buf) < n:
                buf += s.recv(65536)
            body, buf = buf[:n], buf[n:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            while not buf.endswith(b"0\r\n\r\n"):
                buf += s.recv(65536)
            body, buf = dechunk(buf), b""
        out.append((status, headers, body))
    return out


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


def until_closed(s: socket.socket) -> bytes:
    """Everything the server sends on `s` until it closes the connection; `s` is closed then."""
    s.settimeout(10)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return data


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def request(path: str, body: bytes = b"", method: str = "POST", extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def test_pipelined_requests_are_answered_in_order_on_one_connection(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(request("/echo", b"one") + request("/echo", b"two") + request("/echo", b"three"))
    assert [body for _, _, body in read_responses(s, 3)] == [b"one", b"two", b"three"]
    s.sendall(request("/echo", b"four"))  # the connection is still good
    assert read_responses(s, 1)[0][2] == b"four"
    s.close()


def test_the_scope_carries_the_request_as_sent(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    seen = orjson.loads(fetch(server, "POST", "/scope/a%20b?x=1&y=%20", headers={"X-Mixed-Case": "value  "})[2])
    assert seen["method"] == "POST"
    assert seen["path"] == "/scope/a b"
    assert seen["raw_path"] == "/scope/a%20b"
    assert seen["query"] == "x=1&y=%20"
    assert ["x-mixed-case", "value"] in seen["headers"]  # names in lower case, trailing white space dropped
    assert seen["client"] == "127.0.0.1" and seen["scheme"] == "http" and seen["http_version"] == "1.1"


def test_forwarded_headers_are_believed_from_a_trusted_proxy(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served  # loopback is trusted by default (FORWARDED_ALLOW_IPS)
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    seen = orjson.loads(fetch(server, "POST", "/scope", headers=forwarded)[2])
    assert seen["client"] == "203.0.113.9" and seen["scheme"] == "https"


def test_expect_100_continue_is_answered_before_the_body_is_sent(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
    s.settimeout(10)
    first = s.recv(65536)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first
    s.sendall(b"hello")
    assert read_responses(s, 1)[0][2] == b"hello"
    s.close()


def test_a_head_request_gets_the_head_alone_and_the_connection_goes_on(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(request("/scope", method="HEAD") + request("/echo", b"after"))
    s.settimeout(10)
    data = b""
    while not data.endswith(b"after"):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    first, second = data.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert first.endswith(b"\r\n\r\n")  # a head, and no body after it...
    assert int(first.partition(b"content-length: ")[2].split(b"\r\n")[0]) > 0  # ...though GET would have one
    assert second.endswith(b"\r\n\r\nafter")
    s.close()


def test_a_chunked_request_body_arrives_whole_and_an_unsized_answer_is_chunked(
    served: tuple[ThreadedServer, App],
) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    assert read_responses(s, 1)[0][2] == b"hello world"
    s.sendall(request("/big/100000"))
    status, headers, body = read_responses(s, 1)[0]
    assert headers[b"transfer-encoding"] == b"chunked" and body == b"x" * 100000
    s.close()


def test_large_bodies_both_ways_and_a_slow_reader_lose_nothing(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    body = bytes(range(256)) * 16384  # 4 MiB: reading pauses and resumes while the app takes it
    assert fetch(server, "POST", "/echo", body)[2] == body
    # 32 MiB to a client that reads slowly: the app's sends wait for the client (write flow control).
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/big/33554432")
    r = conn.getresponse()
    got = 0
    for i in range(100_000):
        part = r.read1(65536)
        if not part:
            break
        got += len(part)
        if i < 20:
            time.sleep(0.02)
    conn.close()
    assert got == 33554432


def test_bytes_that_are_not_http_get_400_in_openais_format_and_are_counted(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    before = server.guard.refused["malformed"]
    s = connect(server)
    s.sendall(b"GET / HTTP/1.1\r\nhost x\r\n\r\n")  # a header line without a colon
    data = until_closed(s)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"connection: close" in data
    error = orjson.loads(data.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "invalid_request" and error["type"] == "invalid_request_error"
    assert server.guard.refused["malformed"] == before + 1


def test_a_header_that_would_split_the_response_is_refused_in_the_apps_send(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(request("/bad-header"))
    status, headers, body = read_responses(s, 1)[0]
    assert (status, body) == (502, b"refused")
    assert b"x-b" not in headers
    s.close()


def test_an_app_that_fails_before_answering_gets_a_500_in_openais_format(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    status, headers, body = fetch(server, "GET", "/boom")
    assert status == 500
    assert headers["connection"] == "close"
    assert orjson.loads(body)["error"]["type"] == "server_error"


def test_keep_alive_is_counted_from_the_last_answer_not_the_first(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    s = connect(server)
    start = time.monotonic()
    while time.monotonic() - start < KEEP_ALIVE_S * 2.5:  # busy well past one keep-alive period
        s.sendall(request("/echo", b"."))
        assert read_responses(s, 1)[0][2] == b"."
        time.sleep(KEEP_ALIVE_S / 4)
    assert not closed_within(s, KEEP_ALIVE_S / 3), "closed while in use"
    assert closed_within(s, KEEP_ALIVE_S * 3), "an idle connection stayed open past keep_alive_timeout"
    s.close()


def test_the_app_learns_at_once_that_the_client_left(served: tuple[ThreadedServer, App]) -> None:
    server, app = served
    s = connect(server)
    s.sendall(request("/wait", method="GET"))
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 5
    while "/wait" not in app.gone and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "/wait" in app.gone


def test_curls_h2c_upgrade_of_a_post_is_answered_over_http_1_1_with_its_body(
    served: tuple[ThreadedServer, App],
) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(  # what `curl --http2 -d '{"a":1}' http://...` sends
        b"POST /echo HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
        b"content-type: application/json\r\nContent-Length: 7\r\n\r\n"
    )
    time.sleep(0.05)
    s.sendall(b'{"a":1}')  # the body in a read of its own
    data = until_closed(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in head  # not upgraded
    assert body == b'{"a":1}'


def test_an_upgrade_request_with_a_chunked_body_is_refused(served: tuple[ThreadedServer, App]) -> None:
    server, _ = served
    s = connect(server)
    s.sendall(
        b"POST /echo HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: h2c\r\n"
        b"transfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    )
    data = until_closed(s)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(data.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_request"


def test_an_upgrade_request_is_answered_as_a_plain_one_then_the_connection_closed(
    served: tuple[ThreadedServer, App],
) -> None:
    server, _ = served
    s = connect(server)
    upgrade = "connection: upgrade\r\nupgrade: websocket\r\n"
    s.sendall(request("/scope/ws", method="GET", extra=upgrade) + b"\x81\x05frame")  # then a WebSocket frame
    data = until_closed(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close" in head
    assert orjson.loads(body)["path"] == "/scope/ws"
