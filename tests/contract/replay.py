"""A recorded upstream on 127.0.0.1: an aiohttp web server that answers every request with one fixture's bytes,
status and headers, and keeps what it was sent.

Streams (`.sse` fixtures) are written one event per write, a few milliseconds apart, as an upstream sends
tokens as they are generated (so the client mostly reads them one by one: what it learns from each read shows);
`one_write` sends them all at once instead, so the client reads them in one piece (as it may when it falls
behind). `cut_after` sends that many events and then drops the connection without ending the chunked body: the
client sees the stream break mid-way.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import orjson
from aiohttp import web

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EVENT_GAP_S = 0.005
CONTENT_TYPES = {".json": "application/json", ".sse": "text/event-stream; charset=utf-8"}


@dataclass(frozen=True, slots=True)
class Reply:
    """What the upstream answers: a fixture file (under tests/fixtures/<adapter>/), its status and headers."""

    fixture: str
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    cut_after: int | None = None  # events sent before the connection drops (streams only)
    one_write: bool = False  # streams: every event in one write


@dataclass(frozen=True, slots=True)
class Received:
    """One request the upstream was sent."""

    method: str
    path: str
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> dict[str, object]:
        parsed = orjson.loads(self.body)
        assert isinstance(parsed, dict)
        return parsed


def sse_events(raw: bytes) -> list[bytes]:
    """A fixture stream split into its events, each with the blank line that ends it."""
    return [block + b"\n\n" for block in raw.replace(b"\r\n", b"\n").split(b"\n\n") if block.strip()]


@dataclass(slots=True)
class ReplayUpstream:
    """`async with ReplayUpstream(adapter, reply) as up:` serves `reply` at `up.url` until the block ends.
    Without a reply, every request is answered 500 (and kept, so a test can say none should have come)."""

    adapter: str
    reply: Reply | None
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def __aenter__(self) -> ReplayUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        reply = self.reply
        if reply is None:
            return web.Response(status=500)
        suffix = Path(reply.fixture).suffix
        headers = {"content-type": CONTENT_TYPES[suffix], **dict(reply.headers)}
        raw = (FIXTURES / self.adapter / reply.fixture).read_bytes()
        if suffix != ".sse":
            return web.Response(status=reply.status, body=raw, headers=headers)
        resp = web.StreamResponse(status=reply.status, headers=headers)
        await resp.prepare(request)
        events = sse_events(raw)[: reply.cut_after]
        for i, event in enumerate([b"".join(events)] if reply.one_write else events):
            if i:
                await asyncio.sleep(EVENT_GAP_S)
            await resp.write(event)
        if reply.cut_after is not None and request.transport is not None:
            request.transport.close()  # what was written is flushed; the chunked body never ends
            return resp
        await resp.write_eof()
        return resp
