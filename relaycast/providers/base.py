"""What every provider adapter offers the executor, and the helpers they share.

An adapter knows one wire format: how to build the upstream request, how to read its response and stream,
and how to classify its errors into the tree in `relaycast.errors`. It knows nothing of routing or telemetry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from relaycast import errors
from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.records import Usage
from relaycast.schema import ChatRequest
from relaycast.sse import Event, EventSplitter


@dataclass(slots=True)
class ChatResult:
    """A finished non-streaming completion, already in OpenAI's format."""

    body: bytes
    usage: Usage | None
    finish_reason: str | None
    output_text: str | None


@dataclass(slots=True)
class StreamState:
    """What the gateway learns from a stream while forwarding it."""

    usage: Usage | None = None
    finish_reason: str | None = None
    first_token_ns: int | None = None  # monotonic time of the first content-bearing event
    text: list[str] = field(default_factory=list)
    done: bool = False  # the stream ended properly ([DONE] or its native equivalent)

    def saw_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.monotonic_ns()


class ChatStream(Protocol):
    """An open upstream stream. Iterating yields bytes ready to send to the client (OpenAI SSE events).

    Iteration raises a `ProviderError` (StreamCut, MalformedResponse, Timeout, or an error event's class)
    when the upstream fails mid-stream. `aclose()` releases the upstream connection at once.
    """

    state: StreamState

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    config: ProviderConfig

    async def chat(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatResult: ...

    async def chat_stream(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatStream: ...

    async def embeddings(self, body: dict[str, Any], model: str) -> tuple[bytes, Usage | None]: ...


# --- shared helpers -----------------------------------------------------------------------------


def connect_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    """aiohttp's part of the timeouts: connecting. The rest is enforced with asyncio.timeout by the caller."""
    return aiohttp.ClientTimeout(total=None, sock_connect=t.connect_s, connect=t.connect_s)


async def read_limited(resp: aiohttp.ClientResponse, limit: int = 4 * 1024 * 1024) -> bytes:
    """Read an upstream body, refusing to buffer more than `limit` bytes."""
    chunks = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise errors.MalformedResponse(f"upstream response larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def connection_error(exc: BaseException, target: str) -> errors.ProviderError:
    """Classify a transport failure. The message names the failure, never the request's headers."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError)):
        return errors.Timeout("upstream timed out", phase="connect", target=target)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return errors.StreamCut("upstream closed the connection mid-response", target=target)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return errors.ConnectionFailed("upstream disconnected", target=target)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return errors.ConnectionFailed(
            f"cannot connect to upstream: {exc.os_error.strerror or exc.os_error}", target=target
        )
    return errors.ConnectionFailed(f"upstream connection failed: {type(exc).__name__}", target=target)


TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def post_upstream(
    session: aiohttp.ClientSession,
    url: str,
    data: bytes,
    headers: dict[str, str],
    t: Timeouts,
    connect: aiohttp.ClientTimeout,
    target: str,
    classify: Callable[[int, bytes, Any], errors.ProviderError],
) -> aiohttp.ClientResponse:
    """POST to an upstream and wait for its answer to start, within the first-token budget. An error answer is
    read (bounded) and classified by the adapter's `classify(status, body, headers)`."""
    try:
        async with asyncio.timeout(t.first_token_s):
            resp = await session.post(url, data=data, headers=headers, timeout=connect)
    except TimeoutError:
        raise errors.Timeout(
            f"no response from upstream within {t.first_token_s:g}s", phase="first_token", target=target
        ) from None
    except TRANSPORT_ERRORS as e:
        raise connection_error(e, target) from None
    if resp.status >= 400:
        try:
            async with asyncio.timeout(t.idle_s):
                raw = await read_limited(resp, 256 * 1024)
        except (TimeoutError, *TRANSPORT_ERRORS, errors.MalformedResponse):
            raw = b""
        finally:
            resp.release()
        raise classify(resp.status, raw, resp.headers)
    return resp


async def upstream_events(resp: aiohttp.ClientResponse, idle_s: float, target: str) -> AsyncIterator[list[Event]]:
    """An upstream's SSE events, one list per network read, as they arrive. Raises Timeout when nothing came for
    `idle_s`, StreamCut when the connection broke, MalformedResponse for an oversized event. Ends with the body."""
    splitter = EventSplitter()
    content = resp.content
    while True:
        try:
            async with asyncio.timeout(idle_s):
                chunk = await content.readany()
        except TimeoutError:
            raise errors.Timeout(
                f"upstream sent nothing for {idle_s:g}s mid-stream", phase="idle", target=target
            ) from None
        except TRANSPORT_ERRORS as e:
            raise errors.StreamCut(f"upstream stream broke: {type(e).__name__}", target=target) from None
        if not chunk:
            return
        try:
            events = splitter.feed(chunk)
        except ValueError as e:
            raise errors.MalformedResponse(str(e), target=target) from None
        if events:
            yield events


async def read_answer(resp: aiohttp.ClientResponse, t: Timeouts, target: str, limit: int) -> bytes:
    """Read a whole upstream answer, each read within the idle budget; then give the connection back."""
    try:
        async with asyncio.timeout(t.idle_s):
            return await read_limited(resp, limit)
    except TimeoutError:
        raise errors.Timeout("upstream stalled while sending its response", phase="idle", target=target) from None
    except TRANSPORT_ERRORS as e:
        raise connection_error(e, target) from None
    finally:
        resp.release()
