"""What every provider adapter offers the executor: the `Provider` and `ChatStream` protocols and their results.

An adapter knows one wire format: how to build the upstream request, how to read its response and stream,
and how to classify its errors into the tree in `relaycast.errors`. It knows nothing of routing or telemetry.
The HTTP helpers the adapters share are in `relaycast.providers.http`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.records import Usage
from relaycast.schema import ChatRequest


@dataclass(slots=True)
class ChatResult:
    """A finished non-streaming completion, already in OpenAI's format."""

    body: bytes
    usage: Usage | None
    finish_reason: str | None
    output_text: str | None
    dialect: str = "chat"  # the API `body` is in: "chat", or the client's own when a provider spoke it natively
    native_finish_reason: str | None = None  # the upstream's own word for why it stopped
    response_model: str | None = None  # the model the upstream says answered
    response_id: str | None = None  # the upstream's id of its answer


@dataclass(slots=True)
class StreamState:
    """What the gateway learns from a stream while forwarding it."""

    usage: Usage | None = None
    finish_reason: str | None = None
    first_token_ns: int | None = None  # monotonic time of the first content-bearing event
    text: list[str] = field(default_factory=list)
    done: bool = False  # the stream ended properly ([DONE] or its native equivalent)
    response_model: str | None = None  # the model the upstream says answers
    response_id: str | None = None  # the upstream's id of its answer

    def saw_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.monotonic_ns()


class ChatStream(Protocol):
    """An open upstream stream. Iterating yields bytes ready to send to the client (SSE events in `dialect`).

    Iteration raises a `ProviderError` (StreamCut, MalformedResponse, Timeout, or an error event's class)
    when the upstream fails mid-stream. `aclose()` releases the upstream connection at once.
    """

    state: StreamState
    dialect: str  # the API the yielded events are in: "chat", or the client's own (see ChatResult.dialect)

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    config: ProviderConfig

    async def chat(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatResult: ...

    async def chat_stream(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatStream: ...

    async def embeddings(self, body: dict[str, Any], model: str) -> tuple[bytes, Usage | None]: ...
