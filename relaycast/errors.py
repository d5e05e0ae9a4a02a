"""The error tree. Every failure the gateway reports is one of these classes.

HTTP is the status the client gets; `code` is the `error_class` (the OpenAI error body's `code`, and the
`x-relaycast-error-class` header); `retry`: the same target may succeed if asked again (`retryable`);
`failover`: the next target may succeed (`fails_over`).

    class                            HTTP code                    retry  failover
    RelaycastError                   500  internal                no     no   (an unexpected failure)
    ├── GatewayError                      (the client's request, or the gateway itself)
    │   ├── InvalidRequest           400  invalid_request         no     no
    │   ├── NotSupported             400  not_supported           no     yes  (the next target may do it)
    │   ├── Unauthorized             401  unauthorized            no     no   (with WWW-Authenticate)
    │   ├── Forbidden                403  forbidden               no     no
    │   ├── NotFoundRoute            404  not_found               no     no
    │   ├── ModelNotFound            404  model_not_found         no     no
    │   ├── MethodNotAllowed         405  method_not_allowed      no     no
    │   ├── RequestTimeout           408  request_timeout         no     no   (headers or body not read in time)
    │   ├── PayloadTooLarge          413  payload_too_large       no     no
    │   ├── UnsupportedMediaType     415  unsupported_media_type  no     no
    │   ├── LimitExceeded            429  rate_limit_exceeded     no     no   (type requests; Retry-After)
    │   │   ├── TokenLimitExceeded   429  rate_limit_exceeded     no     no   (type tokens)
    │   │   │   └── RequestTooLarge  429  rate_limit_exceeded     no     no   (one request above tpm; no Retry-After)
    │   │   └── BudgetExceeded       429  budget_exceeded         no     no   (type insufficient_quota)
    │   ├── HeadersTooLarge          431  headers_too_large       no     no
    │   ├── NoRoute                  503  no_route                no     no   (every target excluded or circuit-open)
    │   ├── StoreNotReady            503  store_unavailable       no     no
    │   ├── NotReady                 503  not_ready               no     no   (starting or stopping)
    │   ├── LimiterUnavailable       503  limiter_unavailable     no     no   (Redis or the host's limits unreachable)
    │   ├── TelemetryUnavailable     503  telemetry_unavailable   no     no   (a host process away; Retry-After: 1)
    │   └── OverCapacity             503  over_capacity           no     no   (a connection above server.max_connections)
    ├── ProviderError                     (an upstream attempt failed; classified once, in the adapter)
    │   ├── Timeout                  504  timeout                 yes    yes  (phase: connect|first_token|idle|total)
    │   ├── RateLimited              429  rate_limit              yes    yes  (retry_after; quota=True when billing)
    │   │   └── Overloaded           503  rate_limit              yes    yes  (Anthropic 529)
    │   ├── ContentPolicy            400  content_policy          no     no
    │   ├── ContextLength            400  context_length          no     no
    │   ├── UpstreamAuth             502  auth                    no     no   (our provider key is wrong, not theirs)
    │   ├── UpstreamBadRequest       400  bad_request             no     no
    │   ├── UpstreamNotFound         404  not_found               no     no
    │   ├── Upstream5xx              502  upstream_5xx            yes    yes
    │   ├── ConnectionFailed         502  connection              yes    yes
    │   ├── StreamCut                502  stream_cut              yes    yes
    │   ├── MalformedResponse        502  malformed               yes    yes
    │   ├── ResponseTooLarge         502  response_too_large      no     yes  (an answer above the provider's cap)
    │   ├── UpstreamBufferFull       503  upstream_buffer_full    no     no   (the process's answer buffer is full)
    │   └── UpstreamRedirect         502  redirect                no     yes  (a 3xx: not followed, it holds the key)
    ├── AllAttemptsFailed                 (every target of a plan failed)
    └── RemoteError                       (the telemetry process's answer to a worker, made again there)

A stream fails over only before its first token reaches the client. `AllAttemptsFailed` keeps every attempt's
error for the trace and renders as the most telling one (the first that does not fail over, else the last): its
status, code and headers are that error's.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import orjson


class RelaycastError(Exception):
    status_code: ClassVar[int] = 500
    error_class: ClassVar[str] = "internal"
    openai_type: ClassVar[str] = "server_error"
    retryable: ClassVar[bool] = False  # the same target may succeed if asked again (with backoff)
    fails_over: ClassVar[bool] = False  # another target may succeed: try the next one
    # The client's hint (`x-should-retry`): whether asking the gateway again may succeed. The SDKs retry 408, 409,
    # 429 and 5xx by themselves; this stops them where a retry cannot help (our provider key is wrong, a budget is
    # spent, no configured target fits the request) so their retries do not multiply upstream calls.
    client_retry: bool = False

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """OpenAI's error format. `code` carries the relaycast error class."""
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.error_class,
            }
        }

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-relaycast-error-class", self.error_class.encode()),
            (b"x-should-retry", b"true" if self.client_retry else b"false"),
        ]


# --- the gateway's own errors -------------------------------------------------------------------


class GatewayError(RelaycastError):
    pass


class InvalidRequest(GatewayError):
    status_code = 400
    error_class = "invalid_request"
    openai_type = "invalid_request_error"


class NotSupported(GatewayError):
    """The target cannot do what was asked (embeddings on Anthropic, n > 1, ...); another target may."""

    status_code = 400
    error_class = "not_supported"
    openai_type = "invalid_request_error"
    fails_over = True


class Unauthorized(GatewayError):
    status_code = 401
    error_class = "unauthorized"
    openai_type = "authentication_error"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return super().headers() + [(b"www-authenticate", b'Bearer realm="relaycast"')]


class Forbidden(GatewayError):
    status_code = 403
    error_class = "forbidden"
    openai_type = "permission_error"


class NoRoute(GatewayError):
    """Every target of the route is excluded: open circuits (`transient`: a client may retry later), or the
    request's provider preferences (asking again cannot help)."""

    status_code = 503
    error_class = "no_route"
    openai_type = "server_error"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.client_retry = transient


class NotFoundRoute(GatewayError):
    status_code = 404
    error_class = "not_found"
    openai_type = "invalid_request_error"


class ModelNotFound(GatewayError):
    status_code = 404
    error_class = "model_not_found"
    openai_type = "invalid_request_error"


class MethodNotAllowed(GatewayError):
    status_code = 405
    error_class = "method_not_allowed"
    openai_type = "invalid_request_error"


class StoreNotReady(GatewayError):
    """The analytics store is disabled (`disabled`: asking again cannot help) or its database cannot be reached."""

    status_code = 503
    error_class = "store_unavailable"
    client_retry = True

    def __init__(self, message: str, *, disabled: bool = False) -> None:
        super().__init__(message)
        self.client_retry = not disabled

    openai_type = "server_error"


class RemoteError(RelaycastError):
    """What the host's telemetry process answered a worker instead of a result: `detail` is [kind, message, ...]
    (`limit`, `too_large` or `error`)."""

    def __init__(self, detail: object) -> None:
        super().__init__(detail[1] if isinstance(detail, list) and len(detail) > 1 else str(detail))
        self.detail = detail


class TelemetryUnavailable(GatewayError):
    """The host's telemetry process, or its state process, did not answer (it is restarting, or too busy): what an
    admin view or `/metrics` asked of it, or a stored response, cannot be served now."""

    status_code = 503
    error_class = "telemetry_unavailable"
    client_retry = True
    openai_type = "server_error"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"retry-after", b"1")]


class NotReady(GatewayError):
    """The gateway is starting or stopping: its parts are not there to serve the request."""

    status_code = 503
    error_class = "not_ready"
    client_retry = True
    openai_type = "server_error"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_class = "payload_too_large"
    openai_type = "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    error_class = "unsupported_media_type"
    openai_type = "invalid_request_error"


# --- the gateway's own limits (virtual keys, users, features) -----------------------------------


class LimitExceeded(GatewayError):
    """A limit refused the request: 429 in OpenAI's format, naming the limit; Retry-After says when it frees up.

    `LimitExceeded(message, limit=..., retry_after_s=...)` makes the class the limit names: `tpm` a
    `TokenLimitExceeded`, `budget_day` and `budget_month` a `BudgetExceeded`, anything else (`rpm`) a
    `LimitExceeded`.
    """

    status_code = 429
    error_class = "rate_limit_exceeded"
    client_retry = True
    openai_type = "requests"

    def __new__(cls, message: str, *, limit: str, retry_after_s: float) -> LimitExceeded:
        made: type[LimitExceeded] = cls
        if cls is LimitExceeded:
            if limit == "tpm":
                made = TokenLimitExceeded
            elif limit.startswith("budget"):
                made = BudgetExceeded
        return super().__new__(made, message)

    def __init__(self, message: str, *, limit: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.retry_after_s = max(1, math.ceil(retry_after_s))

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"retry-after", str(self.retry_after_s).encode())]


class TokenLimitExceeded(LimitExceeded):
    """The tokens-per-minute limit."""

    openai_type = "tokens"


class RequestTooLarge(TokenLimitExceeded):
    """One request's token estimate alone is above a tokens-per-minute limit: retrying cannot help, so there is
    no Retry-After (as OpenAI's "Request too large" 429)."""

    def __new__(cls, message: str) -> RequestTooLarge:
        return Exception.__new__(cls, message)

    def __init__(self, message: str) -> None:
        super().__init__(message, limit="tpm", retry_after_s=0)
        self.client_retry = False

    def headers(self) -> list[tuple[bytes, bytes]]:
        return GatewayError.headers(self)


class BudgetExceeded(LimitExceeded):
    """A daily or monthly spending budget; Retry-After is the end of its UTC period."""

    error_class = "budget_exceeded"
    openai_type = "insufficient_quota"
    client_retry = False


class RequestTimeout(GatewayError):
    """A connection did not send its request headers or body within the server's read deadlines."""

    status_code = 408
    error_class = "request_timeout"
    client_retry = True
    openai_type = "invalid_request_error"


class HeadersTooLarge(GatewayError):
    status_code = 431
    error_class = "headers_too_large"
    openai_type = "invalid_request_error"


class OverCapacity(GatewayError):
    """A connection above `server.max_connections`."""

    status_code = 503
    error_class = "over_capacity"
    client_retry = True
    openai_type = "server_error"


class LimiterUnavailable(GatewayError):
    """The limits cannot be checked (Redis is unreachable) and the gateway is set to fail closed."""

    status_code = 503
    error_class = "limiter_unavailable"
    client_retry = True
    openai_type = "server_error"


# --- upstream errors, classified in the provider adapter -----------------------------------------


class ProviderError(RelaycastError):
    """One upstream attempt failed. `target` is "provider/model"; `upstream_status` is the HTTP status seen."""

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        upstream_status: int | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.target = target
        self.upstream_status = upstream_status

    def body(self) -> dict[str, Any]:
        body = super().body()
        if self.target:
            body["error"]["message"] = f"{self.message} (target {self.target})"
        return body


class Timeout(ProviderError):
    status_code = 504
    error_class = "timeout"
    client_retry = True
    openai_type = "timeout_error"
    retryable = True
    fails_over = True

    def __init__(self, message: str, *, phase: str = "total", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.phase = phase


class RateLimited(ProviderError):
    """The upstream said 429. Try another target now, or this one after `retry_after` seconds."""

    status_code = 429
    error_class = "rate_limit"
    client_retry = True
    openai_type = "rate_limit_error"
    retryable = True
    fails_over = True

    def __init__(self, message: str, *, retry_after: float | None = None, quota: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.quota = quota
        self.client_retry = not quota  # an exhausted quota or billing limit is not lifted by asking again

    def headers(self) -> list[tuple[bytes, bytes]]:
        h = super().headers()
        if self.retry_after is not None:
            h.append((b"retry-after", str(max(1, int(self.retry_after + 0.999))).encode()))
        return h


class Overloaded(RateLimited):
    """Anthropic's 529 overloaded_error: a capacity limit on their side, handled like a rate limit."""

    status_code = 503


class ContentPolicy(ProviderError):
    status_code = 400
    error_class = "content_policy"
    openai_type = "invalid_request_error"


class ContextLength(ProviderError):
    status_code = 400
    error_class = "context_length"
    openai_type = "invalid_request_error"


class UpstreamAuth(ProviderError):
    status_code = 502
    error_class = "auth"
    openai_type = "server_error"


class UpstreamBadRequest(ProviderError):
    status_code = 400
    error_class = "bad_request"
    openai_type = "invalid_request_error"


class UpstreamNotFound(ProviderError):
    status_code = 404
    error_class = "not_found"
    openai_type = "invalid_request_error"


class Upstream5xx(ProviderError):
    status_code = 502
    error_class = "upstream_5xx"
    client_retry = True
    openai_type = "server_error"
    retryable = True
    fails_over = True


class ConnectionFailed(ProviderError):
    status_code = 502
    error_class = "connection"
    client_retry = True
    openai_type = "server_error"
    retryable = True
    fails_over = True


class StreamCut(ProviderError):
    status_code = 502
    error_class = "stream_cut"
    client_retry = True
    openai_type = "server_error"
    retryable = True
    fails_over = True


class MalformedResponse(ProviderError):
    status_code = 502
    error_class = "malformed"
    client_retry = True
    openai_type = "server_error"
    retryable = True
    fails_over = True


class ResponseTooLarge(ProviderError):
    """An answer above its provider's cap. Not asked for again: the same request would most likely get the same
    answer, paid for twice; the next target is tried (its cap may be larger). Its own class, so it says nothing
    about the target's health: a client asking for huge answers must not open circuits for everyone."""

    status_code = 502
    error_class = "response_too_large"
    openai_type = "server_error"
    fails_over = True


class UpstreamBufferFull(ProviderError):
    """The process already holds its `server.max_upstream_buffer_bytes` of upstream answers: this one is not read.
    Says nothing about the target's health; another target's answer would need the same memory, so it fails fast."""

    status_code = 503
    error_class = "upstream_buffer_full"
    client_retry = True
    openai_type = "server_error"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [*super().headers(), (b"retry-after", b"1")]


class UpstreamRedirect(ProviderError):
    """The upstream answered a redirect, which is not followed: the request holds the provider key and the prompt.
    Asking again would get the same answer; another target may be configured right."""

    status_code = 502
    error_class = "redirect"
    openai_type = "server_error"
    fails_over = True


# --- who caused an error: the one classification every error rate uses -------------------------------------------
#
# An error rate (`relaycast routes status`, `/admin/routes`, `/admin/analytics/errors`, the dashboard) counts the
# provider failures: the provider (or our way to it) failed a request that was fine. Client-caused refusals are the
# request's own fault, answered correctly by the provider; they are counted and shown apart, never in the rate.
# Anything else an attempt can end with (`upstream_buffer_full`: this process was full) is the gateway's own.
PROVIDER_FAILURES = frozenset(
    {"upstream_5xx", "timeout", "connection", "stream_cut", "malformed", "rate_limit", "auth", "redirect"}
)
CLIENT_REFUSALS = frozenset(
    {
        "bad_request",
        "content_policy",
        "context_length",
        "not_found",
        "not_supported",
        "response_too_large",
        "invalid_request",
        "model_not_found",
        "payload_too_large",
    }
)


def error_source(error_class: str) -> str:
    """`provider` (a failure: counts in error rates), `client` (a refusal the request caused) or `gateway`."""
    if error_class in PROVIDER_FAILURES:
        return "provider"
    if error_class in CLIENT_REFUSALS:
        return "client"
    return "gateway"


def error_sources() -> dict[str, list[str]]:
    """The classification as the admin API serves it (the dashboard reads it rather than keeping its own)."""
    return {"provider": sorted(PROVIDER_FAILURES), "client": sorted(CLIENT_REFUSALS)}


class AllAttemptsFailed(RelaycastError):
    """Every target failed. Renders as the most telling error; keeps all of them for the trace."""

    def __init__(self, errors: list[RelaycastError]) -> None:
        self.errors = errors
        self.final = _most_telling(errors)
        super().__init__(self.final.message, param=self.final.param)

    @property
    def status_code(self) -> int:  # type: ignore[override]
        return self.final.status_code

    @property
    def error_class(self) -> str:  # type: ignore[override]
        return self.final.error_class

    def body(self) -> dict[str, Any]:
        body = self.final.body()
        if len(self.errors) > 1:
            tried = ", ".join(f"{getattr(e, 'target', '?')}: {e.error_class}" for e in self.errors)
            body["error"]["message"] = f"all {len(self.errors)} targets failed ({tried}); last: {self.final.message}"
        return body

    def headers(self) -> list[tuple[bytes, bytes]]:
        return self.final.headers()


def _most_telling(errors: list[RelaycastError]) -> RelaycastError:
    # An answer that stops failover (a refusal, a bad request) says more about the request than an outage.
    for e in errors:
        if not e.fails_over:
            return e
    return errors[-1]
