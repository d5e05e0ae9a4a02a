"""One request on a connection of relaycast's HTTP/1.1 protocol (`server/http1.py`) and its response: the ASGI
app run in a task of its own, its `receive` (the body as the connection hands it over, then `http.disconnect`) and
its `send` (the response's head and framing: `content-length`, else chunked; none for HEAD, 204 and 304;
`connection: close` when either side ends the connection; a head with CR or LF inside a header refused before
anything is written; an app that fails before answering gets a 500 in OpenAI's format)."""

from __future__ import annotations

import asyncio
import http
import logging
from typing import TYPE_CHECKING, Any

from relaycast import errors

if TYPE_CHECKING:
    from relaycast.server.http1 import Http1Protocol

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _status_line(code: int) -> bytes:
    try:
        phrase = http.HTTPStatus(code).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {code} {phrase}\r\n".encode("ascii")


STATUS_LINES = {code: _status_line(code) for code in range(100, 600)}


_log = logging.getLogger("uvicorn.error")


class Cycle:
    """One request and its response: the app's `receive` and `send`."""

    __slots__ = (
        "proto",
        "scope",
        "keep_alive",
        "expect",
        "head",
        "parts",
        "size",
        "more_body",
        "pending",
        "waiter",
        "disconnected",
        "started",
        "complete",
        "chunked",
        "remaining",
        "task",
    )

    def __init__(self, proto: Http1Protocol, scope: dict[str, Any], keep_alive: bool, expect: bool, head: bool):
        self.proto = proto
        self.scope = scope
        self.keep_alive = keep_alive
        self.expect = expect  # answer `100 Continue` at the first receive()
        self.head = head  # a HEAD request: no body is written
        self.parts: list[bytes] = []  # body received, not yet handed to the app
        self.size = 0
        self.more_body = True
        self.pending = False  # something to hand to the app: body, or the body's end
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.started = False
        self.complete = False
        self.chunked = False
        self.remaining = 0  # content-length bytes still to write
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def run(self, app: Any) -> None:
        proto = self.proto
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:  # noqa: BLE001 - the app's failure is answered or the connection closed
            if self.disconnected:  # the client left, and the app learnt it by an exception: nothing to answer
                return
            _log.error("Exception in ASGI application", exc_info=exc)
            if not self.started:
                await self._send_500()
            else:
                proto.transport.close()
        else:
            if result is not None:
                _log.error("ASGI callable should return None, but returned %r.", type(result).__name__)
                proto.transport.close()
            elif not self.started and not self.disconnected:
                _log.error("ASGI callable returned without starting response.")
                await self._send_500()
            elif not self.complete and not self.disconnected:
                _log.error("ASGI callable returned without completing response.")
                proto.transport.close()
        finally:
            proto.tasks.discard(self.task)
            if proto.serving is self:
                proto.serving = None

    async def _send_500(self) -> None:
        body = errors.RelaycastError("Internal error in the gateway.").body_bytes()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        self.keep_alive = False
        await self.send({"type": "http.response.start", "status": 500, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    async def receive(self) -> dict[str, Any]:
        proto = self.proto
        if self.expect:
            self.expect = False
            if not self.started and not proto.transport.is_closing():
                proto.transport.write(CONTINUE)
        if not self.pending and not self.disconnected and not self.complete:
            if not proto.pipeline:
                proto._resume_reading()
            self.waiter = waiter = proto.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        self.pending = False
        parts = self.parts
        if not parts:
            body = b""
        else:
            body = parts[0] if len(parts) == 1 else b"".join(parts)
            self.parts = []
            self.size = 0
            if proto.read_paused and not proto.pipeline:
                proto._resume_reading()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        proto = self.proto
        if proto.write_paused and not self.disconnected:
            await proto.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            self._write_head(message["status"], message.get("headers", ()))
            return
        if self.complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        t = proto.transport
        if self.head:
            self.remaining = 0
        elif self.chunked:
            if body:
                t.write(b"%x\r\n" % len(body))
                t.write(body)
                t.write(b"\r\n")
            if not more_body:
                t.write(b"0\r\n\r\n")
        else:
            n = len(body)
            if n > self.remaining:
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining -= n
            if n:
                t.write(body)
        if not more_body:
            if self.remaining:
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.wake()
            if not self.keep_alive:
                t.close()
            proto.response_complete()

    def _write_head(self, status: int, headers: Any) -> None:
        proto = self.proto
        head = [STATUS_LINES[status]]
        lines = 2  # the status line and the blank line
        length: int | None = None
        chunked = False
        close = False
        for name, value in proto.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
            lines += 1
        for name, value in headers:
            name = name.lower()
            if name == b"content-length":
                if length is None and not chunked:
                    length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    chunked, length = True, None
            elif name == b"connection" and b"close" in [v.strip() for v in value.lower().split(b",")]:
                close = True
            head += (name, b": ", value, b"\r\n")
            lines += 1
        if close:
            self.keep_alive = False
        elif not self.keep_alive:
            head.append(b"connection: close\r\n")
            lines += 1
        if length is None and not chunked and not self.head and status not in (204, 304):
            chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
            lines += 1
        head.append(b"\r\n")
        data = b"".join(head)
        if data.count(b"\n") != lines or data.count(b"\r") != lines:
            raise RuntimeError("Invalid HTTP header: a name or value holds CR or LF.")
        self.started = True
        self.expect = False
        self.chunked = chunked
        self.remaining = length or 0
        proto.transport.write(data)
