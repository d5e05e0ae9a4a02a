"""Datadog LLM Observability through a Datadog Agent: Datadog's own ddapm-test-agent receives the spans of real
requests sent with the openai SDK; their shape is compared with the body ddtrace itself sends."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.ddagent import DatadogTestAgent

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "datadog" / "ddtrace-4.16-llmobs-agentless-body.json"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def dd_gateway(fake: Fake, agent: DatadogTestAgent, tmp_path_factory) -> Iterator[GatewayProcess]:
    spool = tmp_path_factory.mktemp("spool")
    extra = f"""
broadcast:
  spool_dir: {spool}
  destinations:
    - name: datadog
      kind: datadog
      agent_url: {agent.url}
      ml_app: relaycast-tests
      service: gateway
      env: ci
      flush_interval: 0.2
      tags: {{team: infra}}
"""
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield gw
    gw.stop()


def _trace(agent: DatadogTestAgent, request_id: str, n_spans: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        spans = agent.spans()
        roots = [
            s for s in spans if s["parent_id"] == "undefined" and s["meta"]["metadata"].get("request_id") == request_id
        ]
        if roots:
            trace = [s for s in spans if s["trace_id"] == roots[0]["trace_id"]]
            if len(trace) >= n_spans:
                return trace
        assert time.monotonic() < deadline, f"spans of {request_id} did not arrive"
        time.sleep(0.1)


def _tags(span: dict) -> dict[str, str]:
    return dict(t.split(":", 1) for t in span["tags"])


def test_a_completion_becomes_a_workflow_root_with_an_llm_child_carrying_tokens_and_attribution(
    dd_gateway, agent
) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tokens=9,cached=4",
        messages=MSGS,
        user="user-42",
        temperature=0.0,
        max_tokens=16,
        extra_headers={"x-session-id": "session-123", "X-Title": "calc"},
    )
    root, llm = sorted(_trace(agent, raw.headers["x-request-id"], 2), key=lambda s: s["parent_id"] != "undefined")
    assert len(root["trace_id"]) == 32 and int(root["trace_id"], 16)
    assert root["span_id"].isdigit() and llm["parent_id"] == root["span_id"] and llm["trace_id"] == root["trace_id"]
    assert root["meta"]["span"]["kind"] == "workflow" and llm["meta"]["span"]["kind"] == "llm"
    assert root["meta"]["input"] == {"value": "What is 2+2?"}
    assert llm["meta"]["input"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert llm["meta"]["output"]["messages"][0]["role"] == "assistant"
    assert (llm["meta"]["model_name"], llm["meta"]["model_provider"]) == ("gpt-4o-mini@tokens=9,cached=4", "fakeai")
    assert llm["meta"]["metadata"] == {"temperature": 0.0, "max_tokens": 16, "finish_reason": "stop"}
    m = llm["metrics"]
    assert (m["output_tokens"], m["cache_read_input_tokens"], m["total_tokens"]) == (9, 4, m["input_tokens"] + 9)
    assert llm["start_ns"] >= root["start_ns"] and llm["duration"] <= root["duration"]
    for span in (root, llm):
        t = _tags(span)
        assert {k: t[k] for k in ("ml_app", "service", "env", "user_id", "session_id", "feature", "team", "error")} == {
            "ml_app": "relaycast-tests",
            "service": "gateway",
            "env": "ci",
            "user_id": "user-42",
            "session_id": "session-123",
            "feature": "calc",
            "team": "infra",
            "error": "0",
        }
        assert span["session_id"] == "session-123" and span["status"] == "ok"


def test_a_stream_reports_time_to_first_token_in_seconds(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@ttft_ms=150,tokens=5", messages=MSGS, stream=True
    )
    list(raw.parse())
    llm = [s for s in _trace(agent, raw.headers["x-request-id"], 2) if s["meta"]["span"]["kind"] == "llm"][0]
    ttft = llm["metrics"]["time_to_first_token"]
    assert 0.15 <= ttft < llm["duration"] / 1e9
    assert llm["metrics"]["output_tokens"] == 5
    assert llm["meta"]["output"]["messages"][0]["content"] == "the quick brown fox jumps"


def test_a_failover_has_an_errored_llm_span_then_an_ok_one(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="fast", messages=MSGS)
    trace = _trace(agent, raw.headers["x-request-id"], 3)
    root = next(s for s in trace if s["parent_id"] == "undefined")
    failed, ok = sorted((s for s in trace if s is not root), key=lambda s: s["start_ns"])
    assert (failed["status"], failed["meta"]["error"]["type"], _tags(failed)["error_type"]) == (
        "error",
        "upstream_5xx",
        "upstream_5xx",
    )
    assert failed["meta"]["metadata"]["upstream_status"] == 503
    assert "output" not in failed["meta"]
    assert ok["status"] == "ok" and root["status"] == "ok"
    assert root["meta"]["metadata"]["attempts"] == 2


def test_a_failed_request_has_error_status_type_and_message(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="fakeai/gpt-4o@error=429", messages=MSGS)
    trace = _trace(agent, e.value.response.headers["x-request-id"], 2)
    for span in trace:
        assert span["status"] == "error"
        assert span["meta"]["error"]["type"] == "rate_limit"
        assert "Rate limit reached" in span["meta"]["error"]["message"]
        assert _tags(span)["error"] == "1" and _tags(span)["error_type"] == "rate_limit"


def test_our_spans_have_the_shape_ddtrace_sends(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini", messages=MSGS, extra_headers={"x-session-id": "s"}
    )
    ours = _trace(agent, raw.headers["x-request-id"], 2)
    reference = json.loads(REFERENCE.read_text())
    ref_root = reference[0]["spans"][0]
    ref_llm = reference[1]["spans"][0]
    our_root = next(s for s in ours if s["parent_id"] == "undefined")
    our_llm = next(s for s in ours if s["parent_id"] != "undefined")
    for ref, span in ((ref_root, our_root), (ref_llm, our_llm)):
        assert set(ref) <= set(span), f"missing span fields: {set(ref) - set(span)}"
        assert set(ref["meta"]) <= set(span["meta"]), f"missing meta fields: {set(ref['meta']) - set(span['meta'])}"
        for key in ("trace_id", "span_id", "parent_id", "name", "status", "session_id"):
            assert type(span[key]) is type(ref[key]), key
        assert type(span["start_ns"]) is int and type(span["duration"]) is int
    assert set(our_llm["metrics"]) <= {
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "cache_read_input_tokens",
        "cache_write_input_tokens",
        "reasoning_output_tokens",
        "time_to_first_token",
        "input_cost",
        "output_cost",
        "total_cost",
    }
    assert set(ref_llm["metrics"]) - {"input_cost", "output_cost", "total_cost", "time_to_first_token"} <= set(
        our_llm["metrics"]
    )


def test_no_secret_reaches_the_agent(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError):
        c.chat.completions.create(model="badkey/gpt-4o-mini", messages=MSGS)
    time.sleep(0.6)
    with urllib.request.urlopen(agent.url + "/test/session/requests", timeout=5) as r:
        reqs = json.load(r)
    assert reqs
    for req in reqs:
        body = base64.b64decode(req["body"])
        assert UPSTREAM_KEY.encode() not in body and b"sk-wrong-key-for-tests-999999" not in body


def test_standard_datadog_environment_variables_create_the_destination(fake: Fake, agent: DatadogTestAgent) -> None:
    gw = GatewayProcess(
        standard_config(fake.url),
        env={
            "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
            "DD_TRACE_AGENT_URL": agent.url,
            "DD_LLMOBS_ML_APP": "from-env",
            "DD_ENV": "envtest",
        },
    ).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(model="fakeai/gpt-4o-mini", messages=MSGS)
        for span in _trace(agent, raw.headers["x-request-id"], 2):
            assert _tags(span)["ml_app"] == "from-env" and _tags(span)["env"] == "envtest"
    finally:
        gw.stop()


def test_a_record_larger_than_one_post_is_split_across_posts_and_nothing_is_lost(dd_gateway, agent) -> None:
    """A 2 MB prompt through a failover route: three spans of about 2 MB each, more than Datadog's 5 MiB per
    POST together. Each POST stays within it and every span arrives."""
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0, timeout=30)
    prompt = "lorem ipsum " * 170_000  # about 2 MB
    raw = c.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-relaycast-attempts"] == "2"
    trace = _trace(agent, raw.headers["x-request-id"], 3)
    assert len(trace) == 3 and {s["parent_id"] == "undefined" for s in trace} == {True, False}
    with urllib.request.urlopen(agent.url + "/test/session/requests", timeout=10) as r:
        sizes = [len(base64.b64decode(req["body"])) for req in json.load(r) if "llmobs" in req["url"]]
    assert max(sizes) <= 5 * 1024 * 1024 and sum(s > 1_000_000 for s in sizes) >= 2, sizes


def test_client_tags_cannot_pass_for_the_ones_relaycast_sets(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini",
        messages=MSGS,
        extra_headers={"x-relaycast-tags": "ml_app=someone-else, env=prod, team=search"},
        extra_body={"trace": {"service": "spoofed"}},
    )
    for span in _trace(agent, raw.headers["x-request-id"], 2):
        tags = span["tags"]
        assert [t for t in tags if t.startswith("ml_app:")] == ["ml_app:relaycast-tests"]
        assert [t for t in tags if t.startswith("env:")] == ["env:ci"]
        assert [t for t in tags if t.startswith("service:")] == ["service:gateway"]
        assert {"client.ml_app:someone-else", "client.env:prod", "client.service:spoofed", "team:search"} <= set(tags)
        assert "apm_trace_id" not in span["_dd"]


def test_broadcast_test_needs_no_config_and_says_which_way_spans_go(agent: DatadogTestAgent, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DD_", "OTEL_"))}
    env.update({"DD_TRACE_AGENT_URL": agent.url, "DD_API_KEY": "dd-key-0123456789abcdef0123456789ab"})
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "broadcast", "test"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"through the Datadog Agent at {agent.url}" in r.stdout and "an API key is set too" in r.stdout
    assert "OK   datadog (datadog)" in r.stdout
    assert "dd-key-0123456789abcdef0123456789ab" not in r.stdout + r.stderr
    none = subprocess.run(
        [sys.executable, "-m", "relaycast", "broadcast", "test"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in env.items() if not k.startswith("DD_")},
        cwd=tmp_path,
    )
    assert none.returncode == 2 and "no broadcast destination" in none.stderr


TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_and_tool_results_reach_datadog_as_ddtrace_sends_them(dd_gateway, agent, stream: bool) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    msgs = [{"role": "user", "content": "find the fox"}]
    raw = c.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tool_call", messages=msgs, tools=TOOLS, stream=stream
    )
    if stream:
        list(raw.parse())
    llm = next(s for s in _trace(agent, raw.headers["x-request-id"], 2) if s["parent_id"] != "undefined")
    [out] = llm["meta"]["output"]["messages"]
    [call] = out["tool_calls"]
    assert call == {"name": "search", "arguments": {"query": "fox"}, "tool_id": "call_fake0001", "type": "function"}
    answered = [
        *msgs,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake0001",
                    "type": "function",
                    "function": {"name": "search", "arguments": '{"query":"fox"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake0001", "content": "a fox"},
    ]
    raw2 = c.chat.completions.with_raw_response.create(model="fakeai/gpt-4o-mini", messages=answered, tools=TOOLS)
    llm2 = next(s for s in _trace(agent, raw2.headers["x-request-id"], 2) if s["parent_id"] != "undefined")
    sent = llm2["meta"]["input"]["messages"]
    assert sent[1]["tool_calls"][0]["tool_id"] == "call_fake0001" and sent[1]["tool_calls"][0]["name"] == "search"
    assert sent[2]["tool_results"] == [{"result": "a fox", "tool_id": "call_fake0001", "type": "function"}]


def test_embeddings_reach_datadog_with_their_documents(dd_gateway, agent) -> None:
    c = openai.OpenAI(base_url=dd_gateway.base_url, api_key="x", max_retries=0)
    raw = c.embeddings.with_raw_response.create(model="fakeai/text-embedding-3-small", input=["one fox", "two dogs"])
    span = next(s for s in _trace(agent, raw.headers["x-request-id"], 2) if s["parent_id"] != "undefined")
    assert span["meta"]["span"]["kind"] == "embedding"
    assert span["meta"]["input"]["documents"] == [{"text": "one fox"}, {"text": "two dogs"}]
    assert span["meta"]["output"]["value"] == "[2 embedding(s) returned]"
