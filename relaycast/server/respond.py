"""Answers every endpoint shares: an error in OpenAI's format (scrubbed of secrets), the headers that say which
target served a request and after how many attempts, and the record of an API request that never reached a
provider (refused, or answered by the gateway itself).

Every request to the API (`/v1` and below, known paths or not) yields exactly one record; admin, dashboard,
`/metrics`, `/healthz` and `/openapi.json` requests are not LLM requests and yield none. A refusal's record is
bounded whatever the request sent: no messages, no output, only scalar parameters, and what `schema.seen` keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relaycast import errors
from relaycast.asgi import Headers, Request, Send, send_bytes
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.schema import Seen

API_PREFIX = "/v1/"
ENDPOINTS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
    "/v1/messages": "messages",
    "/v1/messages/count_tokens": "messages.count_tokens",
    "/v1/responses": "responses",
    "/v1/completions": "completions",
}
UNKNOWN_ENDPOINT = "unknown"  # any other API path; the path is in the record's error message
MAX_MESSAGE = 1000  # characters of an error message a refusal's record keeps


async def send_error(
    send: Send,
    redactor: Redactor,
    e: errors.RelaycastError,
    headers: Headers,
    render: Callable[[errors.RelaycastError], bytes] | None = None,
) -> None:
    """`e` in OpenAI's error format, or in the format `render` makes (Anthropic's, for its API)."""
    body = redactor.scrub_bytes(render(e) if render is not None else e.body_bytes())
    await send_bytes(send, e.status_code, body, [*headers, *e.headers()])


def served(target: str | None, attempts: int) -> Headers:
    """`x-relaycast-attempts`, and `x-relaycast-target` when a target answered."""
    h = [(b"x-relaycast-attempts", str(attempts).encode())]
    if target:
        h.append((b"x-relaycast-target", target.encode()))
    return h


def api_endpoint(path: str) -> str | None:
    """The record's `endpoint` for a path of the API; None for a path that yields no record."""
    if path.startswith(API_PREFIX) or path == "/v1":
        if path.startswith("/v1/responses/"):
            return "responses"
        return ENDPOINTS.get(path, UNKNOWN_ENDPOINT)
    return None


def unserved(
    r: Request,
    endpoint: str,
    started_unix_ns: int,
    duration_ns: int,
    status: int,
    error: errors.RelaycastError | None,
    seen: Seen,
    redactor: Redactor,
    *,
    params: dict[str, Any] | None = None,
    cancelled: bool = False,
) -> RequestRecord:
    """The record of a request no provider saw: no attempts, no cost, nothing of the body but `seen` and scalar
    `params`; `error` None with `cancelled` for a client that left before its request was read."""
    return RequestRecord(
        request_id=r.id,
        endpoint=endpoint,
        model_requested=seen.model,
        stream=seen.stream,
        started_unix_ns=started_unix_ns,
        duration_ns=duration_ns,
        status_code=499 if cancelled else status,
        attribution=seen.attribution,
        error_class=error.error_class if error else ("client_cancelled" if cancelled else None),
        error_message=redactor.scrub(error.message)[:MAX_MESSAGE] if error else None,
        params=params or {},
        client_cancelled=cancelled,
        client_request_id=r.client_id,
    )
