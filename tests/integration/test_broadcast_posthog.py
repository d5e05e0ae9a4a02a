"""The `posthog` destination through a real `relaycast serve`: a request made with the openai SDK reaches a capture
server standing in for PostHog as the `/batch/` call PostHog's SDKs make, with the `$ai_trace` and `$ai_generation`
events PostHog's LLM analytics renders."""

from __future__ import annotations

import gzip
import json

import openai

from tests.capture import CaptureServer
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config

KEY = "phc_e2e0123456789abcdefghijklmnopqrstuvwx"


def test_a_request_reaches_posthog_as_llm_analytics_events(fake: Fake, tmp_path) -> None:
    capture = CaptureServer().start()
    capture.script.default = 200
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: ph, kind: posthog, host: "{capture.url}", flush_interval: 0.1, tags: {{env: ci}}}}
"""
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "POSTHOG_PROJECT_API_KEY": KEY}
    gw = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "tell me a hedgehog fact"}], user="alice"
        )
        answer = raw.parse().choices[0].message.content
        rid = raw.headers["x-request-id"]
        capture.wait_for(lambda: capture.posts("/batch/"))
    finally:
        gw.stop()
        capture.stop()

    post = capture.posts("/batch/")[0]
    assert post.headers["content-encoding"] == "gzip"
    doc = json.loads(post.body if post.body[:1] == b"{" else gzip.decompress(post.body))
    assert doc["api_key"] == KEY
    trace, failed, served = doc["batch"]
    assert [trace["event"], failed["event"], served["event"]] == ["$ai_trace", "$ai_generation", "$ai_generation"]
    assert {e["distinct_id"] for e in doc["batch"]} == {"alice"}
    assert {e["properties"]["relaycast_request_id"] for e in doc["batch"]} == {rid}
    assert {e["properties"]["env"] for e in doc["batch"]} == {"ci"}
    p = served["properties"]
    assert p["$ai_model"] == "gpt-4o-mini" and p["$ai_is_error"] is False
    assert p["$ai_input"] == [{"role": "user", "content": "tell me a hedgehog fact"}]
    assert p["$ai_output_choices"][0]["content"][0] == {"type": "text", "text": answer}
    assert p["$ai_input_tokens"] > 0 and p["$ai_output_tokens"] > 0 and p["$ai_total_cost_usd"] > 0
    assert failed["properties"]["$ai_is_error"] is True and failed["properties"]["$ai_http_status"] == 503
    assert trace["properties"]["$ai_trace_id"] == p["$ai_trace_id"] == failed["properties"]["$ai_trace_id"]
    assert UPSTREAM_KEY.encode() not in post.body
