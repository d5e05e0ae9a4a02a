"""`relaycast serve` driven with the official openai SDK against the fake upstream on loopback."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import Fake, GatewayProcess


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=15)


MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]


def test_non_streaming_completion_comes_back_with_usage_and_served_by_headers(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fakeai/gpt-4o-mini@tokens=7", messages=MSGS)
    done = raw.parse()
    assert done.choices[0].message.content.split() == "the quick brown fox jumps over a".split()
    assert done.choices[0].finish_reason == "stop"
    assert done.usage.completion_tokens == 7
    assert raw.headers["x-relaycast-target"] == "fakeai/gpt-4o-mini@tokens=7"
    assert raw.headers["x-relaycast-attempts"] == "1"
    assert raw.headers["x-request-id"].startswith("req_")


def test_streaming_completion_is_one_clean_stream_without_usage_unless_asked(client: openai.OpenAI, fake: Fake) -> None:
    chunks = list(client.chat.completions.create(model="fakeai/gpt-4o-mini@tokens=5", messages=MSGS, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "the quick brown fox jumps"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices for c in chunks), "the usage-only chunk must not reach a client that did not ask for it"
    # ... but usage was asked of the upstream all the same, for the gateway's own accounting.
    assert fake.last_body()["stream_options"] == {"include_usage": True}


def test_streaming_passes_the_usage_chunk_when_the_client_asks(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fakeai/gpt-4o-mini@tokens=4,cached=3,reasoning=2",
            messages=MSGS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert usage.completion_tokens == 4
    assert usage.prompt_tokens_details.cached_tokens == 3
    assert usage.completion_tokens_details.reasoning_tokens == 2


def test_async_client_streams_and_completes_concurrently(gateway: GatewayProcess) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0) as ac:

            async def one(i: int) -> str:
                if i % 2:
                    r = await ac.chat.completions.create(model="fakeai/gpt-4o", messages=MSGS)
                    return r.choices[0].message.content
                s = await ac.chat.completions.create(model="fakeai/gpt-4o", messages=MSGS, stream=True)
                return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

            return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(run())
    assert len(set(results)) == 1 and results[0].startswith("the quick brown fox")


def test_parameters_the_gateway_does_not_interpret_pass_through_unchanged(client: openai.OpenAI, fake: Fake) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    client.chat.completions.create(
        model="fakeai/gpt-4o-mini",
        messages=MSGS,
        tools=tools,
        tool_choice="auto",
        response_format={"type": "json_object"},
        seed=42,
        logprobs=True,
        top_logprobs=2,
        n=1,
        stop=["\n\n"],
        temperature=0.3,
        extra_body={"custom_vendor_flag": {"a": [1, 2]}},
    )
    sent = fake.last_body()
    assert sent["model"] == "gpt-4o-mini"
    assert sent["tools"] == tools
    assert sent["tool_choice"] == "auto"
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["seed"], sent["logprobs"], sent["top_logprobs"], sent["n"], sent["stop"]) == (42, True, 2, 1, ["\n\n"])
    assert sent["temperature"] == 0.3
    assert sent["custom_vendor_flag"] == {"a": [1, 2]}


def test_openrouter_extensions_are_accepted_and_not_sent_to_an_openai_upstream(
    client: openai.OpenAI, fake: Fake
) -> None:
    r = client.chat.completions.create(
        model="fakeai/gpt-4o-mini",
        messages=MSGS,
        user="alice",
        extra_body={
            "models": ["fakeai/gpt-4o"],
            "provider": {"order": ["fakeai"]},
            "session_id": "s1",
            "trace": {"trace_name": "t"},
        },
        extra_headers={"HTTP-Referer": "https://app.example", "X-Title": "My App"},
    )
    assert r.choices[0].message.content
    sent = fake.last_body()
    assert sent["user"] == "alice"
    for k in ("models", "provider", "session_id", "trace"):
        assert k not in sent


def test_tool_calls_come_back_in_openai_shape(client: openai.OpenAI) -> None:
    tools = [
        {"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object", "properties": {}}}}
    ]
    r = client.chat.completions.create(model="fakeai/gpt-4o-mini@tool_call", messages=MSGS, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert (call.function.name, r.choices[0].finish_reason) == ("search_docs", "tool_calls")


def test_models_lists_every_alias_and_configured_provider_model(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"fast", "resilient", "all-down", "refusing"} <= ids
    assert {"fakeai/gpt-4o-mini", "fakeai/gpt-4o", "claude/claude-3-5-haiku-latest"} <= ids


def test_a_bare_model_name_resolves_to_the_one_provider_that_lists_it(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MSGS)
    assert raw.headers["x-relaycast-target"] == "fakeai/gpt-4o"


def test_embeddings_go_through(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="fakeai/text-embedding-3-small", input=["a", "bb"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens >= 2


def test_embeddings_on_a_provider_without_them_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="claude/claude-3-5-haiku-latest", input="x")
    assert "embeddings" in e.value.message


def test_anthropic_models_answer_in_openai_format_streaming_and_not(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="claude/claude-3-5-haiku-latest@tokens=3", messages=MSGS)
    assert r.choices[0].message.content == "the quick brown"
    assert r.usage.completion_tokens == 3
    chunks = list(
        client.chat.completions.create(
            model="claude/claude-3-5-haiku-latest@tokens=3,cached=5",
            messages=MSGS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "the quick brown"
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 5


def test_the_client_request_id_is_kept_when_it_sends_one(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini", messages=MSGS, extra_headers={"x-request-id": "trace-abc-123"}
    )
    assert raw.headers["x-request-id"] == "trace-abc-123"
