"""The native Anthropic adapter: request/response/stream mapping, error classification, and the fake's wire format.

Fixtures under tests/fixtures/anthropic/ are hand-written in Anthropic's wire format. End-to-end tests run the
adapter against the fake upstream on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast import errors
from relaycast.fake.server import FakeUpstream
from relaycast.providers.anthropic import AnthropicProvider, StreamTranslator, classify
from relaycast.providers.anthropic_map import ANSWER_TOOL, chat_result, finish_reason, request_body
from relaycast.providers.client import UpstreamClient
from relaycast.providers.settings import ProviderConfig, Timeouts
from relaycast.records import Usage
from relaycast.schema import ChatRequest, parse_chat
from relaycast.server.runner import ThreadedServer
from relaycast.sse import DONE_EVENT, EventSplitter

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "anthropic"
KEY = "sk-ant-test-0123456789abcdef-secret"
MODEL = "claude-3-5-haiku-latest"
TARGET = f"claude/{MODEL}"


USER = [{"role": "user", "content": "x"}]
NOOP = [{"type": "function", "function": {"name": "noop"}}]
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def mapped(stream: bool = False, **body: Any) -> dict[str, Any]:
    """The Anthropic body for an OpenAI body (one user message unless `messages` is given)."""
    body.setdefault("messages", USER)
    return request_body(body, MODEL, stream=stream)


def tool_call(cid: str, name: str, args: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def fixture_json(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def chat_request(**body: Any) -> ChatRequest:
    body.setdefault("model", MODEL)
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return parse_chat(orjson.dumps(body), {})


def data_events(raw: bytes) -> list[Any]:
    """The `data:` payloads of OpenAI SSE bytes, parsed; "[DONE]" kept as a string."""
    out: list[Any] = []
    for ev in EventSplitter().feed(raw):
        out.append("[DONE]" if ev.data == b"[DONE]" else orjson.loads(ev.data))
    return out


def translate(raw: bytes, include_usage: bool) -> tuple[StreamTranslator, list[Any]]:
    tr = StreamTranslator(MODEL, include_usage, TARGET, created=1700000000)
    out = b"".join(tr.feed(ev.event, ev.data) for ev in EventSplitter().feed(raw))
    return tr, data_events(out)


# --- request mapping ----------------------------------------------------------------------------


def test_request_maps_system_images_tools_tool_calls_tool_results_and_options_to_a_messages_body() -> None:
    req = parse_chat((FIXTURES / "openai_request_full.json").read_bytes(), {})
    assert request_body(req.body, MODEL, stream=True) == fixture_json("messages_request_full.json")


def test_request_keeps_cache_control_breakpoints_on_system_blocks() -> None:
    cc = {"type": "ephemeral"}
    system = {"role": "system", "content": [{"type": "text", "text": "Long doc", "cache_control": cc}]}
    out = mapped(messages=[system, *USER])
    assert out["system"] == [{"type": "text", "text": "Long doc", "cache_control": cc}]


def test_request_merges_consecutive_same_role_messages_so_turns_alternate() -> None:
    turns = [("user", "a"), ("user", "b"), ("assistant", "c"), ("assistant", "d")]
    out = mapped(messages=[{"role": r, "content": c} for r, c in turns])
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert out["messages"][0]["content"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]


def test_request_defaults_max_tokens_because_anthropic_requires_it() -> None:
    out = mapped()
    assert out["max_tokens"] == 4096 and out["messages"] == [{"role": "user", "content": "x"}] and "stream" not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "noop"}}, {"type": "tool", "name": "noop"}),
    ],
)
def test_request_maps_tool_choice(choice: Any, expected: dict[str, Any]) -> None:
    out = mapped(tools=NOOP, tool_choice=choice)
    assert out["tool_choice"] == expected


def test_request_turns_parallel_tool_calls_false_into_disable_parallel_tool_use() -> None:
    out = mapped(tools=NOOP, parallel_tool_calls=False)
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_request_prefers_max_completion_tokens_and_keeps_stop_lists() -> None:
    out = mapped(max_tokens=10, max_completion_tokens=20, stop=["a", "b"])
    assert out["max_tokens"] == 20
    assert out["stop_sequences"] == ["a", "b"]


def user_parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [tool_call("c1", "f", "{not json")]}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {"messages": [{"role": "assistant", "content": None, "tool_calls": [tool_call("c1", "f", "[1, 2]")]}]},
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
        ({"messages": user_parts(image("ftp://x/y.png"))}, "messages[0].content[0].image_url"),
        ({"messages": user_parts(image("data:image/png,raw"))}, "messages[0].content[0].image_url.url"),
        ({"messages": user_parts(image("data:image/bmp;base64,Qk0="))}, "messages[0].content[0].image_url"),
        ({"messages": user_parts({"type": "input_audio", "input_audio": {}})}, "messages[0].content[0]"),
        ({"messages": [{"role": "system", "content": "only a system prompt"}]}, "messages"),
        ({"tools": NOOP, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"stop": 5}, "stop"),
        ({"n": 2}, "n"),
    ],
)
def test_request_rejects_shapes_anthropic_cannot_take_naming_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises((errors.InvalidRequest, errors.NotSupported)) as e:
        mapped(**body)
    assert e.value.param == param
    assert e.value.status_code == 400


# --- response mapping ---------------------------------------------------------------------------


def test_message_with_text_tool_use_and_cache_usage_becomes_an_openai_chat_completion() -> None:
    result = chat_result(fixture_json("message_text_tool_cache.json"), MODEL, 1700000000, TARGET)
    body = orjson.loads(result.body)
    assert body["id"] == "msg_01RCfixtureTextToolCache"
    assert (body["object"], body["created"]) == ("chat.completion", 1700000000)
    assert body["model"] == "claude-sonnet-4-20250514"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the forecast for Lisbon. One moment."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_01RCfixtureWeather"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Lisbon", "unit": "celsius"}
    assert body["usage"] == {
        "prompt_tokens": 1542,
        "completion_tokens": 57,
        "total_tokens": 1599,
        "prompt_tokens_details": {"cached_tokens": 1200, "cache_write_tokens": 300},
    }
    assert body["service_tier"] == "standard"  # the message's usage.service_tier, where OpenAI has it
    assert result.usage == Usage(
        prompt_tokens=1542, completion_tokens=57, cached_tokens=1200, cache_write_tokens=300, service_tier="standard"
    )
    assert result.finish_reason == "tool_calls"
    assert result.output_text == "I'll check the forecast for Lisbon. One moment."


def test_response_that_is_not_a_message_is_malformed() -> None:
    with pytest.raises(errors.MalformedResponse):
        chat_result({"type": "completion", "completion": "hi"}, MODEL, 0, TARGET)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, None),
    ],
)
def test_stop_reasons_map_to_openai_finish_reasons(stop: str | None, finish: str | None) -> None:
    assert finish_reason(stop) == finish


# --- stream translation -------------------------------------------------------------------------


def test_stream_fixture_becomes_openai_chunks_with_text_then_an_indexed_tool_call() -> None:
    tr, events = translate((FIXTURES / "stream_text_tool.sse").read_bytes(), include_usage=False)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01RCfixtureStream" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d["content"] for d in deltas if d.get("content")] == ["Checking", " the weather."]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_01RCfixtureStreamTool",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city": "Lisbon"}'
    assert all(c["index"] == 0 for c in calls)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    state = tr.state
    assert state.done and state.finish_reason == "tool_calls" and state.first_token_ns is not None
    assert "".join(state.text) == "Checking the weather."
    assert state.usage == Usage(prompt_tokens=125, completion_tokens=31, cached_tokens=100)


@settings(max_examples=50, deadline=None, database=None)
@given(st.lists(st.integers(min_value=1, max_value=2000), max_size=12))
def test_stream_translation_does_not_depend_on_how_upstream_reads_split_the_bytes(cuts: list[int]) -> None:
    raw = (FIXTURES / "stream_text_tool.sse").read_bytes()
    first = StreamTranslator(MODEL, True, TARGET, 0)
    whole = b"".join(first.feed(e.event, e.data) for e in EventSplitter().feed(raw))
    tr, splitter, out = StreamTranslator(MODEL, True, TARGET, 0), EventSplitter(), []
    bounds = [0, *sorted(c % len(raw) for c in cuts), len(raw)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        out.extend(tr.feed(e.event, e.data) for e in splitter.feed(raw[a:b]))
    assert b"".join(out) == whole and tr.state.done


def test_stream_sends_the_usage_chunk_only_when_the_client_asked_for_it() -> None:
    raw = (FIXTURES / "stream_text_tool.sse").read_bytes()
    _, with_usage = translate(raw, include_usage=True)
    usage_chunk = with_usage[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 125
    assert usage_chunk["usage"]["completion_tokens"] == 31
    assert usage_chunk["usage"]["prompt_tokens_details"]["cached_tokens"] == 100
    tr, without = translate(raw, include_usage=False)
    assert all("usage" not in e for e in without[:-1])
    assert tr.state.usage is not None  # the gateway learns usage either way


def test_stream_thinking_deltas_become_reasoning_content() -> None:
    tr = StreamTranslator(MODEL, False, TARGET, created=0)
    event = {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}}
    out = tr.feed("content_block_delta", orjson.dumps(event))
    assert data_events(out)[0]["choices"][0]["delta"] == {"reasoning_content": "Hmm"}
    assert tr.state.first_token_ns is not None


def test_stream_error_event_raises_its_classified_error() -> None:
    tr = StreamTranslator(MODEL, False, TARGET, created=0)
    with pytest.raises(errors.Overloaded) as e:
        tr.feed("error", b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}')
    assert e.value.upstream_status == 529 and e.value.target == TARGET and e.value.retryable


def test_stream_event_that_is_not_json_is_malformed() -> None:
    tr = StreamTranslator(MODEL, False, TARGET, created=0)
    with pytest.raises(errors.MalformedResponse):
        tr.feed("content_block_delta", b'{"type": "content_block_delta", ')


# --- error classification -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "status", "headers", "cls"),
    [
        ("error_overloaded_529.json", 529, {"retry-after": "7"}, errors.Overloaded),
        ("error_rate_limit_429.json", 429, {"retry-after": "12"}, errors.RateLimited),
        ("error_prompt_too_long_400.json", 400, {}, errors.ContextLength),
        ("error_authentication_401.json", 401, {}, errors.UpstreamAuth),
    ],
)
def test_error_bodies_classify_into_the_error_tree(
    fixture: str, status: int, headers: dict[str, str], cls: type
) -> None:
    err = classify(status, (FIXTURES / fixture).read_bytes(), headers, TARGET)
    assert type(err) is cls
    assert err.target == TARGET and err.upstream_status == status
    if headers:
        assert err.retry_after == float(headers["retry-after"])


@pytest.mark.parametrize(
    ("status", "etype", "message", "cls"),
    [
        (400, "invalid_request_error", "Output blocked by content filtering policy", errors.ContentPolicy),
        (400, "invalid_request_error", "max_tokens: Field required", errors.UpstreamBadRequest),
        (403, "permission_error", "Your API key does not have permission", errors.UpstreamAuth),
        (404, "not_found_error", "model: claude-9", errors.UpstreamNotFound),
        (413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", errors.ContextLength),
        (500, "api_error", "Internal server error", errors.Upstream5xx),
        (503, "", "upstream connect error", errors.Upstream5xx),
    ],
)
def test_anthropic_error_types_classify_by_type_then_status(status: int, etype: str, message: str, cls: type) -> None:
    body = orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})
    err = classify(status, body, {}, TARGET)
    assert type(err) is cls and err.upstream_status == status


def test_low_credit_balance_is_a_quota_rate_limit_not_a_bad_request() -> None:
    for status, etype in ((429, "rate_limit_error"), (400, "invalid_request_error")):
        message = "Your credit balance is too low to access the API."
        body = {"type": "error", "error": {"type": etype, "message": message}}
        err = classify(status, orjson.dumps(body), {}, TARGET)
        assert isinstance(err, errors.RateLimited) and err.quota


def test_auth_error_message_never_contains_the_api_key() -> None:
    body = {"type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key {KEY}"}}
    err = classify(401, orjson.dumps(body), {}, TARGET, secret=KEY)
    assert KEY not in err.message and KEY not in err.body_bytes().decode()


# --- end to end against the fake upstream on loopback -------------------------------------------


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    server = ThreadedServer(FakeUpstream(api_key=KEY)).start()
    yield server.url
    server.stop()


def provider_config(url: str, api_key: str | None = KEY, idle_s: float = 5.0) -> ProviderConfig:
    return ProviderConfig(
        name="claude",
        kind="anthropic",
        adapter="anthropic",
        base_url=url + "/v1",
        api_key=api_key,
        timeouts=Timeouts(connect_s=2, first_token_s=5, idle_s=idle_s, total_s=10),
    )


def run(config: ProviderConfig, fn: Callable[[AnthropicProvider], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with UpstreamClient() as client:
            return await fn(AnthropicProvider(config, client))

    return asyncio.run(main())


async def collect(provider: AnthropicProvider, req: ChatRequest, model: str) -> tuple[bytes, Any]:
    stream = await provider.chat_stream(req, model)
    parts = []
    try:
        async for part in stream:
            parts.append(part)
    finally:
        await stream.aclose()
    return b"".join(parts), stream.state


def test_e2e_non_stream_answer_is_an_openai_completion_with_cache_usage(fake_url: str) -> None:
    req = chat_request(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    model = f"{MODEL}@tokens=5,prompt_tokens=50,cached=30,cache_write=10"
    result = run(provider_config(fake_url), lambda p: p.chat(req, model))
    body = orjson.loads(result.body)
    assert body["object"] == "chat.completion" and body["id"].startswith("msg_")
    assert body["choices"][0]["message"]["content"] == "the quick brown fox jumps"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert result.usage == Usage(
        prompt_tokens=50, completion_tokens=5, cached_tokens=30, cache_write_tokens=10, service_tier="standard"
    )
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 30


def test_e2e_request_carries_anthropic_headers_and_the_mapped_body(fake_url: str) -> None:
    req = chat_request(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    run(provider_config(fake_url), lambda p: p.chat(req, MODEL + "@tokens=1"))

    async def last() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(fake_url + "/_fake/requests") as r:
            return (await r.json())[-1]

    logged = asyncio.run(last())
    assert logged["path"] == "/messages"
    assert logged["headers"]["anthropic-version"] == "2023-06-01"
    assert "x-api-key" not in logged["headers"]  # the fake never logs secrets
    assert logged["body"]["system"] == "Be brief."
    assert logged["body"]["max_tokens"] == 4096


def test_e2e_tool_call_answer_becomes_openai_tool_calls(fake_url: str) -> None:
    req = chat_request(tools=[{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}])
    result = run(provider_config(fake_url), lambda p: p.chat(req, MODEL + "@tool_call"))
    message = orjson.loads(result.body)["choices"][0]["message"]
    assert result.finish_reason == "tool_calls" and message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "search", "arguments": '{"query":"fox"}'}


@pytest.mark.parametrize("include_usage", [True, False])
def test_e2e_stream_yields_openai_chunks_and_fills_state(fake_url: str, include_usage: bool) -> None:
    req = chat_request(stream=True, stream_options={"include_usage": include_usage})
    raw, state = run(provider_config(fake_url), lambda p: collect(p, req, MODEL + "@tokens=4,cached=2,prompt_tokens=9"))
    assert raw.endswith(DONE_EVENT)
    events = data_events(raw)
    chunks = [e for e in events if e != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "the quick brown fox" == "".join(state.text)
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "stop"
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage:
        assert usage_chunks[0]["usage"]["prompt_tokens"] == 9
    assert state.done and state.finish_reason == "stop" and state.first_token_ns is not None
    assert state.usage == Usage(prompt_tokens=9, completion_tokens=4, cached_tokens=2, service_tier="standard")


def test_e2e_streamed_tool_call_arrives_as_indexed_tool_call_chunks(fake_url: str) -> None:
    req = chat_request(stream=True, tools=[{"type": "function", "function": {"name": "search"}}])
    raw, state = run(provider_config(fake_url), lambda p: collect(p, req, MODEL + "@tool_call"))
    deltas = [c["choices"][0]["delta"] for c in data_events(raw)[:-1]]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"] == "toolu_fake0001" and calls[0]["function"]["name"] == "search"
    assert orjson.loads("".join(c["function"]["arguments"] for c in calls)) == {"query": "fox"}
    assert state.finish_reason == "tool_calls"


def test_e2e_refusal_finishes_with_content_filter(fake_url: str) -> None:
    result = run(provider_config(fake_url), lambda p: p.chat(chat_request(), MODEL + "@content_policy"))
    assert result.finish_reason == "content_filter"


def test_e2e_overloaded_529_raises_overloaded_with_retry_after(fake_url: str) -> None:
    with pytest.raises(errors.Overloaded) as e:
        run(provider_config(fake_url), lambda p: p.chat(chat_request(), MODEL + "@error=529,retry_after=2"))
    assert e.value.retry_after == 2 and e.value.upstream_status == 529
    assert e.value.target == f"claude/{MODEL}@error=529,retry_after=2"


def test_e2e_rate_limit_429_raises_rate_limited_with_retry_after(fake_url: str) -> None:
    with pytest.raises(errors.RateLimited) as e:
        run(provider_config(fake_url), lambda p: p.chat(chat_request(stream=True), MODEL + "@error=429,retry_after=3"))
    assert type(e.value) is errors.RateLimited and e.value.retry_after == 3 and not e.value.quota


def test_e2e_prompt_too_long_raises_context_length(fake_url: str) -> None:
    with pytest.raises(errors.ContextLength) as e:
        run(provider_config(fake_url), lambda p: p.chat(chat_request(), MODEL + "@context_length"))
    assert "prompt is too long" in e.value.message and e.value.upstream_status == 400


def test_e2e_wrong_key_raises_upstream_auth_whose_message_does_not_contain_the_key(fake_url: str) -> None:
    wrong = "sk-ant-wrong-key-9876543210"
    with pytest.raises(errors.UpstreamAuth) as e:
        run(provider_config(fake_url, api_key=wrong), lambda p: p.chat(chat_request(), MODEL))
    assert wrong not in e.value.message and KEY not in e.value.message
    assert e.value.upstream_status == 401 and not e.value.retryable


def test_e2e_stream_cut_mid_way_raises_stream_cut(fake_url: str) -> None:
    req = chat_request(stream=True)
    with pytest.raises(errors.StreamCut):
        run(provider_config(fake_url), lambda p: collect(p, req, MODEL + "@cut_after=4,tps=1000"))


def test_e2e_malformed_stream_event_raises_malformed_response(fake_url: str) -> None:
    req = chat_request(stream=True)
    with pytest.raises(errors.MalformedResponse):
        run(provider_config(fake_url), lambda p: collect(p, req, MODEL + "@malformed_after=4"))


def test_e2e_stalled_stream_raises_idle_timeout(fake_url: str) -> None:
    req = chat_request(stream=True)
    with pytest.raises(errors.Timeout) as e:
        run(provider_config(fake_url, idle_s=0.3), lambda p: collect(p, req, MODEL + "@stall_after=4,stall_ms=2000"))
    assert e.value.phase == "idle"


def test_e2e_embeddings_are_not_supported(fake_url: str) -> None:
    with pytest.raises(errors.NotSupported) as e:
        run(provider_config(fake_url), lambda p: p.embeddings({"input": "x"}, MODEL))
    assert e.value.message == "provider 'claude' (anthropic) does not offer embeddings" and e.value.param == "model"


# --- the fake speaks Anthropic's wire format ----------------------------------------------------


def raw_post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async def main() -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession() as s, s.post(url + "/v1/messages", json=body, headers=headers) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()

    return asyncio.run(main())


def test_fake_streams_events_in_anthropic_order(fake_url: str) -> None:
    body = {"model": MODEL + "@tokens=3", "max_tokens": 64, "stream": True, "messages": USER}
    status, headers, raw = raw_post(fake_url, body, HEADERS)
    assert status == 200 and headers["content-type"].startswith("text/event-stream") and headers["request-id"]
    events = EventSplitter().feed(raw)
    names = [ev.event for ev in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(orjson.loads(ev.data)["type"] == ev.event for ev in events)
    start = orjson.loads(events[0].data)["message"]
    assert start["id"].startswith("msg_") and start["content"] == [] and start["stop_reason"] is None
    counts = {"input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"}
    assert counts <= set(start["usage"])


@pytest.mark.parametrize(
    ("body", "headers", "status", "etype"),
    [
        ({"model": MODEL, "max_tokens": 8, "messages": USER}, {"x-api-key": KEY}, 400, "invalid_request_error"),
        (
            {"model": MODEL, "max_tokens": 8, "messages": USER},
            {**HEADERS, "x-api-key": "no"},
            401,
            "authentication_error",
        ),
        ({"model": MODEL, "messages": USER}, HEADERS, 400, "invalid_request_error"),
        ({"model": MODEL, "max_tokens": 8}, HEADERS, 400, "invalid_request_error"),
        ({"model": MODEL + "@error=500", "max_tokens": 8, "messages": USER}, HEADERS, 500, "api_error"),
    ],
)
def test_fake_requires_version_header_key_max_tokens_and_messages(
    fake_url: str, body: dict[str, Any], headers: dict[str, str], status: int, etype: str
) -> None:
    got, resp_headers, raw = raw_post(fake_url, body, headers)
    err = orjson.loads(raw)
    assert got == status and err["type"] == "error" and err["error"]["type"] == etype
    assert resp_headers["request-id"] == err["request_id"]


# --- structured output (`response_format`) --------------------------------------------------------


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_response_format_becomes_one_forced_tool_and_its_input_comes_back_as_the_text() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
    body = request_body({"messages": [{"role": "user", "content": "x"}], "response_format": fmt}, MODEL, stream=False)
    assert body["tools"] == [
        {"name": ANSWER_TOOL, "description": "Give your answer as JSON matching this schema.", "input_schema": SCHEMA}
    ]
    assert body["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
    answer = {
        "type": "message",
        "id": "msg_1",
        "model": MODEL,
        "content": [{"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {"city": "Paris"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }
    result = chat_result(answer, MODEL, 0, TARGET)
    choice = orjson.loads(result.body)["choices"][0]
    assert orjson.loads(choice["message"]["content"]) == {"city": "Paris"}
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] == "stop"
    with pytest.raises(errors.NotSupported):  # with tools of its own, the forced tool would take their place
        request_body(
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": fmt,
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            MODEL,
            stream=False,
        )


def test_a_streamed_structured_answer_arrives_as_text_deltas() -> None:
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_1", "model": MODEL, "usage": {}}}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": ANSWER_TOOL, "input": {}},
            },
        ),
        *(
            (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": p}},
            )
            for p in ('{"city"', ': "Paris"}')
        ),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    tr = StreamTranslator(MODEL, False, TARGET, created=0)
    out = data_events(b"".join(tr.feed(name, orjson.dumps(obj)) for name, obj in events))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in out if isinstance(c, dict) and c["choices"])
    assert orjson.loads(text) == {"city": "Paris"}
    assert tr.state.finish_reason == "stop" and tr.state.first_token_ns is not None
    assert not any("tool_calls" in c["choices"][0]["delta"] for c in out if isinstance(c, dict) and c["choices"])
