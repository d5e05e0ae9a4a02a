"""What changes a price beyond token counts lands on the record, end to end: the official openai SDK against a
real gateway (in process, on loopback) whose upstream is the fake, speaking OpenAI chat, Anthropic Messages and
the Responses API, streaming and not. The client sees the same counts in its own API's places."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from relaycast.config import parse
from relaycast.records import RequestRecord, Usage
from relaycast.server.app import Gateway
from relaycast.server.runner import ThreadedServer
from tests.capture import Sink
from tests.conftest import UPSTREAM_KEY, Fake

KEY = "rc-usage-tiers-key-01"
CLAUDE_TIERS = "prompt_tokens=900,cached=100,cache_write=200,cache_write_1h=300,web_search=2,service_tier=priority"


@pytest.fixture(scope="module")
def gw(fake: Fake) -> Iterator[tuple[openai.OpenAI, Sink]]:
    config = f"""
keys:
  - name: app
    secret: {KEY}
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake.url}
    api_key: {UPSTREAM_KEY}
  - name: oai
    kind: openai_compatible
    base_url: {fake.url}
    api_key: {UPSTREAM_KEY}
    responses_api: true
  - name: claude
    kind: anthropic
    base_url: {fake.url}
    api_key: {UPSTREAM_KEY}
"""
    sink = Sink()
    with ThreadedServer(Gateway(parse(config, env={}), sinks=[sink])) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=15), sink


def usage_of(sink: Sink, request_id: str) -> Usage:
    rec: RequestRecord = sink.wait_for(request_id)
    assert rec.status_code == 200
    (attempt,) = rec.attempts
    assert attempt.usage is not None
    return attempt.usage


def test_openai_chat_audio_tokens_and_tier_reach_the_record(gw: tuple[openai.OpenAI, Sink]) -> None:
    client, sink = gw
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-audio@prompt_tokens=120,audio_in=45,audio_out=30,tokens=40,service_tier=priority",
        messages=[{"role": "user", "content": "Say it aloud."}],
    )
    answer = raw.parse()
    assert answer.service_tier == "priority"  # forwarded as the upstream sent it
    assert usage_of(sink, raw.headers["x-relaycast-request-id"]) == Usage(
        prompt_tokens=120, completion_tokens=40, input_audio_tokens=45, output_audio_tokens=30, service_tier="priority"
    )


def test_anthropic_cache_ttls_searches_and_tier_reach_the_record_and_a_chat_client(
    gw: tuple[openai.OpenAI, Sink],
) -> None:
    client, sink = gw
    raw = client.chat.completions.with_raw_response.create(
        model="claude/claude-sonnet-4-5@tokens=5," + CLAUDE_TIERS,
        messages=[{"role": "user", "content": "Weather in Lisbon?"}],
    )
    answer = raw.parse()
    expected = Usage(
        prompt_tokens=900,
        completion_tokens=5,
        cached_tokens=100,
        cache_write_tokens=500,
        cache_write_1h_tokens=300,
        web_searches=2,
        service_tier="priority",
    )
    assert usage_of(sink, raw.headers["x-relaycast-request-id"]) == expected
    assert answer.service_tier == "priority"
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cache_write_tokens == 500
    assert (answer.usage.model_extra or {})["server_tool_use"] == {"web_search_requests": 2}


def test_an_anthropic_stream_gets_the_searches_counted_at_its_end(gw: tuple[openai.OpenAI, Sink]) -> None:
    client, sink = gw
    with client.chat.completions.with_streaming_response.create(
        model="claude/claude-sonnet-4-5@tokens=4," + CLAUDE_TIERS,
        messages=[{"role": "user", "content": "Weather in Lisbon?"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        chunks = list(raw.parse())
        request_id = raw.headers["x-relaycast-request-id"]
    assert chunks[-1].service_tier == "priority" and chunks[-1].usage is not None
    usage = usage_of(sink, request_id)
    assert (usage.web_searches, usage.cache_write_1h_tokens, usage.cache_write_tokens) == (2, 300, 500)
    assert (usage.completion_tokens, usage.service_tier) == (4, "priority")


def test_responses_web_search_calls_and_tier_reach_the_record(gw: tuple[openai.OpenAI, Sink]) -> None:
    client, sink = gw
    raw = client.responses.with_raw_response.create(
        model="oai/gpt-5@tokens=3,web_search=3,service_tier=flex,reasoning=2", input="Weather in Lisbon?"
    )
    response = raw.parse()
    assert [item.type for item in response.output].count("web_search_call") == 3
    usage = usage_of(sink, raw.headers["x-relaycast-request-id"])
    assert (usage.web_searches, usage.service_tier, usage.reasoning_tokens) == (3, "flex", 2)


def test_a_responses_stream_counts_its_web_search_calls(gw: tuple[openai.OpenAI, Sink]) -> None:
    client, sink = gw
    with client.responses.with_streaming_response.create(
        model="oai/gpt-5@tokens=3,web_search=1,service_tier=priority", input="Weather in Lisbon?", stream=True
    ) as raw:
        events = list(raw.parse())
        request_id = raw.headers["x-relaycast-request-id"]
    assert events[-1].type == "response.completed"
    usage = usage_of(sink, request_id)
    assert (usage.web_searches, usage.service_tier) == (1, "priority")
