"""A provider whose behaviour is Python functions a test gives: raise an error, sleep, answer, yield tokens.

`FunctionProvider` implements the `Provider` protocol of relaycast.providers.base, so the executor runs it as it
runs a real adapter, without a network. Its streams speak OpenAI's chunk events and keep a `StreamState` the way
the adapters do: the first-token time is set by the first text, and `done` only after the whole stream.

Below it: ready-made behaviours (`answers`, `fails`, `tokens`, ...), and what tests need to run an `Executor`
over such providers (a seeded executor, a plan, a request, the attempt log as (target, error class) pairs).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from relaycast import errors
from relaycast.log import EventLog
from relaycast.providers.base import ChatResult, StreamState
from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.records import Attempt, Usage
from relaycast.redact import Redactor
from relaycast.routing.executor import Executor, Run
from relaycast.routing.health import HealthBoard
from relaycast.routing.plan import Plan
from relaycast.routing.settings import Route, RoutingSettings
from relaycast.routing.target import Target
from relaycast.schema import ChatRequest, parse_chat
from relaycast.sse import DONE_EVENT

ChatFn = Callable[[ChatRequest, str], Awaitable[ChatResult]]
StreamFn = Callable[[ChatRequest, str], AsyncIterator[str]]  # yields the text of each token
EmbedFn = Callable[[dict[str, Any], str], Awaitable[tuple[bytes, Usage | None]]]
TIMEOUTS = Timeouts(connect_s=1.0, first_token_s=1.0, idle_s=1.0, total_s=2.0)  # routes set tighter ones


def chat_result(text: str, completion_tokens: int = 1) -> ChatResult:
    """A finished completion of `text`, as an adapter returns it."""
    usage = Usage(prompt_tokens=10, completion_tokens=completion_tokens)
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": completion_tokens, "total_tokens": 10 + completion_tokens},
    }
    return ChatResult(body=orjson.dumps(body), usage=usage, finish_reason="stop", output_text=text)


class FunctionStream:
    """An open stream over a test's token generator: a role chunk first (no token), one chunk per token, then
    the finish chunk with [DONE]. An error the generator raises is the stream's error, as an adapter's would be."""

    def __init__(self, tokens: AsyncIterator[str], target: str) -> None:
        self.state = StreamState()
        self.target = target
        self.closed = False
        self._tokens = tokens
        self._chunks: AsyncGenerator[bytes, None] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        self._chunks = self._iterate()
        return self._chunks

    async def _iterate(self) -> AsyncGenerator[bytes, None]:
        state = self.state
        yield self.chunk({"role": "assistant", "content": ""})
        async for text in self._tokens:
            state.saw_token()
            state.text.append(text)
            yield self.chunk({"content": text})
        state.finish_reason = "stop"
        state.usage = Usage(prompt_tokens=10, completion_tokens=len(state.text))
        state.done = True
        yield self.chunk({}, "stop") + DONE_EVENT

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": f"chatcmpl-{self.target}",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    async def aclose(self) -> None:
        self.closed = True
        if self._chunks is not None:
            await self._chunks.aclose()
        aclose = getattr(self._tokens, "aclose", None)
        if aclose is not None:
            await aclose()


class FunctionProvider:
    """A provider named `name` whose calls run the given functions. A capability without a function answers
    NotSupported, as an adapter without it does. `calls` lists (capability, model) in the order they came."""

    def __init__(
        self,
        name: str,
        *,
        chat: ChatFn | None = None,
        stream: StreamFn | None = None,
        embeddings: EmbedFn | None = None,
        timeouts: Timeouts = TIMEOUTS,
    ) -> None:
        self.config = ProviderConfig(
            name=name, kind="openai_compatible", adapter="openai", base_url="http://127.0.0.1:9", timeouts=timeouts
        )
        self._chat = chat
        self._stream = stream
        self._embeddings = embeddings
        self.calls: list[tuple[str, str]] = []
        self.streams: list[FunctionStream] = []

    def _unsupported(self, what: str) -> errors.NotSupported:
        return errors.NotSupported(f"provider '{self.config.name}' does not offer {what}", param="model")

    async def chat(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> ChatResult:
        self.calls.append(("chat", model))
        if self._chat is None:
            raise self._unsupported("chat")
        return await self._chat(req, model)

    async def chat_stream(self, req: ChatRequest, model: str, timeouts: Timeouts | None = None) -> FunctionStream:
        self.calls.append(("stream", model))
        if self._stream is None:
            raise self._unsupported("streaming")
        stream = FunctionStream(self._stream(req, model), f"{self.config.name}/{model}")
        self.streams.append(stream)
        return stream

    async def embeddings(self, body: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
        self.calls.append(("embeddings", model))
        if self._embeddings is None:
            raise self._unsupported("embeddings")
        return await self._embeddings(body, model)


# --- running the executor over fakes -------------------------------------------------------------

SEED = 1234  # the executor's backoff jitter is drawn from random.Random(SEED)
MS = 1_000_000  # ns


def request(stream: bool = False) -> ChatRequest:
    return parse_chat(
        orjson.dumps({"model": "test", "messages": [{"role": "user", "content": "hi"}], "stream": stream}), {}
    )


def plan(*targets: str, **route: Any) -> Plan:
    return Plan(route=Route(name="test", targets=targets, **route), targets=tuple(Target.parse(t) for t in targets))


def executor(*providers: FunctionProvider) -> Executor:
    log = EventLog(Redactor(()))
    board = HealthBoard(RoutingSettings(), log)
    return Executor({p.config.name: p for p in providers}, board, log, random.Random(SEED))


def classes(run: Run) -> list[tuple[str, str | None]]:
    return [(a.target, a.error_class) for a in run.attempts]


def end_ns(a: Attempt) -> int:
    return a.started_ns + a.duration_ns


# --- behaviours -------------------------------------------------------------------------------


def answers(text: str, after_s: float = 0.0) -> ChatFn:
    async def chat(req: ChatRequest, model: str) -> ChatResult:
        await asyncio.sleep(after_s)
        return chat_result(text)

    return chat


def fails(err: errors.RelaycastError, after_s: float = 0.0) -> ChatFn:
    async def chat(req: ChatRequest, model: str) -> ChatResult:
        await asyncio.sleep(after_s)
        raise err

    return chat


def fails_then_answers(err: errors.RelaycastError, text: str) -> ChatFn:
    calls: list[str] = []

    async def chat(req: ChatRequest, model: str) -> ChatResult:
        calls.append(model)
        if len(calls) == 1:
            raise err
        return chat_result(text)

    return chat


def tokens(
    *texts: str, first_after_s: float = 0.0, then_fail: errors.RelaycastError | None = None, stall_s: float = 0.0
) -> StreamFn:
    """A stream: wait `first_after_s`, yield `texts`, then stall for `stall_s` and/or raise `then_fail`."""

    async def stream(req: ChatRequest, model: str) -> AsyncIterator[str]:
        await asyncio.sleep(first_after_s)
        for t in texts:
            yield t
        await asyncio.sleep(stall_s)
        if then_fail is not None:
            raise then_fail

    return stream


class Client:
    """What a client receives through `OpenStream.relay`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    async def send(self, data: bytes) -> None:
        self.parts.append(data)

    @property
    def text(self) -> str:
        out = []
        for line in b"".join(self.parts).split(b"\n"):
            if line.startswith(b"data: {"):
                delta = orjson.loads(line[6:])["choices"][0]["delta"]
                out.append(delta.get("content") or "")
        return "".join(out)


async def cancel_after(coro: Awaitable[Any], delay_s: float) -> None:
    """Run `coro` as a task and cancel it after `delay_s`, as the server does when the client goes away."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(delay_s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
