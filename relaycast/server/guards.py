"""Connection-level guards: how long a client may take to send a request, how large its headers may be, and how
many connections the server holds, enforced in a small subclass of uvicorn's httptools protocol.

- header deadline: a new connection must finish its request headers within `header_timeout` of opening; a kept-alive
  connection within `header_timeout` of the first byte of its next request (the idle time before that byte is
  `keep_alive_timeout`'s). Answered 408, then closed; a connection that sent nothing is closed without a word.
- body deadline: the request body must be received within `body_timeout` of the end of its headers. Only reading
  the request is timed; a response may stream for as long as it needs. Answered 408 when no response has started,
  otherwise closed.
- header size: request line and headers together at most `max_header_bytes`; more is answered 431 and closed,
  before the application sees the request. Bytes are counted as they arrive, so the parser never holds more than
  the limit and one read.
- connection cap: at most `max_connections` connections are served at once. A connection opened above the cap is
  answered 503 once its request headers arrive (unless a slot has freed up by then) and closed; connections
  already served keep working, so an operator's `/healthz` on one still answers during a flood. (uvicorn's own
  `limit_concurrency` is not used: at each request it compares every open connection, the excess ones included,
  with the limit, so a flood of idle connections would turn every request on every connection into a 503.)

Each answer is a JSON error in OpenAI's format with `connection: close`, then the write side is shut and what the
client still sends is read and discarded for a moment, so that it reads the answer instead of a reset. Every trip
is counted by reason in a `ConnectionGuard`, one per server (no module state).
"""

from __future__ import annotations

import asyncio
import http
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from relaycast import errors
from relaycast.asgi import DISCONNECT, Disconnect
from relaycast.config import ServerConfig
from relaycast.server.corked import CorkedTransport

REASONS = ("header_timeout", "body_timeout", "headers_too_large", "over_capacity")
LINGER_S = 2.0  # how long an answered connection reads and discards what the client still sends

_IDLE, _HEADERS, _BODY = 0, 1, 2  # what the connection is reading


class ConnectionGuard:
    """One server's connection limits, the number of connections it serves, and its refusals by reason."""

    def __init__(self, settings: ServerConfig | None = None) -> None:
        self.settings = settings or ServerConfig()
        self.open = 0  # connections admitted under the cap
        self.refused = dict.fromkeys(REASONS, 0)

    def admit(self) -> bool:
        if self.open >= self.settings.max_connections:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def counts(self) -> dict[str, int]:
        """`relaycast_connections_refused_total{reason}` material, and the open connections."""
        return {**self.refused, "open": self.open}

    def protocol(self) -> type[GuardedHttpProtocol]:
        """The protocol class to give uvicorn (`uvicorn.Config(http=...)`), bound to this guard."""
        return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": self})


def answer(e: errors.RelaycastError) -> bytes:
    body = e.body_bytes()
    head = (
        f"HTTP/1.1 {e.status_code} {http.HTTPStatus(e.status_code).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, a header size limit and the connection cap. It only adds to
    uvicorn's callbacks and reads a few of its attributes (`cycle`, `pipeline`, `flow`), each with a default."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # uvicorn's Config takes whole seconds; call_later takes any.
        self.timeout_keep_alive = self.guard.settings.keep_alive_timeout  # type: ignore[assignment]
        self._timer: asyncio.TimerHandle | None = None
        self._timer_reason = ""
        self._reading = _IDLE
        self._begun = 0  # requests begun on this connection
        self._header_bytes = 0  # request line and headers parsed so far (exact, from the parser's callbacks)
        self._header_chunks = 0  # bytes of reads that fell wholly inside this request's headers
        self._admitted = False
        self._answered = False  # the guard answered or closed: nothing more is parsed
        self._disconnect = Disconnect(self.loop)  # the connection's end, for the requests served on it

    # --- connection ---------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop)  # type: ignore[assignment]  # one write per response
        self._admitted = self.guard.admit()
        self._arm(self.guard.settings.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self.guard.release()
        super().connection_lost(exc)
        self._disconnect.fire()

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return  # lingering after an answer: discard
        in_headers, begun = self._reading == _HEADERS, self._begun
        super().data_received(data)
        if self._answered or self.transport.is_closing():
            return
        s = self.guard.settings
        if self._reading == _HEADERS:
            if in_headers and begun == self._begun:
                # The parser keeps partial headers to itself until they complete: bound them by what arrives.
                self._header_chunks += len(data)
                if self._header_chunks > s.max_header_bytes:
                    self._refuse(
                        errors.HeadersTooLarge(f"Request headers are larger than {s.max_header_bytes} bytes."),
                        "headers_too_large",
                    )
                    return
            if self._timer is None:
                self._arm(s.header_timeout, "header_timeout")
        elif self._reading == _BODY:
            if self._timer is None:
                self._arm(s.body_timeout, "body_timeout")
        elif self._timer is None and self._between_requests():
            # Bytes that begin no request (blank lines) cancel uvicorn's keep-alive timer: time them as headers.
            self._arm(s.header_timeout, "header_timeout")

    # --- parser callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._answered:
            return
        super().on_message_begin()
        # The app learns of the connection's end at once (uvicorn types the extensions as dicts: this one is not).
        self.scope["extensions"] = {DISCONNECT: self._disconnect}  # type: ignore[dict-item]
        self._reading = _HEADERS
        self._begun += 1
        self._header_bytes = self._header_chunks = 0

    def on_url(self, url: bytes) -> None:
        if self._answered:
            return
        self._header_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._answered:
            return
        self._header_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._answered:
            return
        self._disarm()
        self._reading = _BODY
        limit = self.guard.settings.max_header_bytes
        if self._header_bytes > limit:
            self._refuse(errors.HeadersTooLarge(f"Request headers are larger than {limit} bytes."), "headers_too_large")
            return
        if not self._admitted:
            self._admitted = self.guard.admit()
            if not self._admitted:
                self._refuse(
                    errors.OverCapacity("The gateway is serving as many connections as it allows; retry shortly."),
                    "over_capacity",
                )
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._answered:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._answered:
            return
        self._disarm()
        self._reading = _IDLE
        super().on_message_complete()
        if not getattr(self, "pipeline", None):
            # A body larger than uvicorn's read buffer paused reading until the app's next receive(), which the app
            # no longer makes (it learns of a disconnect from `Disconnect`): read on, or a client that leaves goes
            # unseen. A pipelined request behind this one pauses reading again (uvicorn queues it).
            flow = getattr(self, "flow", None)
            if flow is not None:
                flow.resume_reading()

    def send_400_response(self, msg: str) -> None:
        if not self._answered and not self.transport.is_closing():
            super().send_400_response(msg)

    # --- deadlines ----------------------------------------------------------------------------------------------

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expire)
        self._timer_reason = reason

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _between_requests(self) -> bool:
        cycle = getattr(self, "cycle", None)
        return cycle is None or bool(getattr(cycle, "response_complete", True))

    def _expire(self) -> None:
        self._timer = None
        reason = self._timer_reason
        if self.transport.is_closing():
            return
        if reason == "linger":
            self.transport.close()
            return
        flow = getattr(self, "flow", None)
        if flow is not None and getattr(flow, "read_paused", False):
            # The server stopped reading (a queued pipelined request, or a body the app has not taken yet): the
            # client is not the one who is slow.
            s = self.guard.settings
            self._arm(s.body_timeout if reason == "body_timeout" else s.header_timeout, reason)
            return
        message = "The request was not received in time."
        cycle = getattr(self, "cycle", None)
        if self._reading == _HEADERS and self._between_requests():
            self._refuse(errors.RequestTimeout(message), reason)
        elif (
            self._reading == _BODY
            and cycle is not None
            and not getattr(cycle, "response_started", True)
            and not getattr(self, "pipeline", None)
        ):
            # The app is waiting for the body: it sees a disconnect, and its own answer is never written.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(errors.RequestTimeout(message), reason)
        else:
            # Nothing begun (an idle new connection), or a response already on the wire: close without a word.
            self.guard.refused[reason] += 1
            self._answered = True
            self.transport.close()

    def _refuse(self, e: errors.RelaycastError, reason: str) -> None:
        """Answer `e`, shut the write side, and discard what the client still sends for a moment, then close."""
        self.guard.refused[reason] += 1
        self._answered = True
        self._disarm()
        t = self.transport
        t.write(answer(e))
        if not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        flow = getattr(self, "flow", None)
        if flow is not None:
            flow.resume_reading()
        self._arm(LINGER_S, "linger")
