"""However a client's bytes are cut into reads, relaycast's HTTP/1.1 protocol (`server/http1.py`) answers the same:
pipelined requests (content-length and chunked bodies, `Expect: 100-continue`, HEAD) fed to one connection in
reads cut at random places, answered in order by an echoing ASGI app, the connection kept alive. The protocol runs
on a real event loop; the transport under it is a recorder, so that the reads' boundaries are the test's to choose
(a TCP socket on loopback would merge or split them as it likes)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycast.asgi import read_body
from relaycast.config import ServerConfig
from relaycast.server.guards import ConnectionGuard
from relaycast.server.http1 import protocol_for


class Recorder(asyncio.Transport):
    """The socket's side of the connection: what the protocol wrote, and whether it closed or paused reading."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.paused = False

    def write(self, data: Any) -> None:
        self.out += data

    def writelines(self, chunks: Any) -> None:
        for c in chunks:
            self.out += c

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(name, default)


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = await read_body(receive, 1 << 20)
    answer = f"{scope['method']} {scope['path']} {len(body)} ".encode() + body
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


request_st = st.tuples(
    st.sampled_from(["GET", "POST", "HEAD"]),
    st.from_regex(r"/[a-z0-9]{0,12}", fullmatch=True),
    st.binary(max_size=300),
    st.booleans(),  # chunked (POST only)
    st.booleans(),  # Expect: 100-continue (POST only)
)


def encode(method: str, path: str, body: bytes, chunked: bool, expect: bool) -> tuple[bytes, bytes | None]:
    """The request's bytes, and the answer's body the echo app gives (None for HEAD: no body)."""
    if method != "POST":
        body = b""
    head = f"{method} {path} HTTP/1.1\r\nhost: gw\r\nx-pad: {'p' * len(path)}\r\n"
    if method == "POST" and chunked:
        half = len(body) // 2
        parts = [p for p in (body[:half], body[half:]) if p]
        wire = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        head += "transfer-encoding: chunked\r\n"
    else:
        wire = body
        head += f"content-length: {len(body)}\r\n"
    if method == "POST" and expect:
        head += "expect: 100-continue\r\n"
    answer = f"{method} {path} {len(body)} ".encode() + body
    return (head + "\r\n").encode() + wire, (None if method == "HEAD" else answer)


def responses(data: bytes) -> list[tuple[int, bytes | None]]:
    """The answers in what was written (100 Continue left out): status, and body (None after a HEAD's head)."""
    out: list[tuple[int, bytes | None]] = []
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"an unfinished head: {head!r}"
        status = int(head.split(b" ", 2)[1])
        if status == 100:
            continue
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        n = int(fields[b"content-length"])
        # a HEAD's answer carries the length a GET would have and no body: told apart by the request list
        out.append((status, rest[:n] if rest[:n].startswith((b"GET ", b"POST ")) else None))
        if out[-1][1] is not None:
            rest = rest[n:]
    return out


async def run(reads: list[bytes]) -> Recorder:
    """A connection fed `reads` one by one, the event loop let run between them until its requests are answered."""
    config = uvicorn.Config(echo, http=protocol_for(ConnectionGuard(ServerConfig())), lifespan="off")
    config.load()
    proto = config.http_protocol_class(  # type: ignore[call-arg]
        config=config, server_state=uvicorn.server.ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    t = Recorder()
    proto.connection_made(t)
    for piece in reads:
        proto.data_received(piece)
        for _ in range(3):
            await asyncio.sleep(0)
    for _ in range(200):  # the rest of the pipeline, one request after another
        if not proto.server_state.tasks and not proto.pipeline:
            break
        await asyncio.sleep(0)
    await asyncio.sleep(0)  # the last held write
    proto.connection_lost(None)
    return t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(request_st, min_size=1, max_size=6), st.data())
def test_any_cut_of_pipelined_requests_into_reads_gets_the_same_answers_in_order(
    requests: list[tuple[str, str, bytes, bool, bool]], data: st.DataObject
) -> None:
    encoded = [encode(*r) for r in requests]
    wire = b"".join(e[0] for e in encoded)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=12), label="cuts"))
    reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True) if wire[a:b]]

    t = asyncio.run(run(reads))
    assert not t.closed, bytes(t.out[-300:])
    assert responses(bytes(t.out)) == [(200, answer) for _, answer in encoded]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.data())
def test_an_upgrade_request_cut_anywhere_is_answered_with_its_whole_body_then_closed(
    body: bytes, data: st.DataObject
) -> None:
    wire = (
        (
            b"POST /up HTTP/1.1\r\nhost: gw\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
            b"http2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        + body
        + b"GET /after HTTP/1.1\r\nhost: gw\r\n\r\n"
    )  # after an upgrade request: never read as HTTP
    cuts = sorted(data.draw(st.sets(st.integers(1, len(wire) - 1), max_size=8), label="cuts"))
    reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True) if wire[a:b]]
    t = asyncio.run(run(reads))
    assert t.closed
    assert responses(bytes(t.out)) == [(200, b"POST /up %d " % len(body) + body)]
