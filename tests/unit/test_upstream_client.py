"""relaycast's upstream HTTP client (`providers.client`, `providers.exchange`) against real servers on 127.0.0.1
that write exact bytes: keep-alive and its races, bodies by length, chunks or close, gzip and deflate, heads and
encodings it refuses, flow control, cancellation, and TLS."""

from __future__ import annotations

import asyncio
import base64
import functools
import gzip
import socket
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from relaycast import errors
from relaycast.providers.client import UpstreamClient
from relaycast.providers.exchange import (
    HIGH_WATER,
    Answer,
    BadAnswer,
    BodyCut,
    ConnectFailed,
    ConnectTimeout,
    DecodeFailed,
    Disconnected,
)
from relaycast.providers.http import UpstreamEvents
from tests.certs import loopback_certs

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Upstream"], Awaitable[None]]


class Upstream:
    """A server whose handler reads requests and writes what the test says, byte for byte."""

    def __init__(self) -> None:
        self.url = ""
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.connections = 0
        self.hung_up = asyncio.Event()

    async def request(self, reader: asyncio.StreamReader) -> bool:
        """Read one request; False when the connection ended instead."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()
            return False
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length"))
        self.heads.append(head)
        self.bodies.append(await reader.readexactly(length))
        return True


@asynccontextmanager
async def upstream(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Upstream]:
    up = Upstream()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up.connections += 1
        try:
            await handler(reader, writer, up)
        except (ConnectionError, asyncio.IncompleteReadError):
            up.hung_up.set()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    up.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/v1/chat/completions"
    try:
        yield up
    finally:
        server.close()


def aio(fn):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    def run(*args, **kw):  # type: ignore[no-untyped-def]
        return asyncio.run(fn(*args, **kw))

    return run


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\n" + "".join(h + "\r\n" for h in headers)
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head += f"content-length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
    while await up.request(reader):
        writer.write(answer(b'{"n":%d}' % len(up.bodies), "content-type: application/json"))


async def read_all(a: Answer) -> bytes:
    parts = []
    while chunk := await a.read():
        parts.append(chunk)
    return b"".join(parts)


HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test"}


@aio
async def test_requests_go_out_whole_and_reuse_one_kept_alive_connection() -> None:
    async with upstream(keep_answering) as up, UpstreamClient() as client:
        for i in range(1, 4):
            a = await client.post(up.url, b'{"q":%d}' % i, HEADERS, 2.0)
            assert (a.status, a.headers["content-type"]) == (200, "application/json")
            assert await read_all(a) == b'{"n":%d}' % i
            a.release()
        assert up.connections == 1 and client.connects == 1
        assert up.bodies == [b'{"q":1}', b'{"q":2}', b'{"q":3}']
        lines = up.heads[0].split(b"\r\n")
        assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
        port = up.url.split(":")[2].split("/")[0]
        assert {b"host: 127.0.0.1:" + port.encode(), b"authorization: Bearer sk-test", b"content-length: 7"} <= set(
            lines
        )
        assert b"accept-encoding: gzip, deflate" in lines


@aio
async def test_a_request_the_upstream_took_and_closed_on_unanswered_is_never_sent_again() -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.request(reader)
        writer.write(answer(b"{}"))
        await writer.drain()
        await up.request(reader)  # read, then closed without a word: it may have been worked on

    async with upstream(answer_once) as up, UpstreamClient() as client:
        a = await client.post(up.url, b"{}", HEADERS, 2.0)
        assert a.status == 200 and await read_all(a) == b"{}"
        a.release()
        with pytest.raises(Disconnected):
            await client.post(up.url, b"{}", HEADERS, 2.0)
        assert len(up.bodies) == 2 and up.connections == 1 and client.connects == 1


@aio
async def test_an_idle_connection_is_not_used_past_the_upstreams_keep_alive_timeout() -> None:
    async def short_keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.request(reader):
            writer.write(answer(b"{}", "keep-alive: timeout=2"))

    async with upstream(short_keep_alive) as up, UpstreamClient() as client:
        for _ in range(2):
            a = await client.post(up.url, b"{}", HEADERS, 2.0)
            assert await read_all(a) == b"{}"
            a.release()
        assert client.connects == 1  # reused while fresh
        await asyncio.sleep(1.1)  # a second before the upstream's 2 s: not used again
        a = await client.post(up.url, b"{}", HEADERS, 2.0)
        a.release()
        assert client.connects == 2


@aio
async def test_bodies_end_by_length_by_chunks_or_by_close_and_a_cut_one_is_an_error() -> None:
    async def bodies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.request(reader):
            kind = up.bodies[-1]
            if kind == b"chunked":
                writer.write(answer(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "transfer-encoding: chunked"))
                continue
            if kind == b"close":  # no length: the body is what comes until the connection closes
                writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nabcde")
            elif kind == b"cut":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabcde")
            elif kind == b"cut-chunks":
                writer.write(answer(b"3\r\nabc\r\n", "transfer-encoding: chunked"))
            elif kind == b"reset":  # no length, and the connection reset rather than closed: not a whole body
                writer.write(b'HTTP/1.1 200 OK\r\n\r\n{"partial":')
                await writer.drain()
                await asyncio.sleep(0.05)
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.transport.abort()
            await writer.drain()
            return

    async with upstream(bodies) as up, UpstreamClient() as client:
        for kind in (b"chunked", b"close"):
            a = await client.post(up.url, kind, HEADERS, 2.0)
            assert await read_all(a) == (b"abcde"), kind
            a.release()
        for kind in (b"cut", b"cut-chunks", b"reset"):
            a = await client.post(up.url, kind, HEADERS, 2.0)
            with pytest.raises(BodyCut):
                await read_all(a)
            a.release()


@aio
async def test_gzip_and_deflate_bodies_are_inflated_and_a_broken_one_or_an_unknown_encoding_is_refused() -> None:
    text = b'{"content":"' + b"hello " * 50_000 + b'"}'
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    encoded = {
        b"gzip": (gzip.compress(text), "gzip"),
        b"zlib": (zlib.compress(text), "deflate"),
        b"raw": (raw.compress(text) + raw.flush(), "deflate"),  # deflate without its zlib wrapper
        b"broken": (b"\x1f\x8b\x08\x00garbage-garbage", "gzip"),
        b"trailing": (gzip.compress(b"{}") + b" " * 200_000, "gzip"),  # counted nowhere if let through
        b"br": (b"\x0b\x02\x80hi\x03", "br"),
    }

    async def encoded_bodies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.request(reader):
            body, encoding = encoded[up.bodies[-1]]
            writer.write(answer(body, f"content-encoding: {encoding}"))

    async with upstream(encoded_bodies) as up, UpstreamClient() as client:
        for kind in (b"gzip", b"zlib", b"raw"):
            a = await client.post(up.url, kind, HEADERS, 2.0)
            assert a.whole() is None  # compressed: read in bounded steps, never taken whole
            steps = []
            while chunk := await a.read():
                steps.append(len(chunk))
            assert sum(steps) == len(text) and max(steps) <= 64 * 1024, kind
            a.release()
        for kind in (b"broken", b"trailing"):
            a = await client.post(up.url, kind, HEADERS, 2.0)
            with pytest.raises(DecodeFailed, match="content-encoding"):
                await read_all(a)
            a.close()
        with pytest.raises(BadAnswer, match="content-encoding 'br' is not supported"):
            await client.post(up.url, b"br", HEADERS, 2.0)


@aio
async def test_a_head_past_its_limits_or_not_http_is_refused_and_its_connection_closed() -> None:
    async def bad_heads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.request(reader)
        if up.bodies[-1] == b"many":
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(b"x-h%d: v\r\n" % i for i in range(300)) + b"\r\n")
        elif up.bodies[-1] == b"long":
            writer.write(b"HTTP/1.1 200 OK\r\nx-long: " + b"v" * 70_000 + b"\r\n\r\n")
        elif up.bodies[-1] == b"endless":  # one field that never ends: refused as it grows, not when it ends
            writer.write(b"HTTP/1.1 200 OK\r\nx-a: ")
            for _ in range(64):
                writer.write(b"a" * 65536)
                await writer.drain()
        elif up.bodies[-1] == b"upgrade":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        else:
            writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await up.request(reader)  # waits: the client must hang up

    async with upstream(bad_heads) as up, UpstreamClient() as client:
        cases = (
            (b"many", "256 fields"),
            (b"long", "64 KiB"),
            (b"endless", "64 KiB"),
            (b"upgrade", "switched protocols"),
            (b"smtp", "malformed HTTP"),
        )
        for kind, match in cases:
            up.hung_up.clear()
            with pytest.raises(BadAnswer, match=match):
                await client.post(up.url, kind, HEADERS, 2.0)
            await asyncio.wait_for(up.hung_up.wait(), 2)
        assert client.connects == len(cases)


@aio
async def test_informational_answers_are_skipped_and_an_answer_nobody_asked_for_closes_the_connection() -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"{}"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(answer(b"unasked"))  # before any second request
        await writer.drain()
        await up.request(reader)

    async with upstream(chatty) as up, UpstreamClient() as client:
        a = await client.post(up.url, b"{}", HEADERS, 2.0)
        assert a.status == 200 and await read_all(a) == b"{}"
        a.release()
        await asyncio.wait_for(up.hung_up.wait(), 2)
        assert client.open_connections == 0


@aio
async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with upstream(keep_answering) as up, UpstreamClient() as client:
        with pytest.raises(ValueError, match="line break"):
            await client.post(up.url, b"{}", {"x-evil": "a\r\nx-injected: 1"}, 2.0)
        assert client.connects == 0 and up.heads == []


@aio
async def test_an_unread_answer_pauses_the_connection_and_a_released_one_mid_way_is_not_reused() -> None:
    big = b"x" * (8 * 1024 * 1024)
    wrote_all = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.request(reader):
            writer.write(answer(big))
            await writer.drain()
            wrote_all.set()

    async with upstream(flood) as up, UpstreamClient() as client:
        a = await client.post(up.url, b"{}", HEADERS, 2.0)
        await asyncio.sleep(0.3)
        # The client stopped reading at its high-water mark: the upstream's 8 MiB does not fit the sockets.
        assert not wrote_all.is_set()
        assert sum(len(c) for c in a._chunks) <= HIGH_WATER + 256 * 1024
        assert await read_all(a) == big
        a.release()
        b = await client.post(up.url, b"{}", HEADERS, 2.0)
        assert len(await b.read()) > 0
        b.release()  # far from its end: closed, not drained
        up.hung_up.clear()
        await asyncio.wait_for(up.hung_up.wait(), 5)
        assert client.connects == 1 and client.open_connections == 0


@aio
async def test_a_stream_released_just_before_its_last_chunk_keeps_its_connection() -> None:
    events = b"data: {}\n\ndata: [DONE]\n\n"

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.request(reader):
            writer.write(answer(b"%x\r\n%s\r\n" % (len(events), events), "transfer-encoding: chunked"))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")

    async with upstream(stream) as up, UpstreamClient() as client:
        for _ in range(2):
            a = await client.post(up.url, b"{}", HEADERS, 2.0)
            assert await a.read() == events
            a.release()  # the stream saw [DONE]; the chunk that ends the body is still on its way
            await asyncio.sleep(0.1)
        assert client.connects == 1


@aio
async def test_a_request_cancelled_while_waiting_closes_its_connection() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.request(reader)
        await up.request(reader)  # never answers; sees the hang-up

    async with upstream(silent) as up, UpstreamClient() as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.post(up.url, b"{}", HEADERS, 2.0)
        await asyncio.wait_for(up.hung_up.wait(), 2)
        assert client.open_connections == 0


@aio
async def test_connect_failures_are_classified() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with UpstreamClient() as client:
        with pytest.raises(ConnectFailed, match="refused|failed"):
            await client.post(f"http://127.0.0.1:{closed_port}/v1", b"{}", HEADERS, 2.0)
    # A listener whose accept queue is full: connecting hangs (the SYN is dropped) until the timeout.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(full.getsockname())
            fillers.append(f)
        await asyncio.sleep(0.05)
        async with UpstreamClient() as client:
            with pytest.raises(ConnectTimeout):
                await client.post(f"http://127.0.0.1:{full.getsockname()[1]}/v1", b"{}", HEADERS, 0.2)
    finally:
        for f in fillers:
            f.close()
        full.close()


def test_https_verifies_the_upstream_against_the_trusted_cas_and_keeps_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loopback_certs(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))

    async def main() -> None:
        async with upstream(keep_answering, server_tls) as up:
            async with UpstreamClient(trusting) as client:
                for i in (1, 2):
                    a = await client.post(up.url, b"{}", HEADERS, 2.0)
                    assert await read_all(a) == b'{"n":%d}' % i
                    a.release()
                assert client.connects == 1
            async with UpstreamClient() as untrusting:  # the system's CAs do not know this one
                with pytest.raises(ConnectFailed, match="certificate verify failed"):
                    await untrusting.post(up.url, b"{}", HEADERS, 2.0)
            monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.crt"))  # a private CA, as the docs say
            async with UpstreamClient() as private:
                a = await private.post(up.url, b"{}", HEADERS, 2.0)
                assert a.status == 200
                a.release()

    asyncio.run(main())


@aio
async def test_an_answer_taken_whole_after_reading_paused_leaves_a_connection_that_reads_again() -> None:
    big = b"[" + b"1," * 100_000 + b"1]"  # 200 KB: past the high-water mark, in one or two reads

    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.request(reader):
            writer.write(answer(big if len(up.bodies) == 1 else b"{}"))

    async with upstream(twice) as up, UpstreamClient() as client:
        a = await client.post(up.url, b"{}", HEADERS, 2.0)
        for _ in range(50):  # until all of it has arrived, reading paused on the way
            if a.whole() is not None or a._ended:
                break
            await asyncio.sleep(0.01)
        a.release()
        b = await asyncio.wait_for(client.post(up.url, b"{}", HEADERS, 2.0), 2)
        assert await read_all(b) == b"{}"
        b.release()
        assert client.connects == 1


@aio
async def test_an_answer_before_its_request_was_all_sent_does_not_leave_the_connection_pooled() -> None:
    async def refuse_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b'{"error":"too large"}', status="413 Payload Too Large"))
        await writer.drain()
        await asyncio.sleep(1)  # the rest of the body is never read

    async with upstream(refuse_early) as up, UpstreamClient() as client:
        a = await client.post(up.url, b"x" * (32 * 1024 * 1024), HEADERS, 2.0)
        assert a.status == 413 and await read_all(a) == b'{"error":"too large"}'
        a.release()
        assert client._idle.get(a._conn.origin, []) == []  # half a request still queued: closed, not kept


@aio
async def test_closing_an_answer_after_it_was_released_leaves_the_pooled_connection_alone() -> None:
    async with upstream(keep_answering) as up, UpstreamClient() as client:
        a = await client.post(up.url, b"{}", HEADERS, 2.0)
        await read_all(a)
        a.release()
        a.close()
        b = await client.post(up.url, b"{}", HEADERS, 2.0)
        assert await read_all(b) == b'{"n":2}'
        b.release()
        assert client.connects == 1
        await client.close()
        with pytest.raises(Disconnected, match="shutting down"):  # closed: nothing new is opened
            await client.post(up.url, b"{}", HEADERS, 2.0)


@aio
async def test_a_stream_that_does_not_inflate_is_malformed_and_one_cut_short_is_cut() -> None:
    async def streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.request(reader)
        sse = "content-type: text/event-stream"
        if up.bodies[-1] == b"garbled":
            writer.write(answer(b"\x1f\x8b\x08\x00not-gzip-at-all", sse, "content-encoding: gzip"))
        else:
            writer.write(answer(b'f\r\ndata: {"a":1}\n\n\r\n', sse, "transfer-encoding: chunked"))
        await writer.drain()

    async with upstream(streams) as up, UpstreamClient() as client:
        for kind, error in ((b"garbled", errors.MalformedResponse), (b"cut", errors.StreamCut)):
            a = await client.post(up.url, kind, HEADERS, 2.0)
            reads = UpstreamEvents(a, 2.0, "up/m")
            with pytest.raises(error):
                while await reads.next() is not None:
                    pass
            reads.close()
            a.close()


@aio
async def test_credentials_in_the_url_are_sent_as_basic_auth_unless_the_request_has_its_own() -> None:
    async with upstream(keep_answering) as up, UpstreamClient() as client:
        with_user = up.url.replace("http://", "http://ml%40team:p%3Ass@")
        for headers in ({"content-type": "application/json"}, HEADERS):
            a = await client.post(with_user, b"{}", headers, 2.0)
            await read_all(a)
            a.release()
        basic = "authorization: Basic " + base64.b64encode(b"ml@team:p:ss").decode()
        first, second = (head.decode().split("\r\n") for head in up.heads)
        assert basic in first
        assert [h for h in second if h.startswith("authorization")] == ["authorization: Bearer sk-test"]
