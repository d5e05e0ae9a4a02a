"""The provider contract matrix: every adapter (a column of tests/contract/columns.py) against every capability
(a row, below), each cell a recorded upstream reply served on 127.0.0.1 to the adapter's real upstream client.

The adapter is built as the registry builds it, from a `providers:` entry of the config. Each check asserts what
the client is sent (OpenAI's format), what the gateway learns (usage, finish reason, first-token time), which
error class a failure is classified into, and what the adapter sent upstream.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest

from relaycast import errors
from relaycast.config_reader import Reader
from relaycast.providers.base import ChatStream, Provider
from relaycast.providers.client import UpstreamClient
from relaycast.providers.presets import PRESETS
from relaycast.providers.registry import ADAPTERS, adapter_class
from relaycast.providers.settings import parse_providers
from relaycast.records import Usage
from relaycast.schema import ChatRequest, parse_chat
from relaycast.sse import DONE_EVENT, EventSplitter
from tests.contract.columns import COLUMNS, KEY, Answer, Call, Cell, Column, Embedded, Failure
from tests.contract.replay import Received, ReplayUpstream

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def chat_request(stream: bool = False, include_usage: bool = False) -> ChatRequest:
    body: dict[str, Any] = {
        "model": "any",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Lisbon and Porto?"},
        ],
        "tools": TOOLS,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": include_usage}
    return parse_chat(orjson.dumps(body), {})


@asynccontextmanager
async def upstream(column: Column, cell: Cell) -> AsyncIterator[tuple[Provider, list[Received]]]:
    """The cell's reply on a loopback server, and the column's adapter configured to call it."""
    async with ReplayUpstream(column.name, cell.reply) as up, UpstreamClient() as session:
        raw = {
            "name": column.name,
            "kind": column.kind,
            "base_url": up.url + "/v1",
            "api_key": KEY,
            "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 10},
        }
        config = parse_providers(Reader({}), [raw])[column.name]
        provider: Provider = adapter_class(config.adapter)(config, session)
        yield provider, up.received


def target(column: Column) -> str:
    return f"{column.name}/{column.model}"


def sent_chat(column: Column, received: list[Received], stream: bool) -> None:
    """The adapter posted one chat request, to its path, with its key, for the model it was given."""
    assert [(r.method, r.path) for r in received] == [("POST", column.chat_path)]
    assert received[0].headers[column.auth_header] == column.auth_value
    body = received[0].json()
    assert body["model"] == column.model
    assert bool(body.get("stream")) is stream


def data_events(raw: bytes) -> list[Any]:
    """The `data:` payloads of OpenAI SSE bytes, parsed; "[DONE]" kept as a string."""
    return ["[DONE]" if ev.data == b"[DONE]" else orjson.loads(ev.data) for ev in EventSplitter().feed(raw)]


def bears_token(chunk: Any) -> bool:
    """Does this OpenAI chunk carry generated output (text, a tool call, or reasoning)?"""
    if not isinstance(chunk, dict) or not chunk.get("choices"):
        return False
    delta = chunk["choices"][0].get("delta") or {}
    return bool(delta.get("content") or delta.get("tool_calls") or delta.get("reasoning_content"))


def assembled_calls(deltas: list[dict[str, Any]]) -> tuple[Call, ...]:
    """Streamed tool-call fragments put together by index, as an OpenAI client does."""
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas:
        for tc in d.get("tool_calls") or ():
            c = calls.setdefault(tc["index"], {"id": None, "name": None, "arguments": ""})
            c["id"] = tc.get("id") or c["id"]
            fn = tc.get("function") or {}
            c["name"] = fn.get("name") or c["name"]
            c["arguments"] += fn.get("arguments") or ""
    return tuple(Call(c["id"], c["name"], orjson.loads(c["arguments"])) for _, c in sorted(calls.items()))


def usage_object_matches(obj: dict[str, Any], usage: Usage) -> None:
    assert (obj["prompt_tokens"], obj["completion_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert obj["total_tokens"] == usage.total_tokens
    assert (obj.get("prompt_tokens_details") or {}).get("cached_tokens", 0) == usage.cached_tokens
    assert (obj.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) == usage.reasoning_tokens


async def read_stream(stream: ChatStream) -> tuple[list[bytes], int | None, BaseException | None]:
    """Every part the stream yields; the index of the part after which the first-token time was set; the error
    that ended it, if one did."""
    parts: list[bytes] = []
    marked_at: int | None = None
    try:
        async for part in stream:
            parts.append(part)
            if marked_at is None and stream.state.first_token_ns is not None:
                marked_at = len(parts) - 1
    except errors.RelaycastError as e:
        return parts, marked_at, e
    finally:
        await stream.aclose()
    return parts, marked_at, None


def first_token_marked_at_the_first_token(parts: list[bytes], marked_at: int | None) -> None:
    """The first-token time is set by the part that carries the first token, not before it and not later."""
    assert marked_at is not None
    assert not any(bears_token(c) for c in data_events(b"".join(parts[:marked_at])))
    assert any(bears_token(c) for c in data_events(b"".join(parts[: marked_at + 1])))


# --- the checks, one per kind of capability ---------------------------------------------------------


async def chat_answers(column: Column, cell: Cell) -> None:
    """A non-streaming answer becomes an OpenAI chat.completion: text, tool calls, reasoning, usage (cached and
    reasoning tokens included) and finish reason, in the body and in what the gateway learns."""
    expect = cell.expect
    assert isinstance(expect, Answer)
    async with upstream(column, cell) as (provider, received):
        result = await provider.chat(chat_request(), column.model)
    sent_chat(column, received, stream=False)
    body = orjson.loads(result.body)
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == expect.text
    assert message.get("reasoning_content") == expect.reasoning
    calls = message.get("tool_calls") or []
    assert all(c["type"] == "function" for c in calls)
    got = tuple(Call(c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in calls)
    assert got == expect.calls
    assert choice["finish_reason"] == result.finish_reason == expect.finish_reason
    usage_object_matches(body["usage"], expect.usage)
    assert result.usage == expect.usage
    assert result.output_text == expect.text


async def stream_answers(column: Column, cell: Cell) -> None:
    """A stream is re-emitted as OpenAI chunk events, ends with [DONE], carries the usage chunk only when the
    client asked for it, and tells the gateway its text, usage, finish reason and first-token time."""
    expect = cell.expect
    assert isinstance(expect, Answer)
    for include_usage in (True, False):
        async with upstream(column, cell) as (provider, received):
            started = time.monotonic_ns()
            stream = await provider.chat_stream(chat_request(True, include_usage), column.model)
            parts, marked_at, failure = await read_stream(stream)
            ended = time.monotonic_ns()
        assert failure is None
        sent_chat(column, received, stream=True)
        raw = b"".join(parts)
        assert raw.endswith(DONE_EVENT)
        events = data_events(raw)
        assert events.count("[DONE]") == 1
        chunks = events[:-1]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        assert "".join(d.get("content") or "" for d in deltas) == (expect.text or "")
        assert "".join(d.get("reasoning_content") or "" for d in deltas) == (expect.reasoning or "")
        assert assembled_calls(deltas) == expect.calls
        finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert [f for f in finishes if f] == [expect.finish_reason] == [finishes[-1]]
        usage_chunks = [c for c in chunks if not c["choices"]]
        assert len(usage_chunks) == (1 if include_usage else 0)
        if include_usage:
            assert chunks[-1] is usage_chunks[0]
            usage_object_matches(usage_chunks[0]["usage"], expect.usage)
        state = stream.state
        assert state.done
        assert state.finish_reason == expect.finish_reason
        assert state.usage == expect.usage
        assert "".join(state.text) == (expect.text or "")
        assert state.first_token_ns is not None and started <= state.first_token_ns <= ended
        first_token_marked_at_the_first_token(parts, marked_at)


async def error_classified(column: Column, cell: Cell) -> None:
    """The upstream's own error answer is classified into the error tree, the same for a plain and a stream
    request: the class, the upstream status, Retry-After, the target, and never the provider key."""
    expect = cell.expect
    assert isinstance(expect, Failure)
    for stream in (False, True):
        async with upstream(column, cell) as (provider, received):
            with pytest.raises(errors.ProviderError) as e:
                if stream:
                    await read_stream(await provider.chat_stream(chat_request(True), column.model))
                else:
                    await provider.chat(chat_request(), column.model)
        sent_chat(column, received, stream=stream)
        err = e.value
        assert type(err) is expect.error
        assert err.upstream_status == expect.upstream_status
        assert err.target == target(column)
        assert getattr(err, "retry_after", None) == expect.retry_after
        assert err.message and KEY not in err.message and KEY not in err.body_bytes().decode()


async def stream_fails_mid_way(column: Column, cell: Cell) -> None:
    """A stream that breaks after it started (an error event, a dropped connection, an event that is not JSON)
    hands out what came before, then raises the failure's class; the stream is not marked done."""
    expect = cell.expect
    assert isinstance(expect, Failure)
    async with upstream(column, cell) as (provider, received):
        stream = await provider.chat_stream(chat_request(True, True), column.model)
        parts, marked_at, failure = await read_stream(stream)
    sent_chat(column, received, stream=True)
    assert type(failure) is expect.error
    assert isinstance(failure, errors.ProviderError)
    assert failure.upstream_status == expect.upstream_status
    assert failure.target == target(column)
    events = data_events(b"".join(parts))
    assert "[DONE]" not in events
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events if c["choices"])
    assert text == "".join(stream.state.text) == expect.partial_text
    assert not stream.state.done
    if expect.partial_text:
        first_token_marked_at_the_first_token(parts, marked_at)


async def chat_fails(column: Column, cell: Cell) -> None:
    """A non-streaming answer the adapter cannot read raises its class (not a crash, not a half answer)."""
    expect = cell.expect
    assert isinstance(expect, Failure)
    async with upstream(column, cell) as (provider, received):
        with pytest.raises(errors.ProviderError) as e:
            await provider.chat(chat_request(), column.model)
    sent_chat(column, received, stream=False)
    assert type(e.value) is expect.error
    assert e.value.target == target(column)


async def embeds(column: Column, cell: Cell) -> None:
    """Embeddings come back as the upstream sent them, with their usage; an adapter without embeddings says
    NotSupported (so the executor tries the next target) without calling its upstream."""
    body = {"model": "alias", "input": ["Lisbon", "Porto"], "encoding_format": "float", "provider": {"sort": "price"}}
    expect = cell.expect
    async with upstream(column, cell) as (provider, received):
        if isinstance(expect, Failure):
            with pytest.raises(errors.RelaycastError) as e:
                await provider.embeddings(body, column.model)
            assert type(e.value) is expect.error
            assert received == []
            return
        raw, usage = await provider.embeddings(body, column.model)
    assert isinstance(expect, Embedded)
    assert [(r.method, r.path) for r in received] == [("POST", "/v1/embeddings")]
    assert received[0].headers[column.auth_header] == column.auth_value
    sent = received[0].json()
    assert sent["model"] == column.model and sent["input"] == ["Lisbon", "Porto"] and "provider" not in sent
    parsed = orjson.loads(raw)
    assert len(parsed["data"]) == expect.vectors and all(d["embedding"] for d in parsed["data"])
    assert usage == expect.usage


Check = Callable[[Column, Cell], Coroutine[Any, Any, None]]
CAPABILITIES: dict[str, Check] = {
    "chat_text": chat_answers,
    "chat_tool_calls": chat_answers,
    "stream_text": stream_answers,
    "stream_tool_calls": stream_answers,
    "error_auth_401": error_classified,
    "error_auth_403": error_classified,
    "error_bad_request": error_classified,
    "error_context_length": error_classified,
    "error_content_policy": error_classified,
    "error_not_found": error_classified,
    "error_rate_limit": error_classified,
    "error_overloaded": error_classified,
    "error_upstream_5xx": error_classified,
    "stream_error_event": stream_fails_mid_way,
    "stream_cut": stream_fails_mid_way,
    "malformed_body": chat_fails,
    "malformed_stream": stream_fails_mid_way,
    "embeddings": embeds,
}


def matrix() -> list[Any]:
    cells = []
    for column in COLUMNS:
        for capability in CAPABILITIES:
            cell = column.cells.get(capability)
            marks = [pytest.mark.xfail(strict=True, reason=cell.xfail)] if cell and cell.xfail else []
            cells.append(pytest.param(column, capability, id=f"{column.name}-{capability}", marks=marks))
    return cells


@pytest.mark.parametrize(("column", "capability"), matrix())
def test_adapter_meets_capability(column: Column, capability: str) -> None:
    cell = column.cells.get(capability)
    assert cell is not None, f"the {column.name} column has no cell for {capability}"
    asyncio.run(CAPABILITIES[capability](column, cell))


def test_every_adapter_of_the_registry_has_a_column_covering_every_capability() -> None:
    assert {c.name for c in COLUMNS} == set(ADAPTERS)
    for column in COLUMNS:
        assert PRESETS[column.kind].adapter == column.name
        assert set(column.cells) == set(CAPABILITIES), column.name
