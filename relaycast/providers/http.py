"""The HTTP the provider adapters share: posting upstream within the timeouts, reading bounded answers and SSE
events, and classifying transport failures into the tree in `relaycast.errors`.

The client (`providers.client.UpstreamClient`) enforces only the connect timeout; the first-token and idle budgets
are enforced here (with `relaycast.deadlines`, and one idle timer per stream in `UpstreamEvents`), so each phase
fails with its own `Timeout(phase=...)`. Redirects are never followed: a 3xx answer is an `UpstreamRedirect`
naming where it pointed.

Answers read whole (non-streaming chat, embeddings, error bodies) are bounded twice: each by its provider's cap,
and all of them together by the process's `UpstreamBuffer`. The bytes counted are the decompressed ones (the client
inflates gzip and deflate in bounded steps as they are read), so a compression bomb stops at the cap too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from relaycast import errors
from relaycast.deadlines import Deadlines
from relaycast.providers.client import UpstreamClient
from relaycast.providers.exchange import (
    Answer,
    BadAnswer,
    BodyCut,
    ClientError,
    ConnectFailed,
    ConnectTimeout,
    DecodeFailed,
    Disconnected,
)
from relaycast.providers.settings import DEFAULT_UPSTREAM_BUFFER, MIB, Timeouts
from relaycast.sse import Event, EventSplitter

ERROR_BODY_BYTES = 256 * 1024  # an error answer, or a JSON answer to a stream request: only its message is read


# --- bounded answers ------------------------------------------------------------------------------


class UpstreamBuffer:
    """The bytes of upstream answers one process may hold while it reads them, across every request: each read
    takes room as its body grows and gives it all back when it ends, however it ends. One per process, shared by
    every adapter (`build_providers`)."""

    def __init__(self, limit: int = DEFAULT_UPSTREAM_BUFFER) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0
        self.refused = 0  # answers not read for want of room

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            self.refused += 1
            return False
        self.held += n
        self.peak = max(self.peak, self.held)
        return True

    def release(self, n: int) -> None:
        self.held -= n

    def full(self, needed: int, target: str) -> errors.UpstreamBufferFull:
        if needed > self.limit:
            why = f"it needs more than the whole buffer for upstream answers ({_size(self.limit)})"
        else:
            why = f"the gateway already holds {_size(self.held)} of its {_size(self.limit)} for upstream answers"
        return errors.UpstreamBufferFull(
            f"upstream answer not read: {why} (server.max_upstream_buffer_bytes); try again shortly", target=target
        )


async def _read_into(resp: Answer, limit: int, buffer: UpstreamBuffer, what: str, target: str) -> tuple[bytearray, int]:
    """The body in one bytearray (preallocated when its length is declared, else grown), and the bytes it took
    from `buffer`. Refuses a declared length above `limit` before reading, and stops at `limit` otherwise."""
    # A compressed body's declared length is not what it holds: such a body grows as it is inflated.
    declared = resp.content_length if resp.headers.get("content-encoding", "identity") == "identity" else None
    if declared is not None and declared > limit:
        raise _too_large(limit, what, target, declared)
    taken = size = 0
    buf = bytearray()
    try:
        if declared:
            if not buffer.take(declared):
                raise buffer.full(declared, target)
            taken = declared
            buf = bytearray(declared)
        while chunk := await resp.read():
            end = size + len(chunk)
            if end > limit:
                raise _too_large(limit, what, target)
            if end > taken and not buffer.take(end - taken):
                raise buffer.full(end, target)
            taken = max(taken, end)
            buf[size:end] = chunk  # in place when preallocated; appends (amortised growth) otherwise
            size = end
            grown = buf.__alloc__() - taken  # growing allocates up to an eighth more than it holds: counted too
            if grown > 0:
                if not buffer.take(grown):
                    raise buffer.full(taken + grown, target)
                taken += grown
        del buf[size:]
    except BaseException:
        buf.clear()  # now: the exception's traceback keeps this frame (and its locals) as long as the error lives
        buffer.release(taken)
        raise
    return buf, taken


async def read_limited(resp: Answer, limit: int, buffer: UpstreamBuffer) -> bytes:
    """A small upstream body (an error answer), refusing more than `limit` bytes."""
    buf, taken = await _read_into(resp, limit, buffer, "", "")
    try:
        return bytes(buf)
    finally:
        buffer.release(taken)


def _arrived(resp: Answer, limit: int, buffer: UpstreamBuffer, what: str, target: str) -> bytes | None:
    """The whole answer if all of it has arrived already (a small answer comes in the same reads as its head):
    taken at once, with no wait and no timer, within the same limits as `_read_into`. None otherwise (and for a
    compressed answer, inflated as it is read: `_read_into` counts what it grows to)."""
    data = resp.whole()
    if data is None:
        return None
    size = len(data)
    if size > limit:
        raise _too_large(limit, what, target, resp.content_length)
    if not buffer.take(size):
        raise buffer.full(size, target)
    buffer.release(size)  # held by the caller from here, as the copy `read_answer` returns otherwise
    return data


async def read_answer(
    resp: Answer,
    t: Timeouts,
    target: str,
    limit: int,
    buffer: UpstreamBuffer,
    what: str,
    deadlines: Deadlines,
) -> bytes:
    """Read a whole upstream answer within the idle budget, at most `limit` bytes (`what` names the setting);
    then give the connection back."""
    try:
        whole = _arrived(resp, limit, buffer, what, target)
    except BaseException:
        resp.close()
        raise
    if whole is not None:
        resp.release()
        return whole
    ok = False
    try:
        with deadlines.after(t.idle_s):
            buf, taken = await _read_into(resp, limit, buffer, what, target)
        ok = True
    except TimeoutError:
        raise errors.Timeout("upstream stalled while sending its response", phase="idle", target=target) from None
    except TRANSPORT_ERRORS as e:
        raise connection_error(e, target) from None
    finally:
        resp.release() if ok else resp.close()  # an answer not read to its end must not go back to the pool
    try:
        # The one copy (bytes are what the client is sent): synchronous, so at most one answer in the whole
        # process exists twice at any moment.
        return bytes(buf)
    finally:
        buf.clear()
        buffer.release(taken)


def _too_large(limit: int, what: str, target: str, declared: int | None = None) -> errors.ResponseTooLarge:
    said = f" (it declared {_size(declared)})" if declared is not None else ""
    setting = f" ({what})" if what else ""
    return errors.ResponseTooLarge(
        f"upstream answer larger than {_size(limit)}{setting}{said}; not read further", target=target
    )


def _size(n: int) -> str:
    if n < MIB:
        return f"{n} bytes"
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n / MIB:.1f} MiB"


def connection_error(exc: BaseException, target: str) -> errors.ProviderError:
    """Classify a transport failure. The message names the failure, never the request's headers."""
    if isinstance(exc, ConnectTimeout):
        return errors.Timeout(f"cannot connect to upstream: {exc}", phase="connect", target=target)
    if isinstance(exc, ConnectFailed):
        return errors.ConnectionFailed(f"cannot connect to upstream: {str(exc)[:200]}", target=target)
    if isinstance(exc, DecodeFailed):
        return errors.MalformedResponse(f"upstream answer cannot be decoded: {str(exc)[:200]}", target=target)
    if isinstance(exc, BadAnswer):  # a head that does not parse or passes the limits, an encoding not supported
        return errors.MalformedResponse(f"upstream answer cannot be read: {str(exc)[:200]}", target=target)
    if isinstance(exc, BodyCut):
        return errors.StreamCut("upstream closed the connection mid-response", target=target)
    if isinstance(exc, Disconnected):
        return errors.ConnectionFailed("upstream disconnected", target=target)
    return errors.ConnectionFailed(f"upstream connection failed: {type(exc).__name__}", target=target)


TRANSPORT_ERRORS = (ClientError, OSError)


def redirect_refused(status: int, location: str | None, target: str) -> errors.ProviderError:
    """An upstream answered a redirect. It is not followed (the request holds the provider key and the prompt):
    the attempt fails over, and the message says where the upstream pointed, without its query."""
    where = ""
    if location:
        try:
            u = urlsplit(location)
            port = f":{u.port}" if u.port else ""
            where = f" to {u.scheme}://{u.hostname}{port}{u.path}" if u.hostname else f" to {u.path}"
        except ValueError:
            where = ""
    return errors.UpstreamRedirect(
        f"upstream answered HTTP {status}, a redirect{where[:200]}; redirects are not followed, since they would "
        "carry the provider key and the prompt elsewhere: set the provider's base_url to the final URL",
        target=target,
        upstream_status=status,
    )


async def post_upstream(
    client: UpstreamClient,
    url: str,
    data: bytes,
    headers: dict[str, str],
    t: Timeouts,
    target: str,
    classify: Callable[[int, bytes, Any], errors.ProviderError],
    buffer: UpstreamBuffer,
    deadlines: Deadlines,
) -> Answer:
    """POST to an upstream and wait for its answer to start, within the first-token budget. An error answer is
    read (bounded) and classified by the adapter's `classify(status, body, headers)`."""
    try:
        with deadlines.after(t.first_token_s):
            # Never follows a redirect: it would carry the provider key headers and the prompt to another place.
            resp = await client.post(url, data, headers, t.connect_s)
    except TimeoutError:
        raise errors.Timeout(
            f"no response from upstream within {t.first_token_s:g}s", phase="first_token", target=target
        ) from None
    except TRANSPORT_ERRORS as e:
        raise connection_error(e, target) from None
    except ValueError as e:  # a header HTTP cannot carry (configured ones are refused when loaded): fixed text
        raise errors.ConnectionFailed(f"request not sent: {e}", target=target) from None
    if 300 <= resp.status < 400:
        location = resp.headers.get("location")
        resp.release()
        raise redirect_refused(resp.status, location, target)
    if resp.status >= 400:
        try:
            async with asyncio.timeout(t.idle_s):
                raw = await read_limited(resp, ERROR_BODY_BYTES, buffer)
        except (TimeoutError, *TRANSPORT_ERRORS, errors.ProviderError):
            raw = b""
        finally:
            resp.release()  # closes the connection instead when the body was not read to its end
        raise classify(resp.status, raw, resp.headers)
    return resp


class UpstreamEvents:
    """An upstream's SSE events, one list per network read, as they arrive (`next()`). Raises Timeout when a read
    waited `idle_s`, StreamCut when the connection broke, MalformedResponse for an oversized event. Ends with the
    body. `splitter.whole` tells about the read the last list came from. `close()` when done (in a `finally`): it
    stops the idle timer.

    The idle bound takes one timer per stream instead of one per read. A read notes when its wait began, and sets
    the timer if none is set; the timer, when it fires, finds a wait older than `idle_s` (and cancels the reading
    task, which `next` turns into Timeout, as `asyncio.timeout` does), or sets itself again for when the current
    wait would become too old, or (between reads) lets the next read set it. So a timer is made about once per
    `idle_s` of a stream's life, not once per read, and time spent between reads (the client taking the bytes) is
    never counted. The task may change from read to read (a hedged stream is opened by one task and relayed by
    another): the one waiting is the one cancelled.

    An object rather than an async generator, with the idle bound in the same call: one coroutine per read."""

    __slots__ = ("_resp", "_loop", "_idle_s", "_target", "splitter", "_handle", "_since", "_task", "_fired")

    def __init__(self, resp: Answer, idle_s: float, target: str) -> None:
        self._resp = resp
        self._loop = resp.loop  # the answer's: on Python 3.11 `asyncio.get_running_loop()` is a getpid() system call
        self._idle_s = idle_s
        self._target = target
        self.splitter = EventSplitter()
        self._handle: asyncio.TimerHandle | None = None
        self._since = -1.0  # loop time the current wait began; below 0 between reads
        self._task: asyncio.Task[Any] | None = None
        self._fired = False

    async def next(self) -> list[Event] | None:
        """The events of the next read that brought any; None at the end of the body."""
        loop = self._loop
        while True:
            task = asyncio.current_task(loop)
            assert task is not None
            self._task = task
            cancelling = task.cancelling()
            self._since = loop.time()
            if self._handle is None:
                self._handle = loop.call_at(self._since + self._idle_s, self._check)
            try:
                chunk = await self._resp.read()
            except asyncio.CancelledError:
                if self._fired and task.uncancel() <= cancelling:
                    raise self._idle_error() from None
                raise
            except TimeoutError:
                raise self._idle_error() from None
            except (BadAnswer, DecodeFailed) as e:  # a stream that does not decode is malformed, not cut
                raise connection_error(e, self._target) from None
            except TRANSPORT_ERRORS as e:
                raise errors.StreamCut(f"upstream stream broke: {type(e).__name__}", target=self._target) from None
            finally:
                self._since = -1.0
                self._fired = False
            if not chunk:
                return None
            try:
                events = self.splitter.feed(chunk)
            except ValueError as e:
                raise errors.MalformedResponse(str(e), target=self._target) from None
            if events:
                return events

    def _idle_error(self) -> errors.Timeout:
        return errors.Timeout(
            f"upstream sent nothing for {self._idle_s:g}s mid-stream", phase="idle", target=self._target
        )

    def _check(self) -> None:
        self._handle = None
        if self._since < 0:
            return  # between reads: the next read sets the timer again
        due = self._since + self._idle_s
        if due > self._loop.time():
            self._handle = self._loop.call_at(due, self._check)
            return
        self._fired = True
        assert self._task is not None
        self._task.cancel()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
