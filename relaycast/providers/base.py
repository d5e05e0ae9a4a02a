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

MAX_TOOL_CALLS = 128  # tool calls a record keeps from one answer
MAX_TOOL_ARGUMENTS = 1024 * 1024  # bytes of their arguments, all together (what passes is cut)


def tool_calls_of(calls: Any) -> list[dict[str, str]]:
    """OpenAI `tool_calls` (an answer's message) as the record keeps them: id, name, arguments (JSON text)."""
    out: list[dict[str, str]] = []
    room = MAX_TOOL_ARGUMENTS
    for c in calls if isinstance(calls, list) else ():
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or len(out) >= MAX_TOOL_CALLS:
            continue
        args = fn.get("arguments")
        args = args if isinstance(args, str) else ""
        out.append({"id": str(c.get("id") or ""), "name": str(fn.get("name") or ""), "arguments": args[:room]})
        room = max(0, room - len(args))
    return out


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
    tool_calls: list[dict[str, str]] = field(default_factory=list)  # the answer's, as `tool_calls_of` gives them


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
    tool_calls: dict[int, tuple[list[str], list[str]]] = field(
        default_factory=dict
    )  # index: ([id, name], argument parts)
    tool_room: int = MAX_TOOL_ARGUMENTS  # bytes of arguments still kept

    def saw_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.monotonic_ns()

    def tool_call(self, index: int, call_id: Any = None, name: Any = None, arguments: Any = None) -> None:
        """A tool call streaming in: its first delta names it, later ones add to its arguments (bounded)."""
        call = self.tool_calls.get(index)
        if call is None:
            if len(self.tool_calls) >= MAX_TOOL_CALLS:
                return
            call = self.tool_calls[index] = (["", ""], [])
        if isinstance(call_id, str) and call_id:
            call[0][0] = call_id
        if isinstance(name, str) and name:
            call[0][1] = name
        if isinstance(arguments, str) and arguments and self.tool_room > 0:
            call[1].append(arguments[: self.tool_room])  # joined once, at the end: linear in the arguments
            self.tool_room -= len(arguments)

    def calls(self) -> list[dict[str, str]]:
        if not self.tool_calls:
            return []
        return [
            {"id": c[0][0], "name": c[0][1], "arguments": "".join(c[1])}
            for c in (self.tool_calls[i] for i in sorted(self.tool_calls))
        ]


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
