"""Small pure-ASGI helpers shared by the gateway and the fake upstream."""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = (b"content-type", b"application/json")
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


ID_BATCH = 256  # request ids drawn per system call


class RequestIds:
    """The gateway's request ids: `req_`, the time in milliseconds (12 hex digits), then 24 hex digits of 96 random
    bits from `os.urandom` (as `secrets.token_hex(12)` makes them).

    The time first makes ids sort by when they were made, so the store's index on them grows at its end, as its
    index on time does: with random ids every stored request dirtied a page somewhere in that index, and writing
    a batch cost more as the store grew (SQLite, batches of 1,000: 39 µs of SQL per request at 100,000 stored,
    54 µs at 500,000; with ids in time order, 32 µs at both). The random part keeps them unique across processes,
    workers, replicas and restarts, and as hard to guess as before. It is drawn ID_BATCH ids at a time: one
    `getrandom` call per 256 requests instead of one per request, which in a loaded server costs several
    microseconds of CPU. One per process: a child forked after some were drawn starts from a fresh batch of its
    own."""

    __slots__ = ("_hex", "_at", "_ms", "_head", "__weakref__")

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0
        self._ms = -1
        self._head = ""  # "req_" and the time, made once per millisecond
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _drop_batch(ref))

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex = os.urandom(12 * ID_BATCH).hex()
            at = 0
        self._at = at + 24
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            self._ms, self._head = ms, f"req_{ms:012x}"
        return self._head + self._hex[at : at + 24]


def _drop_batch(ref: weakref.ref[RequestIds]) -> None:
    ids = ref()
    if ids is not None:
        ids._hex, ids._at = "", 0


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body, or BodyTooLarge once it passes `limit` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ClientGone()
        chunk = msg.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            parts.append(chunk)
        if not msg.get("more_body", False):
            break
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def is_json(content_type: bytes | None) -> bool:
    """The media type is exactly application/json (parameters such as `charset=utf-8` allowed)."""
    if content_type is None:
        return False
    return content_type.split(b";", 1)[0].strip().lower() == b"application/json"


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name (ASGI servers already lower-case them)."""
    return dict(scope["headers"])


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Headers, content_type: tuple[bytes, bytes] = JSON
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [content_type, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def wait_disconnect(receive: Receive) -> None:
    """Returns when the client has gone. Call only after the request body was read."""
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return


DISCONNECT = "relaycast.disconnect"  # the scope's extension a guarded server puts a `Disconnect` under


class Disconnect:
    """A connection's end, told by the server the moment it happens (`relaycast.server.guards` puts one in the
    scope's `extensions`, one per connection): the requests being served on it learn at once, with no task each
    waiting on `receive()` for `http.disconnect`."""

    __slots__ = ("loop", "gone", "_watchers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # the connection's: looked up once, not per request (a getpid() call on Python 3.11)
        self.gone = False
        self._watchers: set[Callable[[], None]] = set()

    def watch(self, callback: Callable[[], None]) -> None:
        self._watchers.add(callback)

    def unwatch(self, callback: Callable[[], None]) -> None:
        self._watchers.discard(callback)

    def fire(self) -> None:
        """The client has gone: call every watcher once."""
        if self.gone:
            return
        self.gone = True
        watchers, self._watchers = self._watchers, set()
        for callback in watchers:
            callback()


async def run_until_disconnect(receive: Receive, work: Coroutine[Any, Any, Any], scope: Scope | None = None) -> Any:
    """Await `work` in this task; if the client disconnects first, cancel it at once and raise ClientGone.

    `work` runs inline (no second task). Under a guarded server (its `Disconnect` in `scope`) the connection's end
    cancels this task directly; under any other ASGI server one watcher task per request waits for
    `http.disconnect` (several microseconds more per request).
    """
    extensions = scope.get("extensions") if scope is not None else None
    disconnect: Disconnect | None = extensions.get(DISCONNECT) if extensions else None
    if disconnect is not None and disconnect.gone:
        work.close()
        raise ClientGone()
    # The loop looked up once (on Python 3.11 each lookup is a getpid() system call), or never: the connection's.
    loop = disconnect.loop if disconnect is not None else asyncio.get_running_loop()
    me = asyncio.current_task(loop)
    assert me is not None
    gone = False

    def cancel() -> None:
        nonlocal gone
        gone = True
        me.cancel()

    stop: Callable[[], Any]
    if disconnect is not None:
        disconnect.watch(cancel)
        stop = partial(disconnect.unwatch, cancel)
    else:
        stop = loop.create_task(_watch(receive, cancel)).cancel
    try:
        return await work
    except asyncio.CancelledError:
        if gone and me.uncancel() == 0:
            raise ClientGone() from None
        raise
    finally:
        stop()


async def _watch(receive: Receive, gone: Callable[[], None]) -> None:
    await wait_disconnect(receive)
    gone()


class Request:
    """One HTTP request as the gateway's handlers see it: the ASGI triple, the headers as a map (lower-case
    names), the request id (the gateway's own: it keys the record), the client's `x-request-id` if it sent one,
    and the response headers every answer carries: `x-request-id` (the client's, echoed, else the gateway's)
    and `x-relaycast-request-id` (the gateway's). `recorded` is set once the request's record was emitted: the
    gateway emits exactly one per API request, wherever it ends."""

    __slots__ = (
        "scope",
        "receive",
        "send",
        "headers",
        "id",
        "client_id",
        "id_headers",
        "method",
        "path",
        "recorded",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[bytes, bytes],
        request_id: str,
        client_id: str | None = None,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = headers
        self.id = request_id
        self.client_id = client_id
        own = request_id.encode()
        self.id_headers: Headers = [
            (b"x-request-id", client_id.encode() if client_id else own),
            (b"x-relaycast-request-id", own),
        ]
        self.method: str = scope["method"]
        path: str = scope["path"]
        self.path = path[:-1] if len(path) > 1 and path.endswith("/") else path
        self.recorded = False

    def query(self) -> dict[str, str]:
        """The query string's `name=value` pairs (the last of a repeated name wins)."""
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return dict(p.split("=", 1) for p in raw.split("&") if "=" in p)
