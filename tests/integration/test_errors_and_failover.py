"""Upstream errors: classified once, rendered in OpenAI's format with the right status, failed over when their class allows."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, GatewayProcess

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=15)


def _code(e: openai.APIStatusError) -> str:
    return e.body["code"] if isinstance(e.body, dict) else ""


def test_fails_over_to_the_next_target_when_the_first_answers_503(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=MSGS)
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-relaycast-attempts"] == "2"
    assert raw.headers["x-relaycast-target"] == "fakeai/gpt-4o-mini"


def test_stream_fails_over_before_the_first_byte_and_the_client_sees_one_clean_stream(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fast", messages=MSGS, stream=True)
    chunks = list(raw.parse())
    assert raw.headers["x-relaycast-attempts"] == "2"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len({c.id for c in chunks}) == 1


def test_connection_refused_and_rate_limit_fail_over_to_a_healthy_target(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="resilient", messages=MSGS)
    assert raw.headers["x-relaycast-attempts"] == "3"
    assert raw.headers["x-relaycast-target"] == "fakeai/gpt-4o"


def test_when_every_target_fails_the_client_gets_one_error_naming_each_attempt(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="all-down", messages=MSGS)
    assert e.value.status_code == 502
    assert _code(e.value) == "upstream_5xx"
    assert "all 2 targets failed" in e.value.message
    assert e.value.response.headers["x-relaycast-attempts"] == "2"


def test_rate_limit_is_a_429_with_retry_after_and_its_class(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="fakeai/gpt-4o-mini@error=429,retry_after=7", messages=MSGS)
    assert _code(e.value) == "rate_limit"
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.response.headers["x-relaycast-error-class"] == "rate_limit"


def test_content_policy_refusal_is_not_failed_over_and_keeps_its_class(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="refusing", messages=MSGS)
    assert _code(e.value) == "content_policy"
    assert e.value.response.headers["x-relaycast-attempts"] == "1"


def test_context_length_is_a_400_with_its_class(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fakeai/gpt-4o@context_length", messages=MSGS)
    assert _code(e.value) == "context_length"
    assert "maximum context length" in e.value.message


def test_upstream_auth_failure_is_a_502_that_never_shows_the_key(
    client: openai.OpenAI, gateway: GatewayProcess
) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="badkey/gpt-4o-mini", messages=MSGS)
    assert e.value.status_code == 502
    assert _code(e.value) == "auth"
    # The fake echoes the key it was given, as some providers do: the gateway must scrub it.
    text = e.value.response.text
    assert "sk-wrong-key-for-tests-999999" not in text and "Incorrect API key" in text
    log = gateway.log()
    assert "sk-wrong-key-for-tests-999999" not in log and UPSTREAM_KEY not in log


def test_upstream_5xx_and_404_map_to_502_and_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="fakeai/gpt-4o@error=500", messages=MSGS)
    assert (e.value.status_code, _code(e.value)) == (502, "upstream_5xx")
    with pytest.raises(openai.NotFoundError) as e2:
        client.chat.completions.create(model="fakeai/gpt-9@error=404", messages=MSGS)
    assert _code(e2.value) == "not_found"


def test_a_provider_that_is_down_is_a_502_connection_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="down/gpt-4o-mini", messages=MSGS)
    assert (e.value.status_code, _code(e.value)) == (502, "connection")


def test_openrouter_models_list_is_an_ordered_fallback(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o@error=503",
        messages=MSGS,
        extra_body={"models": ["fakeai/gpt-4o-mini@error=500", "fakeai/gpt-4o-mini"]},
    )
    assert raw.headers["x-relaycast-attempts"] == "3"
    assert raw.headers["x-relaycast-target"] == "fakeai/gpt-4o-mini"


def test_anthropic_overloaded_is_classified_as_rate_limit_with_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model="claude/claude-3-5-haiku-latest@error=529", messages=MSGS)
    assert (e.value.status_code, _code(e.value)) == (503, "rate_limit")


def test_a_target_that_cannot_do_the_request_is_skipped_for_the_next(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="embed-anywhere", input="hello")
    assert raw.headers["x-relaycast-attempts"] == "2"
    assert raw.headers["x-relaycast-target"] == "fakeai/text-embedding-3-small"
    assert len(raw.parse().data) == 1
