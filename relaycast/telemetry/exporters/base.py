"""What every broadcast exporter offers the pipeline.

An exporter knows one destination's wire format: it encodes a record into items (bytes), joins items into one
request body, sends it, and checks its connection. It knows nothing of queues, retries or spools: the pipeline
does those, the same way for every destination.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from relaycast.records import RequestRecord
from relaycast.retry import RETRYABLE_STATUS, is_retryable_status, retry_after_seconds


class ExportError(Exception):
    """An export failed. `retryable` by `relaycast.retry`'s rules: 408, 429, 5xx and connection errors (an
    exporter may narrow the statuses, as OTLP does); other 4xx never will succeed."""

    def __init__(
        self, message: str, *, retryable: bool, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class TestResult:
    ok: bool
    message: str  # said plainly: "ok", "invalid API key", "wrong site", "unreachable", ...
    __test__ = False  # not a pytest test class


class Exporter(Protocol):
    kind: str
    max_batch_bytes: int  # a request body never passes this
    max_age_s: float | None  # records older than this are refused by the destination (discarded, counted)

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        """The record as items for this destination (e.g. one per span)."""
        ...

    async def send(self, items: list[bytes]) -> None:
        """Send one batch. Raises ExportError."""
        ...

    async def test(self) -> TestResult: ...

    async def close(self) -> None: ...


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    what: str,
    retryable: frozenset[int] = RETRYABLE_STATUS,
) -> tuple[int, bytes]:
    """POST for an exporter; raise ExportError classified for the retry rules (`retryable`: the statuses worth
    another try at this endpoint). Returns (status, body)."""
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s), allow_redirects=False
        ) as resp:
            raw = await resp.read()
            if resp.status >= 300:  # a redirect is not followed: it would turn a POST into a GET elsewhere
                raise ExportError(
                    f"{what} answered HTTP {resp.status}",
                    retryable=is_retryable_status(resp.status, retryable),
                    status=resp.status,
                    retry_after=retry_after_seconds(resp.headers),
                )
            return resp.status, raw
    except ExportError:
        raise
    except TimeoutError:
        raise ExportError(f"{what} did not answer within {timeout_s:g}s", retryable=True) from None
    except (aiohttp.ClientError, OSError) as e:
        raise ExportError(f"{what} unreachable: {type(e).__name__}", retryable=True) from None


class RedirectRefused(aiohttp.ClientError):
    """A request would have followed a redirect; `refuse_redirects` stopped it before it left."""


def refuse_redirects() -> aiohttp.TraceConfig:
    """For a client session's `trace_configs`: a request made without `allow_redirects=False` fails with
    `RedirectRefused` instead of following a redirect, which would carry its credential headers (`dd-api-key`,
    `api-key`, ... are kept across origins) and its body to wherever the answer points."""

    async def refuse(
        session: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        params.response.close()
        raise RedirectRefused(f"HTTP {params.response.status} redirect not followed")

    config = aiohttp.TraceConfig()
    config.on_request_redirect.append(refuse)
    return config


class EnvProxies:
    """The proxy the standard HTTP_PROXY / HTTPS_PROXY / NO_PROXY variables choose for an origin, looked up once
    per origin. (aiohttp's own `trust_env=True` looks them up on a worker thread for every request, and reads
    ~/.netrc on another: two thread hops per export request.) At most MAX_ORIGINS remembered: destinations are few,
    a webhook's URL is configuration, never a client's."""

    MAX_ORIGINS = 256

    def __init__(self) -> None:
        self._by_origin: dict[tuple[str, str | None, int | None], tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def __call__(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        key = (url.scheme, url.host, url.port)
        found = self._by_origin.get(key)
        if found is None:
            try:
                found = get_env_proxy_for_url(url)
            except LookupError:  # no proxy for this scheme, or NO_PROXY exempts the host
                found = (None, None)
            if len(self._by_origin) >= self.MAX_ORIGINS:
                self._by_origin.clear()
            self._by_origin[key] = found
        return found


def _proxied_requests(proxies: EnvProxies) -> type[aiohttp.ClientRequest]:
    class ProxiedRequest(aiohttp.ClientRequest):
        """A request given no proxy of its own goes through the one the environment names for its origin."""

        def __init__(
            self,
            method: str,
            url: URL,
            *,
            proxy: URL | None = None,
            proxy_auth: aiohttp.BasicAuth | None = None,
            **kw: Any,
        ) -> None:
            if proxy is None:
                proxy, env_auth = proxies(url)
                proxy_auth = proxy_auth or env_auth
            super().__init__(method, url, proxy=proxy, proxy_auth=proxy_auth, **kw)

    return ProxiedRequest


def http_session() -> aiohttp.ClientSession:
    """The HTTP client exporters and notifiers use: never a provider's pool, redirects refused
    (`refuse_redirects`), and the standard HTTP_PROXY / HTTPS_PROXY / NO_PROXY variables obeyed (`EnvProxies`,
    read once per origin), so a gateway behind an egress proxy reaches Datadog through it."""
    return aiohttp.ClientSession(trace_configs=[refuse_redirects()], request_class=_proxied_requests(EnvProxies()))


def display_url(url: str, with_path: bool = True) -> str:
    """An endpoint safe for messages and logs: never credentials or the query (and, without the path, never a
    path either: webhook paths often hold tokens)."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "(unparseable URL)"
    return f"{u.scheme}://{host}{port}{u.path if with_path else ''}"


def join_json_array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"
