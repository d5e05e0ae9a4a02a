"""relaycast's HTTP/1.1 server protocol: httptools' parser, each request run as an ASGI app in a task of its own,
and the connection guards of `server/guards.py` built in. uvicorn still runs the server around it (sockets, the
lifespan, signals, the graceful drain); only the per-connection protocol is relaycast's, given to uvicorn as its
`http` class, constructed as uvicorn constructs its own.

It is relaycast's own for speed: answering a fixed body under load, uvicorn's protocol spent about 1.6 times the
CPU per request this one does (`bench/http_layer.py` measures both), and more with relaycast's guards layered over
its callbacks, in some 25 Python calls: header callbacks in two layers, an `asyncio.Event` and a keep-alive timer
per request, a middleware frame for proxy headers, regular expressions over every response header. This one does
what relaycast needs of it and no more:

- The request: method, path (percent-decoded), raw path, query string, headers (names in lower case, values
  without trailing white space), as an ASGI 3 `http` scope whose `extensions` hold the connection's `Disconnect`
  (`relaycast.asgi`). The body is handed to `receive()` as it arrives; a body already read when the app asks (the
  usual case) is handed over without waiting. Reading pauses while more than 64 KiB waits for the app.
  `Expect: 100-continue` is answered at the app's first `receive()`.
- The response (`server/cycle.py`, one request's `receive` and `send`): framed by its `content-length`, else
  chunked; none for HEAD, 204 and 304; `connection: close` when either side ends the connection. A head with a CR
  or LF inside a header is refused (a RuntimeError in the app's `send`) before anything is written. An app that
  fails before answering gets a 500 in OpenAI's format.
- Keep-alive for `server.keep_alive_timeout` between requests: one timer per connection, moved on lazily (a
  request does not cancel and re-arm it). Pipelined requests are served one after the other, in order.
- `X-Forwarded-For` and `X-Forwarded-Proto` from a trusted proxy (`FORWARDED_ALLOW_IPS`) set the scope's
  `client` and `scheme`, as uvicorn's `ProxyHeadersMiddleware` does (it is called for such requests only); the
  peer's trust is decided once per connection.
- A request the parser cannot read is answered 400 `invalid_request` and the connection closed (`malformed`).
- Nothing is upgraded (no WebSocket, no h2c): a request asking to upgrade, as `curl --http2` asks on every plain
  `http://` request, is answered over HTTP/1.1, then the connection closed. httptools' parser stops at such a
  request's headers, so its content-length body is read here; a chunked one is refused (400, `malformed`).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from typing import Any, ClassVar

import httptools
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl

from relaycast import errors
from relaycast.asgi import DISCONNECT, Disconnect
from relaycast.server.corked import CorkedTransport
from relaycast.server.cycle import Cycle
from relaycast.server.guards import LINGER_S, ConnectionGuard, answer

HIGH_WATER = 64 * 1024  # request body bytes held for the app before reading pauses
ASGI = {"version": "3.0", "spec_version": "2.3"}
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
_IDLE, _HEADERS, _BODY = 0, 1, 2  # what the connection is reading
_KEEP_ALIVE = "keep_alive"  # the timer's reason between requests (the others: guards.REASONS, "linger")


def protocol_for(guard: ConnectionGuard) -> type[Http1Protocol]:
    """The protocol class to give uvicorn (`uvicorn.Config(http=...)`), bound to one server's guard."""
    return type("Http1Protocol", (Http1Protocol,), {"guard": guard, "proxied": None})


class Http1Protocol(asyncio.Protocol):
    """One client connection. Built by uvicorn's server with its config and shared state; registers itself in
    `server_state.connections`, and each request's task in `server_state.tasks`, which the server's drain reads."""

    guard: ClassVar[ConnectionGuard]
    proxied: ClassVar[ProxyHeadersMiddleware | None] = None  # the app behind the proxy-header rewrite, once per server

    def __init__(
        self,
        config: Any,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.app = config.loaded_app
        cls = type(self)
        if cls.proxied is None:
            cls.proxied = ProxyHeadersMiddleware(self.app, trusted_hosts=config.forwarded_allow_ips)
        self.loop = _loop or asyncio.get_event_loop()
        self.server_state = server_state
        self.connections: set[Any] = server_state.connections
        self.tasks: set[asyncio.Task[None]] = server_state.tasks
        self.app_state = app_state
        self.root_path: str = config.root_path
        self.settings = self.guard.settings
        self.parser: Any = httptools.HttpRequestParser(self)
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.transport: CorkedTransport = None  # type: ignore[assignment]
        self.raw: asyncio.Transport = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.trusted = False  # the peer is a proxy whose X-Forwarded-* headers are believed
        self.cycle: Cycle | None = None  # the request parsed last (served, or queued behind the one served)
        self.serving: Cycle | None = None  # the request whose app runs
        self.pipeline: deque[tuple[Cycle, Any]] = deque()
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        self.disconnect = Disconnect(self.loop)  # the connection's end, for the requests served on it
        self.extensions = {DISCONNECT: self.disconnect}
        # the request being parsed
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect = False
        self.forwarded = False
        # guards
        self.timer: asyncio.TimerHandle | None = None
        self.timer_reason = ""
        self.idle_at = 0.0  # loop time the last response completed (the keep-alive timer measures from it)
        self.reading = _IDLE
        self.begun = 0  # requests begun on this connection
        self.header_bytes = 0  # request line and headers parsed so far (exact, from the parser's callbacks)
        self.header_chunks = 0  # bytes of reads that fell wholly inside this request's headers
        self.admitted = False
        self.answered = False  # the guard answered or closed: nothing more is parsed
        self.upgraded = False  # a request asked to upgrade: the parser reads nothing after its headers
        self.body_left = 0  # of such a request's content-length body, the bytes still to read past the parser

    # --- connection ---------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.connections.add(self)
        self.raw = transport
        self.transport = CorkedTransport(transport, self.loop)  # one write per response
        self.server = get_local_addr(transport)
        self.client = get_remote_addr(transport)
        if is_ssl(transport):
            self.scheme = "https"
        assert self.proxied is not None
        self.trusted = (self.client[0] if self.client else None) in self.proxied.trusted_hosts
        self.admitted = self.guard.admit()
        self._arm(self.settings.header_timeout, "header_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._disarm()
        if self.admitted:
            self.admitted = False
            self.guard.release()
        for c in (self.serving, self.cycle):
            if c is not None and not c.complete:
                c.disconnected = True
                c.wake()
        self.write_paused = False
        self._wake_writer()
        self.parser = None  # the parser holds this protocol: let both go
        self.disconnect.fire()

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # lingering after an answer: discard
        if self.upgraded:
            self._upgrade_body(data)
            return
        in_headers, begun = self.reading == _HEADERS, self.begun
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            # Nothing is upgraded (relaycast serves no WebSocket, no h2c): the request is answered as a plain one,
            # then the connection closed. The parser stops at its headers, so its body is read here.
            self.upgraded = True
            offset = e.args[0] if e.args and isinstance(e.args[0], int) else len(data)
            self._upgrade_body(data[offset:])
            return
        except httptools.HttpParserError:
            if not self.answered:
                self._refuse(errors.InvalidRequest("The request is not valid HTTP/1.1."), "malformed")
            return
        if self.answered or self.raw.is_closing():
            return
        s = self.settings
        timed = self.timer is not None and self.timer_reason != _KEEP_ALIVE  # a deadline runs already
        if self.reading == _HEADERS:
            if in_headers and begun == self.begun:
                # The parser keeps partial headers to itself until they complete: bound them by what arrives.
                self.header_chunks += len(data)
                if self.header_chunks > s.max_header_bytes:
                    self._refuse(
                        errors.HeadersTooLarge(f"Request headers are larger than {s.max_header_bytes} bytes."),
                        "headers_too_large",
                    )
                    return
            if not timed:
                self._arm(s.header_timeout, "header_timeout")
        elif self.reading == _BODY:
            if not timed:
                self._arm(s.body_timeout, "body_timeout")
        elif not timed and self._between_requests():
            # Bytes that begin no request (blank lines): time them as headers.
            self._arm(s.header_timeout, "header_timeout")

    # --- parser callbacks ---------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.answered:
            return
        self.url = b""
        self.headers = []
        self.expect = self.forwarded = False
        self.reading = _HEADERS
        self.begun += 1
        self.header_bytes = self.header_chunks = 0

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        name = name.lower()
        # llhttp keeps trailing white space, which RFC 9110 (5.5) excludes from a field's value.
        value = value.rstrip(b" \t")
        if name == b"expect":
            self.expect = value.lower() == b"100-continue"
        elif self.trusted and name.startswith(b"x-forwarded-"):
            self.forwarded = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.answered:
            return
        self._disarm_deadline()
        self.reading = _BODY
        limit = self.settings.max_header_bytes
        if self.header_bytes > limit:
            self._refuse(errors.HeadersTooLarge(f"Request headers are larger than {limit} bytes."), "headers_too_large")
            return
        if not self.admitted:
            self.admitted = self.guard.admit()
            if not self.admitted:
                self._refuse(
                    errors.OverCapacity("The gateway is serving as many connections as it allows; retry shortly."),
                    "over_capacity",
                )
                return
        parser = self.parser
        url = self.url
        if url[:1] == b"/" and b"#" not in url:  # origin form, as clients send it
            raw_path, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        method_bytes = parser.get_method()
        method = _METHODS.get(method_bytes) or method_bytes.decode("ascii")
        version = parser.get_http_version()
        root = self.root_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": ASGI,
            "http_version": version,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path if root else path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path,
            "query_string": query,
            "headers": self.headers,
            "extensions": self.extensions,
        }
        if self.app_state:
            scope["state"] = self.app_state.copy()
        cycle = Cycle(self, scope, version != "1.0" and parser.should_keep_alive(), self.expect, method == "HEAD")
        if parser.should_upgrade():
            cycle.keep_alive = False
            if not self._upgrade_framing():
                return
        app = self.proxied if self.forwarded else self.app
        previous, self.cycle = self.cycle, cycle
        if previous is None or previous.complete:
            self._start(cycle, app)
        else:  # pipelined behind a request being served: queued, and reading pauses until its turn
            self._pause_reading()
            self.pipeline.append((cycle, app))

    def on_body(self, body: bytes) -> None:
        if self.answered:
            return
        c = self.cycle
        if c is None or c.complete:
            return
        c.parts.append(body)
        c.size += len(body)
        if c.size > HIGH_WATER:
            self._pause_reading()
        c.pending = True
        c.wake()

    def on_message_complete(self) -> None:
        if self.answered or self.body_left:
            return  # a request asking to upgrade: its body is read past the parser (`_upgrade_body`)
        self._disarm_deadline()
        self.reading = _IDLE
        c = self.cycle
        if c is not None and not c.complete:
            c.more_body = False
            c.pending = True
            c.wake()
        if not self.pipeline and self.read_paused:
            # A large body paused reading until the app took it; the request is whole now: read on, so that a
            # client that leaves is seen at once.
            self._resume_reading()

    def _upgrade_framing(self) -> bool:
        """A request asking to upgrade: the parser will not read its body. A content-length body is read by
        `_upgrade_body`; a chunked one is refused (no client sends one with an upgrade)."""
        length = None
        for name, value in self.headers:
            if name == b"transfer-encoding":
                self._refuse(
                    errors.InvalidRequest("A request asking to upgrade may not have a chunked body."), "malformed"
                )
                return False
            if name == b"content-length":
                length = value
        if length is not None:
            if not length.isdigit():  # the parser checks it too; never a negative or odd-looking count here
                self._refuse(errors.InvalidRequest("The request's content-length is not a number."), "malformed")
                return False
            self.body_left = int(length)
        return True

    def _upgrade_body(self, data: bytes) -> None:
        """Bytes after the headers of a request that asked to upgrade: its body, then nothing (discarded)."""
        left = self.body_left
        if not left or not data:
            return
        part = data[:left] if len(data) > left else data
        self.body_left = left = left - len(part)
        self.on_body(part)
        if not left:
            self.on_message_complete()
        elif self.timer is None or self.timer_reason == _KEEP_ALIVE:
            self._arm(self.settings.body_timeout, "body_timeout")

    # --- requests -----------------------------------------------------------------------------------------------

    def _start(self, cycle: Cycle, app: Any) -> None:
        self.serving = cycle
        task = self.loop.create_task(cycle.run(app))
        cycle.task = task
        self.tasks.add(task)

    def response_complete(self) -> None:
        """The serving request's response is written whole: the next pipelined request's turn, or keep-alive."""
        self.server_state.total_requests += 1
        if self.raw.is_closing():
            return
        if self.pipeline:
            cycle, app = self.pipeline.popleft()
            if not self.pipeline:
                self._resume_reading()
            self._start(cycle, app)
            return
        if self.read_paused:
            self._resume_reading()
        self.idle_at = self.loop.time()
        if self.timer is None:
            self._arm(self.settings.keep_alive_timeout, _KEEP_ALIVE)

    def shutdown(self) -> None:
        """The server is stopping: close now when idle, else after the response being written."""
        c = self.cycle
        if c is None or c.complete:
            self.transport.close()
        else:
            c.keep_alive = False

    # --- flow control -------------------------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.raw.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.raw.resume_reading()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter, self.drained = self.drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the client has read enough of what is written (or is gone)."""
        if self.drained is None:
            self.drained = self.loop.create_future()
        await asyncio.shield(self.drained)

    # --- deadlines ----------------------------------------------------------------------------------------------

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._expire)
        self.timer_reason = reason

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _disarm_deadline(self) -> None:
        """Stop the header or body deadline; the keep-alive timer stays (it looks at the connection when it fires)."""
        if self.timer is not None and self.timer_reason != _KEEP_ALIVE:
            self.timer.cancel()
            self.timer = None

    def _between_requests(self) -> bool:
        c = self.cycle
        return c is None or c.complete

    def _expire(self) -> None:
        self.timer = None
        reason = self.timer_reason
        t = self.transport
        if t.is_closing():
            return
        if reason == "linger":
            t.close()
            return
        s = self.settings
        if reason == _KEEP_ALIVE:
            if self.reading != _IDLE or not self._between_requests():
                return  # a request is being served: the keep-alive timer is armed again when it is answered
            left = self.idle_at + s.keep_alive_timeout - self.loop.time()
            if left > 0.001:
                self._arm(left, _KEEP_ALIVE)
            else:
                t.close()
            return
        if self.read_paused:
            # The server stopped reading (a queued pipelined request, or a body the app has not taken yet): the
            # client is not the one who is slow.
            self._arm(s.body_timeout if reason == "body_timeout" else s.header_timeout, reason)
            return
        message = "The request was not received in time."
        c = self.cycle
        if self.reading == _HEADERS and self._between_requests():
            self._refuse(errors.RequestTimeout(message), reason)
        elif self.reading == _BODY and c is not None and not c.started and not self.pipeline:
            # The app is waiting for the body: it sees a disconnect, and its own answer is never written.
            c.disconnected = True
            c.wake()
            self._refuse(errors.RequestTimeout(message), reason)
        else:
            # Nothing begun (an idle new connection), or a response already on the wire: close without a word.
            self.guard.refused[reason] += 1
            self.answered = True
            t.close()

    def _refuse(self, e: errors.RelaycastError, reason: str) -> None:
        """Answer `e`, shut the write side, and discard what the client still sends for a moment, then close."""
        self.guard.refused[reason] += 1
        self.answered = True
        self._disarm()
        t = self.transport
        t.write(answer(e))
        if not t.can_write_eof():
            t.close()
            return
        t.write_eof()
        self._resume_reading()
        self._arm(LINGER_S, "linger")
