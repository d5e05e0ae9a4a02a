"""Answers every endpoint shares: an error in OpenAI's format (scrubbed of secrets), and the headers that say
which target served a request and after how many attempts."""

from __future__ import annotations

from relaycast import errors
from relaycast.asgi import Headers, Send, send_bytes
from relaycast.redact import Redactor


async def send_error(send: Send, redactor: Redactor, e: errors.RelaycastError, headers: Headers) -> None:
    body = redactor.scrub_bytes(e.body_bytes())
    await send_bytes(send, e.status_code, body, [*headers, *e.headers()])


def served(target: str | None, attempts: int) -> Headers:
    """`x-relaycast-attempts`, and `x-relaycast-target` when a target answered."""
    h = [(b"x-relaycast-attempts", str(attempts).encode())]
    if target:
        h.append((b"x-relaycast-target", target.encode()))
    return h
