"""Every request becomes a record after its response: attribution, attempts, usage, TTFT, errors."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from relaycast.config import parse
from relaycast.server.app import Gateway
from relaycast.server.runner import ThreadedServer
from tests.capture import Sink
from tests.conftest import UPSTREAM_KEY, Fake, standard_config

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def inproc(fake: Fake) -> Iterator[tuple[openai.OpenAI, Sink]]:
    extra = "keys:\n  - name: web-app\n    secret: rc-records-key-01\n"
    cfg = parse(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    sink = Sink()
    with ThreadedServer(Gateway(cfg, sinks=[sink])) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="rc-records-key-01", max_retries=0), sink


def test_a_record_keeps_attribution_from_openrouter_fields_and_headers(inproc) -> None:
    client, sink = inproc
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tokens=5",
        messages=MSGS,
        user="alice",
        temperature=0.2,
        extra_body={"session_id": "sess-1", "trace": {"trace_name": "checkout", "generation_name": "g1"}},
        extra_headers={"X-Title": "Checkout Assistant", "HTTP-Referer": "https://shop.example"},
    )
    rec = sink.wait_for(raw.headers["x-request-id"])
    a = rec.attribution
    assert (a.user, a.session_id, a.feature, a.app_url, a.key_name) == (
        "alice",
        "sess-1",
        "Checkout Assistant",
        "https://shop.example",
        "web-app",
    )
    assert a.trace == {"trace_name": "checkout", "generation_name": "g1"}
    assert rec.params == {"temperature": 0.2}
    assert rec.status_code == 200 and rec.error_class is None
    assert rec.input_messages == tuple(MSGS)
    assert rec.output_text == "the quick brown fox jumps"
    (att,) = rec.attempts
    assert att.target == "fakeai/gpt-4o-mini@tokens=5" and att.usage.completion_tokens == 5


def test_a_stream_record_has_ttft_usage_and_the_failed_attempt_before_it(inproc) -> None:
    client, sink = inproc
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@error=503",
        messages=MSGS,
        stream=True,
        extra_body={"models": ["fakeai/gpt-4o-mini@ttft_ms=80,tokens=6,cached=2"]},
    )
    list(raw.parse())
    rec = sink.wait_for(raw.headers["x-request-id"])
    failed, ok = rec.attempts
    assert (failed.error_class, failed.upstream_status) == ("upstream_5xx", 503)
    assert ok.error_class is None and ok.finish_reason == "stop"
    assert ok.ttft_ns is not None and 80e6 <= ok.ttft_ns <= ok.duration_ns
    assert ok.usage.completion_tokens == 6 and ok.usage.cached_tokens == 2
    assert ok.started_ns >= failed.started_ns + failed.duration_ns
    assert rec.duration_ns >= ok.started_ns + ok.duration_ns
    assert rec.output_text == "the quick brown fox jumps over"


def test_a_failed_request_records_its_class_and_status(inproc) -> None:
    client, sink = inproc
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="fakeai/gpt-4o@error=429", messages=MSGS)
    rec = sink.wait_for(e.value.response.headers["x-request-id"])
    assert (rec.status_code, rec.error_class) == (429, "rate_limit")
    assert rec.attempts[0].error_class == "rate_limit"
