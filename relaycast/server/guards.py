"""Connection-level guards: how long a client may take to send a request, how large its headers may be, and how
many connections the server holds, enforced by relaycast's HTTP/1.1 protocol (`server/http1.py`).

- header deadline: a new connection must finish its request headers within `header_timeout` of opening; a kept-alive
  connection within `header_timeout` of the first byte of its next request (the idle time before that byte is
  `keep_alive_timeout`'s). Answered 408, then closed; a connection that sent nothing is closed without a word.
- body deadline: the request body must be received within `body_timeout` of the end of its headers. Only reading
  the request is timed; a response may stream for as long as it needs. Answered 408 when no response has started,
  otherwise closed.
- header size: request line and headers together at most `max_header_bytes`; more is answered 431 and closed,
  before the application sees the request. Bytes are counted as they arrive, so the parser never holds more than
  the limit and one read.
- connection cap: at most `max_connections` connections are served at once. A connection opened above the cap is
  answered 503 once its request headers arrive (unless a slot has freed up by then) and closed; connections
  already served keep working, so an operator's `/healthz` on one still answers during a flood. (uvicorn's own
  `limit_concurrency` is not used: at each request it compares every open connection, the excess ones included,
  with the limit, so a flood of idle connections would turn every request on every connection into a 503.)
- malformed: bytes the HTTP/1.1 parser cannot read are answered 400 `invalid_request` and the connection closed.

Each answer is a JSON error in OpenAI's format with `connection: close`, then the write side is shut and what the
client still sends is read and discarded for a moment, so that it reads the answer instead of a reset. Every trip
is counted by reason in a `ConnectionGuard`, one per server (no module state).
"""

from __future__ import annotations

from relaycast import errors
from relaycast.config import ServerConfig
from relaycast.server.cycle import STATUS_LINES

REASONS = ("header_timeout", "body_timeout", "headers_too_large", "over_capacity", "malformed")
LINGER_S = 2.0  # how long an answered connection reads and discards what the client still sends


class ConnectionGuard:
    """One server's connection limits, the number of connections it serves, and its refusals by reason."""

    def __init__(self, settings: ServerConfig | None = None) -> None:
        self.settings = settings or ServerConfig()
        self.open = 0  # connections admitted under the cap
        self.refused = dict.fromkeys(REASONS, 0)

    def admit(self) -> bool:
        if self.open >= self.settings.max_connections:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def counts(self) -> dict[str, int]:
        """`relaycast_connections_refused_total{reason}` material, and the open connections."""
        return {**self.refused, "open": self.open}


def answer(e: errors.RelaycastError) -> bytes:
    body = e.body_bytes()
    head = f"content-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return STATUS_LINES[e.status_code] + head.encode("ascii") + body
