"""Every priced quantity an upstream reports reaches `Usage`: Anthropic's cache writes by TTL, web searches and
service tier; OpenAI's audio tokens and service tier (chat, streams, the Responses API and its web_search_call
items); OpenRouter's cache writes and cost. Each adapter reads a recorded answer (tests/fixtures/<adapter>/, in the
provider's wire format) served on 127.0.0.1 to its real upstream client; the translated dialects then carry the
same counts to a client of another API, where that API has a place for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import orjson

from relaycast.config_reader import Reader
from relaycast.dialects import messages, responses
from relaycast.providers.base import ChatStream, Provider
from relaycast.providers.client import UpstreamClient
from relaycast.providers.registry import adapter_class
from relaycast.providers.settings import parse_providers
from relaycast.records import Usage
from relaycast.schema import ChatRequest, parse_chat
from relaycast.sse import DONE_EVENT, EventSplitter
from tests.contract.replay import ReplayUpstream, Reply

T = TypeVar("T")
KEY = "sk-test-usage-0123456789abcdef"

# What the fixtures say, counted by hand from their usage objects.
ANTHROPIC_MESSAGE = Usage(
    prompt_tokens=2048 + 4000 + 1500,  # input_tokens leaves out cache reads and writes; prompt_tokens has them
    completion_tokens=310,
    cached_tokens=4000,
    cache_write_tokens=1500,
    cache_write_1h_tokens=1000,
    web_searches=2,
    service_tier="priority",
)
ANTHROPIC_STREAM = msgspec.structs.replace(ANTHROPIC_MESSAGE, completion_tokens=118, web_searches=1)
OPENAI_AUDIO = Usage(
    prompt_tokens=120, completion_tokens=160, input_audio_tokens=45, output_audio_tokens=148, service_tier="priority"
)
OPENAI_FLEX_STREAM = Usage(
    prompt_tokens=1117,
    completion_tokens=231,
    cached_tokens=1024,
    reasoning_tokens=192,
    input_audio_tokens=30,
    output_audio_tokens=20,
    service_tier="flex",
)
OPENROUTER = Usage(
    prompt_tokens=5600, completion_tokens=42, cached_tokens=4000, cache_write_tokens=1500, reported_cost_usd="0.0078915"
)
RESPONSES_SEARCH = Usage(
    prompt_tokens=8421, completion_tokens=156, cached_tokens=4096, reasoning_tokens=64, web_searches=2,
    service_tier="priority",
)  # fmt: skip


def chat_request(stream: bool = False) -> ChatRequest:
    body: dict[str, Any] = {"model": "any", "messages": [{"role": "user", "content": "Weather in Lisbon?"}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return parse_chat(orjson.dumps(body), {})


def responses_request(stream: bool = False) -> ChatRequest:
    """A Responses API request, for a provider that speaks that API natively (`responses_api: true`)."""
    native: dict[str, Any] = {"model": "any", "input": "Weather in Lisbon?", "tools": [{"type": "web_search"}]}
    return dataclasses.replace(chat_request(stream), dialect="responses", native=native)


def served(fixtures: str, kind: str, fixture: str, call: Callable[[Provider], Awaitable[T]], **provider: Any) -> T:
    """`call` on an adapter of `kind` whose upstream answers with the fixture."""

    async def go() -> T:
        async with ReplayUpstream(fixtures, Reply(fixture)) as up, UpstreamClient() as session:
            raw = {"name": "up", "kind": kind, "base_url": up.url + "/v1", "api_key": KEY, **provider}
            config = parse_providers(Reader({}), [raw])["up"]
            return await call(adapter_class(config.adapter)(config, session))

    return asyncio.run(go())


async def drained(stream: ChatStream) -> tuple[bytes, ChatStream]:
    parts = []
    try:
        async for part in stream:
            parts.append(part)
    finally:
        await stream.aclose()
    return b"".join(parts), stream


def data_events(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(ev.data) for ev in EventSplitter().feed(raw) if ev.data and ev.data != b"[DONE]"]


# --- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_message_reports_1h_cache_writes_web_searches_and_tier() -> None:
    result = served(
        "anthropic", "anthropic", "message_web_search_1h_priority.json", lambda p: p.chat(chat_request(), "claude")
    )
    assert result.usage == ANTHROPIC_MESSAGE
    body = orjson.loads(result.body)
    assert body["choices"][0]["message"]["content"] == "Lisbon: 21C and sunny. Porto: 18C and cloudy."
    assert body["service_tier"] == "priority"
    assert body["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000}
    assert body["usage"]["server_tool_use"] == {"web_search_requests": 2}
    # The OpenAI answer a chat client gets reads back as the same usage (what a translating dialect relies on).
    assert Usage.from_openai(body["usage"], body["service_tier"]) == ANTHROPIC_MESSAGE


def test_anthropic_stream_merges_message_start_and_message_delta_usage() -> None:
    async def call(p: Provider) -> tuple[bytes, ChatStream]:
        return await drained(await p.chat_stream(chat_request(stream=True), "claude"))

    raw, stream = served("anthropic", "anthropic", "stream_web_search_1h_priority.sse", call)
    assert raw.endswith(DONE_EVENT)
    # 1h writes and the tier come in message_start, the search count in message_delta
    assert stream.state.usage == ANTHROPIC_STREAM
    usage_chunk = [c for c in data_events(raw) if not c["choices"]][-1]
    assert usage_chunk["service_tier"] == "priority"
    assert Usage.from_openai(usage_chunk["usage"], usage_chunk["service_tier"]) == ANTHROPIC_STREAM


# --- OpenAI chat completions and OpenRouter -------------------------------------------------------


def test_openai_chat_reports_audio_tokens_and_the_tier_that_served_it() -> None:
    result = served("openai", "openai", "chat_audio_priority.json", lambda p: p.chat(chat_request(), "gpt-4o-audio"))
    assert result.usage == OPENAI_AUDIO


def test_openai_stream_takes_the_tier_from_its_chunks() -> None:
    async def call(p: Provider) -> tuple[bytes, ChatStream]:
        return await drained(await p.chat_stream(chat_request(stream=True), "o4-mini"))

    raw, stream = served("openai", "openai", "stream_flex_audio.sse", call)
    assert raw.endswith(DONE_EVENT)
    assert stream.state.usage == OPENAI_FLEX_STREAM


def test_openrouter_reports_cache_writes_and_its_cost() -> None:
    result = served(
        "openai", "openrouter", "openrouter_chat_usage.json", lambda p: p.chat(chat_request(), "anthropic/claude")
    )
    assert result.usage == OPENROUTER


# --- OpenAI Responses API, natively ---------------------------------------------------------------


def test_responses_counts_web_search_calls_and_reads_the_tier() -> None:
    result = served(
        "openai",
        "openai",
        "responses_web_search_priority.json",
        lambda p: p.chat(responses_request(), "gpt-5"),
        responses_api=True,
    )
    assert result.dialect == "responses"
    assert result.usage == RESPONSES_SEARCH


def test_responses_stream_counts_web_search_calls_of_the_final_response() -> None:
    async def call(p: Provider) -> tuple[bytes, ChatStream]:
        return await drained(await p.chat_stream(responses_request(stream=True), "gpt-5"))

    raw, stream = served("openai", "openai", "responses_web_search_priority.sse", call, responses_api=True)
    assert b"response.web_search_call.completed" in raw  # forwarded as the upstream sent it
    assert stream.state.done and stream.state.usage == RESPONSES_SEARCH


# --- the translated dialects carry them -----------------------------------------------------------


def _chat_with(usage: Usage) -> dict[str, Any]:
    """A chat.completion whose usage is `usage` in the shape the Anthropic adapter answers with."""
    result = served(
        "anthropic", "anthropic", "message_web_search_1h_priority.json", lambda p: p.chat(chat_request(), "claude")
    )
    assert result.usage == usage
    chat: dict[str, Any] = orjson.loads(result.body)
    return chat


def test_a_messages_client_of_a_chat_answer_gets_every_tier_in_anthropic_names() -> None:
    chat = _chat_with(ANTHROPIC_MESSAGE)
    u = messages.message(chat, "msg_1", "claude")["usage"]
    assert u == {
        "input_tokens": 2048,
        "output_tokens": 310,
        "cache_creation_input_tokens": 1500,
        "cache_read_input_tokens": 4000,
        "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000},
        "server_tool_use": {"web_search_requests": 2},
        "service_tier": "priority",
    }


def test_a_messages_stream_client_gets_the_tier_and_counts_of_the_chunks() -> None:
    chunk_head = {"id": "c1", "object": "chat.completion.chunk", "model": "o4-mini", "service_tier": "flex"}
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 40},
        "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 30},
        "server_tool_use": {"web_search_requests": 3},
    }
    s = messages.MessagesStream("msg_1", "o4-mini")
    s.feed({**chunk_head, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    s.feed({"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": usage})  # no tier on this one
    delta = [e for e in data_events(s.finish()) if e["type"] == "message_delta"][0]
    assert delta["usage"]["service_tier"] == "flex"
    assert delta["usage"]["cache_creation"] == {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 30}
    assert delta["usage"]["server_tool_use"] == {"web_search_requests": 3}
    assert delta["usage"]["input_tokens"] == 60


def test_a_responses_client_of_a_chat_answer_gets_the_tier_and_the_counts_back() -> None:
    chat = _chat_with(ANTHROPIC_MESSAGE)
    resp = responses.response(chat, {"model": "claude"}, "resp_1", 1741569952)
    assert resp["service_tier"] == "priority"
    assert responses.response_usage(resp) == ANTHROPIC_MESSAGE


def test_a_responses_stream_client_gets_the_tier_of_the_chunks() -> None:
    s = responses.ResponsesStream({"model": "o4-mini"}, "resp_1", 1741569952)
    s.start()
    s.feed({"model": "o4-mini", "service_tier": "flex", "choices": [{"index": 0, "delta": {"content": "hi"}}]})
    s.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    s.feed({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}})
    s.finish()
    final = s.final()
    assert final["service_tier"] == "flex"
    assert responses.response_usage(final) == Usage(prompt_tokens=7, completion_tokens=1, service_tier="flex")


def test_a_response_without_a_tier_keeps_usage_unmarked() -> None:
    plain = {"output": [], "usage": {"input_tokens": 3, "output_tokens": 2}}
    assert responses.response_usage(plain) == Usage(prompt_tokens=3, completion_tokens=2)
    assert responses.response_usage({"output": []}) is None
