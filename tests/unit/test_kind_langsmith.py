"""The `langsmith` kind: its settings (LangSmith's key, endpoint, project and environment variables), the attributes
LangSmith's OTel ingestion maps (decoded with the official opentelemetry-proto classes), what it sends (path,
`x-api-key`, `Langsmith-Project`) and its Test Connection, against a capture server on 127.0.0.1. The expected request
follows docs.langchain.com/langsmith/trace-with-opentelemetry and the LangSmith SDK's OTel client."""

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

KEY = "lsv2_pt_0123456789abcdef_secret"
KEYS = {"api_key": KEY, "project": "checkout"}
K = KindUnderTest("langsmith", "ls", KEYS)
config, options, exporter, spans_of = K.config, K.options, K.exporter, K.spans_of


# --- settings ---------------------------------------------------------------------------------------


def test_defaults_to_the_us_endpoint_with_the_api_key_and_project_headers():
    o = options(KEYS)
    assert o.endpoint == "https://api.smith.langchain.com/otel/v1/traces"
    assert dict(o.headers) == {"x-api-key": KEY, "Langsmith-Project": "checkout"}
    assert o.check is not None and o.check.url == "https://api.smith.langchain.com/sessions?limit=1"
    assert KEY in config(KEYS).secrets()
    # No project: no header, and LangSmith files the traces under "default".
    assert "Langsmith-Project" not in dict(options({"api_key": KEY}).headers)


def test_eu_and_self_hosted_endpoints_and_the_workspace_header():
    eu = options({**KEYS, "endpoint": "https://eu.api.smith.langchain.com/"})
    assert eu.endpoint == "https://eu.api.smith.langchain.com/otel/v1/traces"
    own = options({**KEYS, "endpoint": "https://smith.internal/api/v1", "workspace_id": "ws-1"})
    assert own.endpoint == "https://smith.internal/api/v1/otel/v1/traces"
    assert dict(own.headers)["X-Tenant-Id"] == "ws-1"
    assert own.check is not None and dict(own.check.headers)["X-Tenant-Id"] == "ws-1"


def test_reads_langsmiths_own_environment_variables_when_the_config_leaves_them_out():
    env = {
        "LANGSMITH_API_KEY": KEY,
        "LANGSMITH_ENDPOINT": "http://127.0.0.1:1984",
        "LANGSMITH_PROJECT": "from-env",
    }
    o = options({}, env)
    assert o.endpoint == "http://127.0.0.1:1984/otel/v1/traces"
    assert dict(o.headers) == {"x-api-key": KEY, "Langsmith-Project": "from-env"}
    assert dict(options({"project": "mine"}, env).headers)["Langsmith-Project"] == "mine"


def test_a_missing_key_is_a_plain_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"destinations\[0\]\.api_key: required: api_key"):
        options({"project": "checkout"})


# --- what LangSmith reads -----------------------------------------------------------------------------


def test_runs_are_a_chain_with_llm_children_carrying_model_tokens_and_pricing_keys():
    _, (root, failed, served) = spans_of(chat_record())
    r, a = attrs(root.attributes), attrs(served.attributes)
    assert r["langsmith.span.kind"] == "chain" and r["langsmith.trace.name"] == "support-turn"
    assert a["langsmith.span.kind"] == "llm"
    assert a["gen_ai.request.model"] == "claude-sonnet-4" and a["gen_ai.response.model"] == "claude-sonnet-4-20250514"
    assert a["gen_ai.usage.input_tokens"] == 1200 and a["gen_ai.usage.output_tokens"] == 300
    assert a["gen_ai.usage.total_tokens"] == 1500 and a["gen_ai.usage.details.reasoning_tokens"] == 100
    # LangSmith prices a run by provider and model name; relaycast's own cost rides along as metadata.
    assert a["langsmith.metadata.ls_provider"] == "anthropic"
    assert a["langsmith.metadata.ls_model_name"] == "claude-sonnet-4-20250514"
    assert a["langsmith.metadata.cost_usd"] == pytest.approx(0.0045)
    assert a["langsmith.metadata.cost_input_usd"] == pytest.approx(0.0015)
    assert a["langsmith.metadata.cost_output_usd"] == pytest.approx(0.003)


def test_user_and_conversation_are_thread_metadata_on_every_run_never_the_project_session():
    _, spans = spans_of(chat_record())
    for span in spans:
        s = attrs(span.attributes)
        assert s["langsmith.metadata.user_id"] == "alice"
        assert s["langsmith.metadata.session_id"] == "conv-7"  # LangSmith threads
        assert s["langsmith.metadata.ticket"] == 42
        assert s["langsmith.span.tags"] == "team:care"
        assert "langsmith.trace.session_id" not in s  # that is LangSmith's project id


def test_inputs_and_outputs_are_the_openai_request_and_response_shapes():
    _, (root, failed, served) = spans_of(chat_record())
    a = attrs(served.attributes)
    assert orjson.loads(a["gen_ai.prompt"]) == {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    }
    assert orjson.loads(a["gen_ai.completion"]) == {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}]
    }
    f = attrs(failed.attributes)
    assert "gen_ai.completion" not in f and f["error.type"] == "upstream_5xx"
    assert failed.status.code == failed.status.STATUS_CODE_ERROR


def test_privacy_mode_sends_no_prompt_or_completion():
    rs, spans = spans_of(chat_record(), privacy=True)
    raw = rs.SerializeToString()
    assert PROMPT.encode() not in raw and ANSWER.encode() not in raw
    assert attrs(spans[2].attributes)["gen_ai.usage.input_tokens"] == 1200


def test_an_embeddings_attempt_is_an_embedding_run():
    _, (root, emb) = spans_of(embeddings_record())
    a = attrs(emb.attributes)
    assert a["langsmith.span.kind"] == "embedding" and a["gen_ai.usage.input_tokens"] == 8


# --- sending and Test Connection ----------------------------------------------------------------------


def test_sends_protobuf_to_the_otel_path_with_the_key_and_project():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = exporter({"endpoint": cap.url}, session)
        await ex.send(ex.encode(chat_record(), False, ()))
        ((path, headers, raw),) = cap.requests
        assert path == "/otel/v1/traces"
        assert headers["x-api-key"] == KEY and headers["langsmith-project"] == "checkout"
        assert headers["content-type"] == "application/x-protobuf"
        (rs,) = ExportTraceServiceRequest.FromString(raw).resource_spans
        assert len(rs.scope_spans[0].spans) == 3

    run(body)


def test_connection_test_lists_one_project_and_says_plainly_what_failed():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = exporter({"endpoint": cap.url}, session)
        cap.answers = [(200, {}, b"[]"), 403, 404]
        ok = await ex.test()
        assert ok.ok and ok.message.startswith("ok: LangSmith")
        path, headers, _ = cap.requests[0]
        assert path == "/sessions" and headers["x-api-key"] == KEY
        denied = await ex.test()
        assert not denied.ok and "LangSmith rejected the credentials (HTTP 403)" in denied.message
        wrong = await ex.test()
        assert not wrong.ok and "HTTP 404" in wrong.message
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            gone = await exporter({"endpoint": f"http://127.0.0.1:{port}"}, session).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        for result in (ok, denied, wrong, gone):
            assert KEY not in result.message

    run(body)
