"""One upstream connection (an asyncio protocol with httptools' response parser) and the answer it is reading.

A connection carries one exchange at a time: the request is written whole, the answer's head resolves a future,
and its body is queued as it arrives for `Answer.read`, which inflates gzip and deflate in bounded steps. Reading
pauses while more than `HIGH_WATER` undelivered bytes are queued, so a client that reads slowly holds a fixed amount
per answer, never the upstream's whole answer. Every size an upstream controls is bounded: the head (`MAX_HEAD`
bytes, `MAX_HEADERS` fields), and each decoded step (`STEP`). Failures raise the `ClientError` classes below, which
`providers.http.connection_error` maps onto relaycast's error tree.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from typing import Any, Protocol

import httptools

HIGH_WATER = 128 * 1024  # bytes queued unread before the connection stops reading (until they are read)
STEP = 64 * 1024  # at most this many decoded bytes per read of a compressed body
MAX_HEAD = 64 * 1024  # an answer's status line and headers together
MAX_HEADERS = 256
KEEPALIVE_S = 15.0  # an idle connection older than this is closed rather than used
DRAIN_S = 2.0  # an answer released before its end may finish within this time and keep its connection
DRAIN_BYTES = 64 * 1024  # ... and within this many bytes


class ClientError(Exception):
    """A transport failure of the upstream client."""


class ConnectFailed(ClientError):
    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.strerror or str(os_error) or type(os_error).__name__)
        self.os_error = os_error


class ConnectTimeout(ClientError):
    pass


class Disconnected(ClientError):
    """The connection closed before the answer's head arrived."""


class BadAnswer(ClientError):
    """An answer that cannot be read: a head that does not parse or is too large, an encoding not supported."""


class BodyCut(ClientError):
    """The connection closed in the middle of the answer's body."""


class DecodeFailed(ClientError):
    """A compressed body that does not inflate."""


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for the answer's Content-Encoding; None for identity. Raises BadAnswer otherwise."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)  # zlib-wrapped, as the standard says; raw deflate on failure
    raise BadAnswer(f"content-encoding {encoding[:40]!r} is not supported (gzip and deflate are)")


class Answer:
    """An upstream's answer: `status`, `headers` (lower-case names; repeated fields joined with ", "),
    `content_length` as declared, and the body as it arrives."""

    __slots__ = (
        "status",
        "headers",
        "content_length",
        "keep_alive",
        "_conn",
        "_chunks",
        "_queued",
        "_waiter",
        "_ended",
        "_error",
        "_decoder",
        "_tail",
        "_may_be_raw",
        "_released",
    )

    def __init__(self, conn: Connection, status: int, headers: dict[str, str], keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None and length.isdigit() else None
        self.keep_alive = keep_alive
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._error: ClientError | None = None
        encoding = headers.get("content-encoding", "")
        self._decoder = _decoder(encoding)
        self._tail = b""  # compressed input a bounded step left over
        # A deflate body may come without its zlib wrapper (some servers send it raw): until anything decodes.
        self._may_be_raw = encoding.strip().lower() == "deflate"
        self._released = False

    # --- fed by the connection ----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _end(self, error: ClientError | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    # --- read by the adapter ------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the answer is read on (its connection's)."""
        return self._conn.loop

    def whole(self) -> bytes | None:
        """The whole body if all of it has arrived, uncompressed and whole; None otherwise (read it instead)."""
        if not self._ended or self._error is not None or self._decoder is not None or self._tail:
            return None
        return self._take()

    def _take(self) -> bytes:
        """Everything queued, at once (a reader that fell behind catches up in one step), and reading resumed."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._queued = 0
        self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The next part of the body (decoded), b"" at its end. Raises BodyCut, DecodeFailed, BadAnswer."""
        while True:
            if self._tail:
                out = self._inflate(b"")
                if out:
                    return out
                continue
            if self._chunks:
                data = self._take()
                if self._decoder is None:
                    return data
                out = self._inflate(data)
                if out:
                    return out
                continue
            if self._ended:
                if self._error is not None:
                    raise self._error
                if self._decoder is not None:
                    rest: bytes = self._decoder.flush()
                    self._decoder = None
                    if rest:
                        return rest
                return b""
            waiter = self._waiter = self._conn.loop.create_future()
            await waiter

    def _inflate(self, data: bytes) -> bytes:
        """At most STEP decoded bytes from the compressed input left over plus `data`."""
        d = self._decoder
        pending = self._tail + data if self._tail else data
        try:
            out: bytes = d.decompress(pending, STEP)
        except zlib.error as e:
            if not self._may_be_raw:
                raise DecodeFailed(f"content-encoding: the body does not inflate ({e})") from None
            self._may_be_raw = False
            self._decoder = d = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out = d.decompress(pending, STEP)
            except zlib.error as e2:
                raise DecodeFailed(f"content-encoding: the body does not inflate ({e2})") from None
        self._tail = d.unconsumed_tail
        if d.eof and (d.unused_data or self._chunks):
            # Past the end of the compressed stream nothing is decoded, so nothing would count these bytes.
            raise DecodeFailed("content-encoding: bytes follow the end of the compressed body")
        if out:
            self._may_be_raw = False
        return out

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool when the answer ended whole (or ends soon,
        within `DRAIN_S` and `DRAIN_BYTES`); it is closed otherwise."""
        if not self._released:
            self._released = True
            self._conn.released(self)

    def close(self) -> None:
        """Done with the answer, and its connection closed (an answer not read to its end); once the connection
        went back to the pool (the answer was released, and ended), it is another exchange's and stays open."""
        self._released = True
        if self._conn._answer is self:
            self._conn.close()


class Pool(Protocol):
    def idled(self, conn: Connection) -> None: ...
    def gone(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an upstream, one exchange at a time. Its `pool` hears when it may
    carry another request, and when it closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, origin: tuple[str, int, bool], pool: Pool) -> None:
        self.loop = loop
        self.origin = origin
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = 0.0
        self.keepalive_s = KEEPALIVE_S  # how long it may stay idle: less when the upstream says so
        self._head: asyncio.Future[Answer] | None = None
        self._answer: Answer | None = None
        self._fields: dict[str, str] = {}
        self._head_bytes = 0
        self._informational = False
        self._received = 0  # bytes received in the current exchange
        self._paused = False
        self._drain: asyncio.TimerHandle | None = None
        self._drained = 0

    # --- used by the client -------------------------------------------------------------------

    @property
    def open(self) -> bool:
        t = self.transport
        return t is not None and not t.is_closing()

    def send(self, head: bytes, body: bytes) -> asyncio.Future[Answer]:
        """Write a request; the future resolves with the answer's head."""
        t = self.transport
        assert t is not None and self._head is None and self._answer is None
        self._received = 0
        head_future = self._head = self.loop.create_future()
        if len(body) < 16384:
            t.write(head + body)
        else:
            t.writelines((head, body))
        return head_future

    def close(self) -> None:
        self._fail(Disconnected("the gateway closed the connection"))

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def released(self, answer: Answer) -> None:
        if answer is not self._answer:
            return
        if not answer.keep_alive or answer._error is not None:
            self.close()
        elif answer._ended:
            self._idle()
        else:  # the rest of the answer (a stream's last chunk, say) may follow shortly: wait for it, bounded
            answer._chunks.clear()
            answer._queued = 0
            self.resume()
            self._drained = 0
            self._drain = self.loop.call_later(DRAIN_S, self.close)

    def _idle(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        self._answer = None
        self._head = None
        t = self.transport
        if t is None or t.is_closing():
            return
        if t.get_write_buffer_size():  # answered before its request was all sent (a 413, say): not reusable
            self.close()
            return
        self.resume()
        self.idle_since = self.loop.time()
        self._pool.idled(self)

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._head is None:  # nothing asked: an idle connection has nothing to say
            self.close()
            return
        self._received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            self._fail(cause if isinstance(cause, ClientError) else BadAnswer(f"malformed HTTP: {str(cause)[:200]}"))
            return
        except httptools.HttpParserUpgrade:
            self._fail(BadAnswer("upstream switched protocols (HTTP 101), which a provider answer never does"))
            return
        except httptools.HttpParserError as e:
            self._fail(BadAnswer(f"malformed HTTP: {str(e)[:200]}"))
            return
        head = self._head
        if head is not None and not head.done() and self._received > MAX_HEAD:
            # Still in the head: every byte so far is head (a field the parser is still collecting counts too).
            self._fail(BadAnswer(f"answer's head larger than {MAX_HEAD // 1024} KiB"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._pool.gone(self)
        if self._drain is not None:
            self._drain.cancel()
            self._drain = None
        answer = self._answer
        if (
            exc is None
            and answer is not None
            and not answer._ended
            and answer.content_length is None
            and not _chunked(answer)
        ):
            answer._end()  # a body without a declared length ends when the connection closes cleanly
            return
        head = self._head
        if head is not None and not head.done():
            head.set_exception(Disconnected("upstream closed the connection before answering"))
        if answer is not None:
            answer._end(BodyCut("upstream closed the connection mid-answer"))

    def _fail(self, error: ClientError) -> None:
        """Fail what waits on this connection with `error`, and close it (connection_lost follows)."""
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        if self._answer is not None:
            self._answer._end(error)
        t = self.transport
        self.transport = None
        if t is not None:
            t.close()

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head is None or self._answer is not None:
            raise BadAnswer("upstream sent an answer nobody asked for")
        self._fields = {}
        self._head_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        fields = self._fields
        if self._head_bytes > MAX_HEAD or len(fields) >= MAX_HEADERS:
            raise BadAnswer(f"answer's head larger than {MAX_HEAD // 1024} KiB or {MAX_HEADERS} fields")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        fields[key] = f"{fields[key]}, {text}" if key in fields else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue and the like: the answer follows
            self._informational = True
            return
        self._informational = False
        head = self._head
        fields = self._fields
        answer = self._answer = Answer(self, status, fields, self.parser.should_keep_alive())
        if "keep-alive" in fields:  # `Keep-Alive: timeout=5`: the upstream closes idle connections after 5 s
            self.keepalive_s = _keepalive_s(fields["keep-alive"])
        if head is not None and not head.done():
            head.set_result(answer)

    def on_body(self, body: bytes) -> None:
        answer = self._answer
        if answer is None:
            return
        if answer._released:  # draining after a release: kept only to find the end
            self._drained += len(body)
            if self._drained > DRAIN_BYTES:
                raise BadAnswer("answer went on after it was released")
            return
        answer._feed(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        answer = self._answer
        if answer is None:
            return
        answer._end()
        if answer._released:  # drained to its end after a release (only a kept-alive answer is drained)
            self._idle()


def _keepalive_s(value: str) -> float:
    """How long to keep a connection idle, given the upstream's Keep-Alive header: a second less than it says (so
    the upstream never closes one just as a request goes out), at most KEEPALIVE_S."""
    for part in value.split(","):
        name, _, n = part.strip().partition("=")
        if name.strip().lower() == "timeout" and n.strip().isdigit():
            return min(KEEPALIVE_S, max(0.0, int(n.strip()) - 1.0))
    return KEEPALIVE_S


def _chunked(answer: Answer) -> bool:
    return "chunked" in answer.headers.get("transfer-encoding", "").lower()
