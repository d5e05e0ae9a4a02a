"""The HTTP the provider adapters share: posting upstream within the timeouts, reading bounded answers and SSE
events, and classifying transport failures into the tree in `relaycast.errors`.

aiohttp enforces only the connect timeout (`connect_timeout`); the first-token and idle budgets are enforced
here with `asyncio.timeout`, so each phase fails with its own `Timeout(phase=...)`. Redirects are never followed:
a 3xx answer is a `MalformedResponse` naming where it pointed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from relaycast import errors
from relaycast.providers.settings import Timeouts
from relaycast.sse import Event, EventSplitter


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
            # Never follow a redirect: it would carry the provider key headers and the prompt to another place.
            resp = await session.post(url, data=data, headers=headers, timeout=connect, allow_redirects=False)
    except TimeoutError:
        raise errors.Timeout(
            f"no response from upstream within {t.first_token_s:g}s", phase="first_token", target=target
        ) from None
    except TRANSPORT_ERRORS as e:
        raise connection_error(e, target) from None
    if 300 <= resp.status < 400:
        location = resp.headers.get("location")
        resp.release()
        raise redirect_refused(resp.status, location, target)
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


async def upstream_events(
    resp: aiohttp.ClientResponse, idle_s: float, target: str
) -> AsyncGenerator[list[Event], None]:
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
