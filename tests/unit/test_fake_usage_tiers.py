"""The fake upstream reports every priced quantity a behaviour asks for, in each wire format it speaks, read with
the official SDKs: one-hour cache writes (`cache_write_1h`), web searches (`web_search`), the service tier
(`service_tier`) and audio tokens (`audio_in`, `audio_out`); streams included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

from relaycast.fake.behaviour import BadBehaviour, parse
from relaycast.fake.server import FakeUpstream
from relaycast.server.runner import ThreadedServer

KEY = "sk-fake-tiers-test-key-0123456789"
TIERS = "prompt_tokens=900,cached=100,cache_write=200,cache_write_1h=300,web_search=2,service_tier=priority"


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    s = ThreadedServer(FakeUpstream(api_key=KEY)).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def oai(server: ThreadedServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def claude(server: ThreadedServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)


OAI_USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Lisbon?"}]
CLAUDE_USER: list[MessageParam] = [{"role": "user", "content": "Weather in Lisbon?"}]


def extra(model: Any) -> dict[str, Any]:
    """A pydantic model's fields the SDK does not declare (relaycast's carriers in OpenAI-shaped usage)."""
    return dict(model.model_extra or {})


# --- Anthropic Messages -----------------------------------------------------------------------------


def test_anthropic_message_usage_has_every_tier(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="claude-x@" + TIERS, max_tokens=100, messages=CLAUDE_USER)
    u = msg.usage
    assert u.input_tokens == 900 - 100 - 200 - 300  # Anthropic's input_tokens leave out cache reads and writes
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (100, 500)
    assert u.cache_creation is not None
    assert (u.cache_creation.ephemeral_5m_input_tokens, u.cache_creation.ephemeral_1h_input_tokens) == (200, 300)
    assert u.server_tool_use is not None and u.server_tool_use.web_search_requests == 2
    assert u.service_tier == "priority"


def test_anthropic_stream_reports_searches_in_message_delta(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(model="claude-x@" + TIERS, max_tokens=100, messages=CLAUDE_USER) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.service_tier == "priority"
    assert start.message.usage.cache_creation is not None
    assert start.message.usage.cache_creation.ephemeral_1h_input_tokens == 300
    assert start.message.usage.server_tool_use is None  # counted when the searches are done: in message_delta
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.usage.server_tool_use is not None and delta.usage.server_tool_use.web_search_requests == 2
    assert final.usage.server_tool_use is not None and final.usage.server_tool_use.web_search_requests == 2


def test_anthropic_default_tier_is_standard(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="claude-x", max_tokens=10, messages=CLAUDE_USER)
    assert msg.usage.service_tier == "standard" and msg.usage.server_tool_use is None


# --- OpenAI chat completions ------------------------------------------------------------------------


def test_chat_reports_audio_tiers_and_searches(oai: openai.OpenAI) -> None:
    model = "gpt-4o@" + TIERS + ",audio_in=40,audio_out=6,tokens=8"
    r = oai.chat.completions.create(model=model, messages=OAI_USER)
    assert r.service_tier == "priority"
    u = r.usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens) == (900, 8)
    assert u.prompt_tokens_details is not None and u.completion_tokens_details is not None
    assert (u.prompt_tokens_details.audio_tokens, u.completion_tokens_details.audio_tokens) == (40, 6)
    assert (u.prompt_tokens_details.cached_tokens, u.prompt_tokens_details.cache_write_tokens) == (100, 500)
    assert extra(u)["cache_creation"] == {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300}
    assert extra(u)["server_tool_use"] == {"web_search_requests": 2}


def test_chat_stream_chunks_carry_the_tier_and_the_usage_chunk_the_counts(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o@service_tier=flex,audio_in=5,audio_out=3,tokens=4",
        messages=OAI_USER,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert {c.service_tier for c in chunks} == {"flex"}
    u = chunks[-1].usage
    assert u is not None and u.prompt_tokens_details is not None and u.completion_tokens_details is not None
    assert (u.prompt_tokens_details.audio_tokens, u.completion_tokens_details.audio_tokens) == (5, 3)


def test_chat_default_answer_says_default_tier_and_no_extras(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="gpt-4o@tokens=2", messages=OAI_USER)
    assert r.service_tier == "default"
    assert r.usage is not None and not extra(r.usage)


# --- OpenAI Responses -------------------------------------------------------------------------------


def test_responses_reports_searches_as_web_search_call_items(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="gpt-5@" + TIERS + ",tokens=3", input="Weather in Lisbon?")
    assert r.service_tier == "priority"
    assert [item.type for item in r.output] == ["web_search_call", "web_search_call", "message"]
    assert r.output_text == "the quick brown"
    assert r.usage is not None and r.usage.input_tokens_details.cache_write_tokens == 500
    assert extra(r.usage)["cache_creation"] == {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300}


def test_responses_stream_has_the_web_search_call_events(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-5@web_search=1,service_tier=flex,tokens=2", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[2:7] == [
        "response.output_item.added",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.output_item.done",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.service_tier == "flex"
    assert [item.type for item in done.response.output] == ["web_search_call", "message"]
    text_events = [e for e in events if e.type == "response.output_text.delta"]
    assert {e.output_index for e in text_events} == {1}


# --- the behaviour syntax ---------------------------------------------------------------------------


def test_service_tier_takes_a_name_and_refuses_anything_else() -> None:
    assert parse("service_tier=scale").service_tier == "scale"
    for bad in ("service_tier=", "service_tier=Priority Tier", "service_tier=" + "x" * 33):
        with pytest.raises(BadBehaviour):
            parse(bad)
    with pytest.raises(BadBehaviour):
        parse("web_search=two")
