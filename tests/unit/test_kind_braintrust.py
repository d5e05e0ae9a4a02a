"""The `braintrust` kind: its settings (Braintrust's key, API URL, project and environment variables), the
`braintrust.*` attributes its OTel ingestion maps (decoded with the official opentelemetry-proto classes), what it
sends (path, Bearer key, `x-bt-parent`) and its Test Connection, against a capture server on 127.0.0.1. The expected
request follows braintrust.dev/docs/integrations/sdk-integrations/opentelemetry."""

from __future__ import annotations

import socket

import aiohttp
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relaycast.config_reader import ConfigError
from tests.capture import AsyncCapture as Capture
from tests.capture import run_with_capture as run
from tests.otlp_kinds import ANSWER, PROMPT, KindUnderTest, attrs, chat_record, embeddings_record

KEY = "sk-bt-0123456789abcdef-secret"
KEYS = {"api_key": KEY, "project": "checkout"}
K = KindUnderTest("braintrust", "bt", KEYS)
config, options, exporter, spans_of = K.config, K.options, K.exporter, K.spans_of


# --- settings ---------------------------------------------------------------------------------------


def test_defaults_to_the_us_api_with_a_bearer_key_and_the_project_as_parent():
    o = options(KEYS)
    assert o.endpoint == "https://api.braintrust.dev/otel/v1/traces"
    assert dict(o.headers) == {"Authorization": f"Bearer {KEY}", "x-bt-parent": "project_name:checkout"}
    assert o.check is not None and o.check.url == "https://api.braintrust.dev/v1/project?limit=1"
    assert KEY in config(KEYS).secrets()
    assert dict(options({"api_key": KEY}).headers)["x-bt-parent"] == "project_name:relaycast"
    assert dict(options({"api_key": KEY, "project_id": "p-123"}).headers)["x-bt-parent"] == "project_id:p-123"


def test_reads_braintrusts_own_environment_variables_when_the_config_leaves_them_out():
    env = {
        "BRAINTRUST_API_KEY": KEY,
        "BRAINTRUST_API_URL": "https://api-eu.braintrust.dev",
        "BRAINTRUST_PARENT": "project_id:p-9",
    }
    o = options({}, env)
    assert o.endpoint == "https://api-eu.braintrust.dev/otel/v1/traces"
    assert dict(o.headers)["x-bt-parent"] == "project_id:p-9"
    assert dict(options({"project": "mine"}, env).headers)["x-bt-parent"] == "project_name:mine"


def test_plain_config_errors():
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.api_key: required: api_key"):
        options({"project": "checkout"})
    with pytest.raises(ConfigError, match="not both"):
        options({**KEYS, "project_id": "p-1"})
    with pytest.raises(ConfigError, match="BRAINTRUST_PARENT"):
        options({"api_key": KEY}, {"BRAINTRUST_PARENT": "experiment:x"})


# --- what Braintrust reads ----------------------------------------------------------------------------


def test_each_attempt_is_an_llm_span_with_token_metrics_cost_and_metadata():
    _, (root, failed, served) = spans_of(chat_record())
    a = attrs(served.attributes)
    assert orjson.loads(a["braintrust.span_attributes"]) == {"type": "llm"}
    assert orjson.loads(a["braintrust.metrics"]) == {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "tokens": 1500,
        "prompt_cached_tokens": 1000,
        "completion_reasoning_tokens": 100,
        "time_to_first_token": 0.25,
        "estimated_cost": 0.0045,
    }
    meta = orjson.loads(a["braintrust.metadata"])
    assert meta["model"] == "claude-sonnet-4-20250514" and meta["provider"] == "anthropic"
    assert meta["user_id"] == "alice" and meta["session_id"] == "conv-7" and meta["ticket"] == 42
    assert meta["cost_input_usd"] == 0.0015 and meta["cost_output_usd"] == 0.003
    r = attrs(root.attributes)
    assert orjson.loads(r["braintrust.span_attributes"]) == {"type": "task", "name": "support-turn"}
    assert r["braintrust.tags"] == ["team:care"]


def test_inputs_and_outputs_are_valid_json_in_openai_shape():
    _, (root, failed, served) = spans_of(chat_record())
    a = attrs(served.attributes)
    assert orjson.loads(a["braintrust.input_json"]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT},
    ]
    assert orjson.loads(a["braintrust.output_json"]) == [
        {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
    ]
    f = attrs(failed.attributes)
    assert "braintrust.output_json" not in f and orjson.loads(f["braintrust.metadata"])["error_class"] == "upstream_5xx"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR and failed.status.message == "upstream answered 503"


def test_privacy_mode_sends_no_prompt_or_completion_but_keeps_metrics():
    rs, spans = spans_of(chat_record(), privacy=True)
    raw = rs.SerializeToString()
    assert PROMPT.encode() not in raw and ANSWER.encode() not in raw
    assert "braintrust.metrics" in attrs(spans[2].attributes)


def test_an_embeddings_attempt_has_its_tokens_and_cost():
    _, (root, emb) = spans_of(embeddings_record())
    m = orjson.loads(attrs(emb.attributes)["braintrust.metrics"])
    assert m["prompt_tokens"] == 8 and m["estimated_cost"] == pytest.approx(1.6e-07)


# --- sending and Test Connection ----------------------------------------------------------------------


def test_sends_protobuf_to_the_otel_path_with_the_key_and_parent():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = exporter({"api_url": cap.url}, session)
        await ex.send(ex.encode(chat_record(), False, ()))
        ((path, headers, raw),) = cap.requests
        assert path == "/otel/v1/traces"
        assert headers["authorization"] == f"Bearer {KEY}" and headers["x-bt-parent"] == "project_name:checkout"
        (rs,) = ExportTraceServiceRequest.FromString(raw).resource_spans
        assert len(rs.scope_spans[0].spans) == 3

    run(body)


def test_connection_test_lists_one_project_and_says_plainly_what_failed():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = exporter({"api_url": cap.url}, session)
        cap.answers = [(200, {}, b'{"objects":[]}'), 401, 404]
        ok = await ex.test()
        assert ok.ok and ok.message.startswith("ok: Braintrust")
        path, headers, _ = cap.requests[0]
        assert path == "/v1/project" and headers["authorization"] == f"Bearer {KEY}"
        denied = await ex.test()
        assert not denied.ok and "Braintrust rejected the credentials (HTTP 401)" in denied.message
        wrong = await ex.test()
        assert not wrong.ok and "HTTP 404" in wrong.message
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            gone = await exporter({"api_url": f"http://127.0.0.1:{port}"}, session).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        for result in (ok, denied, wrong, gone):
            assert KEY not in result.message

    run(body)
