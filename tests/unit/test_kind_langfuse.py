"""The `langfuse` kind: its settings (Langfuse's own keys, regions and environment variables), the `langfuse.*`
attributes Langfuse's OTel ingestion reads (decoded with the official opentelemetry-proto classes), what it sends
(path, Basic auth, ingestion-version header, gzip) and its Test Connection, against a capture server on 127.0.0.1.
The expected request follows langfuse.com/integrations/native/opentelemetry and the Langfuse SDK's auth_check."""

from __future__ import annotations

import base64
import socket

import aiohttp
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

from relaycast.config_reader import ConfigError
from tests.capture import AsyncCapture as Capture
from tests.capture import run_with_capture as run
from tests.otlp_kinds import ANSWER, PROMPT, KindUnderTest, attrs, chat_record, embeddings_record

PK = "pk-lf-0123456789abcdef"
SK = "sk-lf-fedcba9876543210secret"
KEYS = {"public_key": PK, "secret_key": SK}
K = KindUnderTest("langfuse", "lf", KEYS)
config, options, exporter, spans_of = K.config, K.options, K.exporter, K.spans_of


# --- settings ---------------------------------------------------------------------------------------


def test_defaults_to_langfuse_cloud_eu_with_basic_auth_and_the_real_time_ingestion_header():
    o = options(KEYS)
    assert o.endpoint == "https://cloud.langfuse.com/api/public/otel/v1/traces"
    headers = dict(o.headers)
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{PK}:{SK}".encode()).decode()
    assert headers["x-langfuse-ingestion-version"] == "4"
    assert o.protocol == "protobuf" and o.compression == "gzip"
    assert o.check is not None and o.check.url == "https://cloud.langfuse.com/api/public/projects"
    assert SK in config(KEYS).secrets() and base64.b64encode(f"{PK}:{SK}".encode()).decode() in config(KEYS).secrets()


def test_region_and_self_hosted_base_url():
    assert options({**KEYS, "region": "us"}).endpoint == "https://us.cloud.langfuse.com/api/public/otel/v1/traces"
    own = options({**KEYS, "base_url": "https://langfuse.internal:3000/"})
    assert own.endpoint == "https://langfuse.internal:3000/api/public/otel/v1/traces"
    with pytest.raises(ConfigError, match="not a Langfuse Cloud region"):
        options({**KEYS, "region": "mars"})


def test_reads_langfuses_own_environment_variables_when_the_config_leaves_them_out():
    env = {
        "LANGFUSE_PUBLIC_KEY": PK,
        "LANGFUSE_SECRET_KEY": SK,
        "LANGFUSE_HOST": "http://127.0.0.1:3000",
        "LANGFUSE_TRACING_ENVIRONMENT": "staging",
    }
    o = options({}, env)
    assert o.endpoint == "http://127.0.0.1:3000/api/public/otel/v1/traces"
    assert dict(o.resource)["langfuse.environment"] == "staging"
    # LANGFUSE_BASE_URL is the current name and wins over the deprecated LANGFUSE_HOST; the config wins over both.
    env["LANGFUSE_BASE_URL"] = "https://us.cloud.langfuse.com"
    assert options({}, env).endpoint.startswith("https://us.cloud.langfuse.com/")
    assert options({"public_key": "pk-lf-other"}, env).headers != o.headers


def test_a_missing_key_is_a_plain_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.secret_key: required: secret_key"):
        options({"public_key": PK})
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.public_key: required: public_key"):
        options({"secret_key": SK})
    with pytest.raises(ConfigError, match="not a Langfuse environment"):
        options({**KEYS, "environment": "Production!"})


# --- what Langfuse reads ------------------------------------------------------------------------------


def test_each_chat_attempt_is_a_generation_with_model_usage_cost_and_completion_start():
    rs, (root, failed, served) = spans_of(chat_record())
    a = attrs(served.attributes)
    assert a["langfuse.observation.type"] == "generation"
    assert a["langfuse.observation.model.name"] == "claude-sonnet-4-20250514"
    # Cached and reasoning tokens priced apart, never counted twice: 200 + 1000 + 200 + 100 = 1500.
    assert orjson.loads(a["langfuse.observation.usage_details"]) == {
        "input": 200,
        "input_cached_tokens": 1000,
        "output": 200,
        "output_reasoning_tokens": 100,
        "total": 1500,
    }
    assert orjson.loads(a["langfuse.observation.cost_details"]) == {"input": 0.0015, "output": 0.003, "total": 0.0045}
    # Request start + attempt offset 50 ms + time to first token 250 ms.
    assert a["langfuse.observation.completion_start_time"] == "2025-10-09T08:53:20.300000Z"
    assert "langfuse.observation.level" not in a


def test_a_failed_attempt_is_an_error_level_observation_with_its_message():
    _, (root, failed, served) = spans_of(chat_record())
    a = attrs(failed.attributes)
    assert a["langfuse.observation.level"] == "ERROR"
    assert a["langfuse.observation.status_message"] == "upstream answered 503"
    assert "langfuse.observation.cost_details" not in a and "langfuse.observation.usage_details" not in a
    assert "langfuse.observation.level" not in attrs(root.attributes)  # the request itself succeeded


def test_prompt_and_completion_are_openai_chat_messages_and_trace_context_is_on_every_span():
    _, (root, failed, served) = spans_of(chat_record())
    a = attrs(served.attributes)
    assert orjson.loads(a["langfuse.observation.input"]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PROMPT},
    ]
    assert orjson.loads(a["langfuse.observation.output"]) == {"role": "assistant", "content": ANSWER}
    assert "langfuse.observation.output" not in attrs(failed.attributes)  # only the serving attempt answered
    r = attrs(root.attributes)  # the trace's own input and output, shown in Langfuse's trace list
    assert orjson.loads(r["langfuse.observation.input"]) == orjson.loads(a["langfuse.observation.input"])
    assert orjson.loads(r["langfuse.observation.output"]) == {"role": "assistant", "content": ANSWER}
    for span in (root, failed, served):
        s = attrs(span.attributes)
        assert s["user.id"] == "alice" and s["session.id"] == "conv-7"
        assert s["langfuse.trace.name"] == "support-turn"
        assert s["langfuse.trace.tags"] == ["team:care"]
        assert s["langfuse.trace.metadata.feature"] == "Support Bot"
        assert s["langfuse.trace.metadata.ticket"] == "42"


def test_privacy_mode_sends_no_prompt_or_completion_but_keeps_usage_and_cost():
    rs, spans = spans_of(chat_record(), privacy=True)
    raw = rs.SerializeToString()
    assert PROMPT.encode() not in raw and ANSWER.encode() not in raw
    a = attrs(spans[2].attributes)
    assert "langfuse.observation.input" not in a and "langfuse.observation.usage_details" in a
    assert "langfuse.observation.cost_details" in a


def test_an_embeddings_attempt_is_an_embedding_observation_with_its_tokens_and_cost():
    _, (root, emb) = spans_of(embeddings_record())
    a = attrs(emb.attributes)
    assert a["langfuse.observation.type"] == "embedding"
    assert a["langfuse.observation.model.name"] == "text-embedding-3-small"
    assert orjson.loads(a["langfuse.observation.usage_details"]) == {"input": 8, "output": 0, "total": 8}
    assert orjson.loads(a["langfuse.observation.cost_details"]) == {"total": 1.6e-07}


def test_the_environment_is_a_resource_attribute_langfuse_reads_for_every_span():
    ex = exporter({"environment": "production"})
    (item,) = ex.encode(chat_record(), False, ())
    res = attrs(ResourceSpans.FromString(item).resource.attributes)
    assert res["langfuse.environment"] == "production" and res["service.name"] == "relaycast"


# --- sending and Test Connection ----------------------------------------------------------------------


def test_sends_gzipped_protobuf_to_the_otel_path_with_basic_auth():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = exporter({"base_url": cap.url}, session)
        await ex.send(ex.encode(chat_record(), False, ()))
        ((path, headers, raw),) = cap.requests
        assert path == "/api/public/otel/v1/traces"
        assert headers["authorization"] == "Basic " + base64.b64encode(f"{PK}:{SK}".encode()).decode()
        assert headers["x-langfuse-ingestion-version"] == "4"
        assert headers["content-type"] == "application/x-protobuf" and headers["content-encoding"] == "gzip"
        # The capture server (aiohttp) has already inflated the body: it was valid gzip.
        (rs,) = ExportTraceServiceRequest.FromString(raw).resource_spans
        assert len(rs.scope_spans[0].spans) == 3

    run(body)


def test_connection_test_calls_the_projects_endpoint_and_says_plainly_what_failed():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = exporter({"base_url": cap.url}, session)
        cap.answers = [(200, {}, b'{"data":[{"id":"p1"}]}'), 401, 404]
        ok = await ex.test()
        assert ok.ok and ok.message.startswith("ok: Langfuse")
        path, headers, _ = cap.requests[0]
        assert path == "/api/public/projects" and headers["authorization"].startswith("Basic ")
        denied = await ex.test()
        assert not denied.ok and "Langfuse rejected the credentials (HTTP 401)" in denied.message
        assert "public_key and secret_key" in denied.message
        wrong = await ex.test()
        assert not wrong.ok and "HTTP 404" in wrong.message and "address (or region)" in wrong.message
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            gone = await exporter({"base_url": f"http://127.0.0.1:{port}"}, session).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        for result in (ok, denied, wrong, gone):
            assert SK not in result.message and PK not in result.message

    run(body)
