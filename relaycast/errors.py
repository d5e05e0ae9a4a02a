"""The error tree. Every failure the gateway reports is one of these classes.

    RelaycastError                      status  class (code)       retryable (and fails over to the next target)
    ├── GatewayError                    (the client's request or the gateway itself)
    │   ├── InvalidRequest               400    invalid_request    no
    │   ├── Unauthorized                 401    unauthorized       no
    │   ├── Forbidden                    403    forbidden          no
    │   ├── NotFoundRoute                404    not_found          no
    │   ├── NoRoute                      503    no_route           no    (every target excluded or circuit-open)
    │   ├── ModelNotFound                404    model_not_found    no
    │   ├── MethodNotAllowed             405    method_not_allowed no
    │   ├── PayloadTooLarge              413    payload_too_large  no
    │   ├── UnsupportedMediaType         415    unsupported_media  no
    │   └── NotSupported                 400    not_supported      no    (but the next target may do it)
    └── ProviderError                   (an upstream attempt failed; classified once, in the adapter)
        ├── Timeout                      504    timeout            yes   (phase: connect | first_token | idle | total)
        ├── RateLimited                  429    rate_limit         yes   (retry_after; quota=True when billing)
        │   └── Overloaded               503    rate_limit         yes   (Anthropic 529)
        ├── ContentPolicy                400    content_policy     no
        ├── ContextLength                400    context_length     no
        ├── UpstreamAuth                 502    auth               no    (our provider key is wrong, not theirs)
        ├── UpstreamBadRequest           400    bad_request        no
        ├── UpstreamNotFound             404    not_found          no
        ├── Upstream5xx                  502    upstream_5xx       yes
        ├── ConnectionFailed             502    connection         yes
        ├── StreamCut                    502    stream_cut         yes   (only before bytes reached the client)
        └── MalformedResponse            502    malformed          yes

`AllAttemptsFailed` is the aggregate raised when every target of a plan failed: it keeps every attempt's
error for the trace and renders as the most telling one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class RelaycastError(Exception):
    status_code: ClassVar[int] = 500
    error_class: ClassVar[str] = "internal"
    openai_type: ClassVar[str] = "server_error"
    retryable: ClassVar[bool] = False  # the same target may succeed if asked again (with backoff)
    fails_over: ClassVar[bool] = False  # another target may succeed: try the next one

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
        return [(b"x-relaycast-error-class", self.error_class.encode())]


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
    """Every target of the route is excluded: open circuits, or the request's provider preferences."""

    status_code = 503
    error_class = "no_route"
    openai_type = "server_error"


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
    """The analytics store is disabled or its database cannot be reached."""

    status_code = 503
    error_class = "store_unavailable"
    openai_type = "server_error"


class PayloadTooLarge(GatewayError):
    status_code = 413
    error_class = "payload_too_large"
    openai_type = "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    status_code = 415
    error_class = "unsupported_media_type"
    openai_type = "invalid_request_error"


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
    openai_type = "rate_limit_error"
    retryable = True
    fails_over = True

    def __init__(self, message: str, *, retry_after: float | None = None, quota: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
        self.quota = quota

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
    openai_type = "server_error"
    retryable = True
    fails_over = True


class ConnectionFailed(ProviderError):
    status_code = 502
    error_class = "connection"
    openai_type = "server_error"
    retryable = True
    fails_over = True


class StreamCut(ProviderError):
    status_code = 502
    error_class = "stream_cut"
    openai_type = "server_error"
    retryable = True
    fails_over = True


class MalformedResponse(ProviderError):
    status_code = 502
    error_class = "malformed"
    openai_type = "server_error"
    retryable = True
    fails_over = True


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
