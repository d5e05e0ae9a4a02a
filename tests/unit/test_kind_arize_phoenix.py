"""Arize AX and Arize Phoenix: their settings (defaults, the backends' own environment variables, plain errors),
what reaches them (the OpenInference attributes, checked against the official `openinference-semantic-conventions`
names, decoded with the official OTLP protobuf classes) and Test Connection's verdicts."""

from __future__ import annotations

import json
import socket
from typing import Any

import aiohttp
import pytest
from openinference.semconv.resource import ResourceAttributes
from openinference.semconv.trace import (
    MessageAttributes,
    OpenInferenceLLMProviderValues,
    OpenInferenceMimeTypeValues,
    OpenInferenceSpanKindValues,
    SpanAttributes,
    ToolCallAttributes,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relaycast import config as config_mod
from relaycast.config_reader import ConfigError
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.telemetry.exporters import build
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions
from tests.capture import AsyncCapture as Capture
from tests.capture import run_with_capture as run

PROVIDERS = """
providers:
  - {name: fake, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: x}
"""
ARIZE_KEY = "ak-arize-key-0123456789abcdef"
SPACE = "U3BhY2U6MTIzNDU6YWJjZA=="
PHOENIX_KEY = "phoenix-system-key-0123456789"
S = SpanAttributes
M = MessageAttributes
T = ToolCallAttributes


def destination(yaml_item: str, env: dict[str, str] | None = None) -> DestinationConfig:
    cfg = config_mod.parse(PROVIDERS + f"broadcast: {{destinations: [{yaml_item}]}}", env=env or {})
    assert cfg.broadcast is not None
    (d,) = [d for d in cfg.broadcast.destinations if d.kind in ("arize", "phoenix")]
    assert isinstance(d.options, OtlpOptions)
    return d


def opts(d: DestinationConfig) -> OtlpOptions:
    assert isinstance(d.options, OtlpOptions)
    return d.options


# --- settings ---------------------------------------------------------------------------------------------------


def test_arize_takes_key_space_and_project_and_sends_to_the_us_host_by_default() -> None:
    o = opts(destination(f"{{kind: arize, api_key: {ARIZE_KEY}, space_id: '{SPACE}', project_name: shop}}"))
    assert o.endpoint == "https://otlp.arize.com/v1/traces" and o.backend == "arize"
    h = dict(o.headers)
    assert h["authorization"] == ARIZE_KEY and h["api_key"] == ARIZE_KEY  # raw key, no "Bearer"
    assert h["arize-space-id"] == SPACE and h["space_id"] == SPACE and h["arize-interface"] == "otel"
    assert dict(o.resource) == {ResourceAttributes.PROJECT_NAME: "shop", "model_id": "shop"}
    assert o.check is None, "tested with an empty export to the traces endpoint"


def test_arize_regions_and_endpoint_forms() -> None:
    base = f"kind: arize, api_key: {ARIZE_KEY}, space_id: s"
    assert opts(destination(f"{{{base}, region: eu}}")).endpoint == "https://otlp.eu-west-1a.arize.com/v1/traces"
    assert opts(destination(f"{{{base}, region: ca}}")).endpoint == "https://otlp.ca-central-1a.arize.com/v1/traces"
    for given in ("https://arize.internal/v1", "https://arize.internal/v1/traces", "https://arize.internal/"):
        assert opts(destination(f"{{{base}, endpoint: '{given}'}}")).endpoint == "https://arize.internal/v1/traces"
    with pytest.raises(ConfigError) as e:
        destination(f"{{{base}, region: mars}}")
    assert "region" in str(e.value) and "us, eu, ca" in str(e.value)


def test_arize_reads_its_own_environment_variables_when_the_config_leaves_them_out() -> None:
    env = {
        "ARIZE_API_KEY": ARIZE_KEY,
        "ARIZE_SPACE_ID": SPACE,
        "ARIZE_PROJECT_NAME": "from-env",
        "ARIZE_COLLECTOR_ENDPOINT": "https://otlp.eu-west-1a.arize.com/v1",
    }
    d = destination("{kind: arize}", env)
    o = opts(d)
    assert dict(o.headers)["authorization"] == ARIZE_KEY and dict(o.headers)["arize-space-id"] == SPACE
    assert dict(o.resource)[ResourceAttributes.PROJECT_NAME] == "from-env"
    assert o.endpoint == "https://otlp.eu-west-1a.arize.com/v1/traces"
    assert ARIZE_KEY in d.secrets()
    # the config wins over the environment
    o = opts(destination("{kind: arize, project_name: mine, api_key: other-key-123456789}", env))
    assert dict(o.resource)[ResourceAttributes.PROJECT_NAME] == "mine" and dict(o.headers)["api_key"] != ARIZE_KEY
    assert (
        dict(opts(destination("{kind: arize}", {"ARIZE_API_KEY": "k", "ARIZE_SPACE_ID": "s"})).resource)[
            ResourceAttributes.PROJECT_NAME
        ]
        == "default"
    )


def test_arize_without_a_key_or_a_space_says_which_one() -> None:
    with pytest.raises(ConfigError) as e:
        destination("{kind: arize, space_id: s}")
    assert "broadcast.destinations[0].api_key" in str(e.value) and "ARIZE_API_KEY" in str(e.value)
    with pytest.raises(ConfigError) as e:
        destination(f"{{kind: arize, api_key: {ARIZE_KEY}}}")
    assert "broadcast.destinations[0].space_id" in str(e.value) and "ARIZE_SPACE_ID" in str(e.value)


def test_phoenix_defaults_to_a_local_phoenix_without_a_key() -> None:
    o = opts(destination("{kind: phoenix}"))
    assert o.endpoint == "http://localhost:6006/v1/traces" and o.backend == "phoenix"
    assert "authorization" not in dict(o.headers)
    assert dict(o.resource) == {ResourceAttributes.PROJECT_NAME: "default"}
    assert o.check is not None and o.check.url == "http://localhost:6006/v1/projects?limit=1"


def test_phoenix_key_is_a_bearer_token_and_cloud_spaces_keep_their_path() -> None:
    d = destination(
        f"{{kind: phoenix, endpoint: 'https://app.phoenix.arize.com/s/acme', api_key: {PHOENIX_KEY}, "
        "project_name: shop}"
    )
    o = opts(d)
    assert o.endpoint == "https://app.phoenix.arize.com/s/acme/v1/traces"
    assert dict(o.headers)["authorization"] == f"Bearer {PHOENIX_KEY}"
    assert o.check is not None and o.check.url == "https://app.phoenix.arize.com/s/acme/v1/projects?limit=1"
    assert dict(o.check.headers)["authorization"] == f"Bearer {PHOENIX_KEY}"
    assert dict(o.resource)[ResourceAttributes.PROJECT_NAME] == "shop"
    assert PHOENIX_KEY in d.secrets()
    # the traces URL itself is taken too
    assert opts(destination("{kind: phoenix, endpoint: 'http://px:6006/v1/traces'}")).endpoint == (
        "http://px:6006/v1/traces"
    )


def test_phoenix_reads_its_own_environment_variables() -> None:
    env = {
        "PHOENIX_COLLECTOR_ENDPOINT": "http://phoenix.internal:6006",
        "PHOENIX_API_KEY": PHOENIX_KEY,
        "PHOENIX_PROJECT_NAME": "alias",
        "PHOENIX_CLIENT_HEADERS": "x-team=infra,x-org=acme%20co",
    }
    o = opts(destination("{kind: phoenix}", env))
    h = dict(o.headers)
    assert o.endpoint == "http://phoenix.internal:6006/v1/traces" and h["authorization"] == f"Bearer {PHOENIX_KEY}"
    assert h["x-team"] == "infra" and h["x-org"] == "acme co"
    assert dict(o.resource)[ResourceAttributes.PROJECT_NAME] == "alias"
    # PHOENIX_PROJECT is the canonical name and wins over its alias
    o = opts(destination("{kind: phoenix}", {**env, "PHOENIX_PROJECT": "canonical"}))
    assert dict(o.resource)[ResourceAttributes.PROJECT_NAME] == "canonical"


# --- what is sent -----------------------------------------------------------------------------------------------


def chat_record(**over: Any) -> RequestRecord:
    failed = Attempt(
        target="fake/gpt-4o-mini",
        provider="fake",
        model="gpt-4o-mini",
        started_ns=0,
        duration_ns=1_000_000,
        error_class="upstream_5xx",
        upstream_status=503,
        vendor="openai",
    )
    served = Attempt(
        target="mistral/mistral-large",
        provider="mistral",
        model="mistral-large",
        started_ns=2_000_000,
        duration_ns=5_000_000,
        usage=Usage(
            prompt_tokens=120, completion_tokens=30, cached_tokens=20, cache_write_tokens=10, reasoning_tokens=5
        ),
        finish_reason="tool_calls",
        cost_pusd=150_000_000_000,  # $0.15
        cost_input_pusd=120_000_000_000,
        cost_source="computed",
        vendor="mistral_ai",
        response_model="mistral-large-2411",
    )
    base: dict[str, Any] = dict(
        request_id="req-oi-1",
        endpoint="chat.completions",
        model_requested="smart",
        stream=False,
        started_unix_ns=1_760_000_000_000_000_000,
        duration_ns=8_000_000,
        status_code=200,
        attribution=Attribution(
            user="alice",
            session_id="sess-9",
            feature="checkout",
            trace={"env": "prod", "generation_name": "plan"},
            tags=(("team", "payments"),),
        ),
        attempts=(failed, served),
        params={"temperature": 0.2, "max_tokens": 64},
        input_messages=(
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_0", "type": "function", "function": {"name": "geo", "arguments": '{"q":"Paris"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": "48.85,2.35"},
        ),
        output_text="Checking.",
        output_tool_calls=({"id": "call_1", "name": "weather", "arguments": '{"lat":48.85,"lon":2.35}'},),
    )
    base.update(over)
    return RequestRecord(**base)


def value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind)


def decode(raw: bytes) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    (rs,) = ExportTraceServiceRequest.FromString(raw).resource_spans
    resource = {a.key: value(a.value) for a in rs.resource.attributes}
    found = [(s.name, {a.key: value(a.value) for a in s.attributes}) for ss in rs.scope_spans for s in ss.spans]
    return resource, found


def encode(yaml_item: str, record: RequestRecord, privacy: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async def body(cap: Capture, session: aiohttp.ClientSession) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        d = destination(yaml_item.replace("URL", cap.url))
        ex = build(d, session)
        await ex.send(ex.encode(record, privacy, ()))
        ((path, _, raw),) = cap.requests
        assert path == "/v1/traces"
        resource, found = decode(raw)
        return resource, [a for _, a in found]

    result: tuple[dict[str, Any], list[dict[str, Any]]] = run(body)
    return result


def test_spans_carry_the_openinference_attributes_phoenix_and_arize_render() -> None:
    resource, (root, failed, served) = encode("{kind: phoenix, endpoint: URL, project_name: shop}", chat_record())
    assert resource[ResourceAttributes.PROJECT_NAME] == "shop"
    assert root[S.OPENINFERENCE_SPAN_KIND] == OpenInferenceSpanKindValues.CHAIN.value
    assert failed[S.OPENINFERENCE_SPAN_KIND] == served[S.OPENINFERENCE_SPAN_KIND] == "LLM"
    # model and provider, by OpenInference's provider names
    assert served[S.LLM_MODEL_NAME] == "mistral-large-2411" and served[S.LLM_REQUEST_MODEL_NAME] == "mistral-large"
    assert served[S.LLM_PROVIDER] == OpenInferenceLLMProviderValues.MISTRALAI.value
    assert failed[S.LLM_PROVIDER] == OpenInferenceLLMProviderValues.OPENAI.value
    assert json.loads(served[S.LLM_INVOCATION_PARAMETERS]) == {
        "model": "mistral-large",
        "temperature": 0.2,
        "max_tokens": 64,
    }
    # tokens and cost (USD), on the attempt that used them only
    assert served[S.LLM_TOKEN_COUNT_PROMPT] == 120 and served[S.LLM_TOKEN_COUNT_COMPLETION] == 30
    assert served[S.LLM_TOKEN_COUNT_TOTAL] == 150
    assert served[S.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ] == 20
    assert served[S.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_WRITE] == 10
    assert served[S.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING] == 5
    assert served[S.LLM_COST_TOTAL] == pytest.approx(0.15)
    assert served[S.LLM_COST_PROMPT] == pytest.approx(0.12) and served[S.LLM_COST_COMPLETION] == pytest.approx(0.03)
    for span in (root, failed):
        assert not any(k.startswith(("llm.token_count", "llm.cost")) for k in span), "counted once"
    # who, which session, metadata and tags: on every span
    for span in (root, failed, served):
        assert span[S.USER_ID] == "alice" and span[S.SESSION_ID] == "sess-9"
        meta = json.loads(span[S.METADATA])
        assert meta["env"] == "prod" and meta["feature"] == "checkout" and meta["request_id"] == "req-oi-1"
        assert span[S.TAG_TAGS] == ["team:payments"]


def test_messages_and_tool_calls_are_flattened_as_the_spec_says() -> None:
    _, (_, failed, served) = encode("{kind: phoenix, endpoint: URL}", chat_record())
    inp, out = S.LLM_INPUT_MESSAGES, S.LLM_OUTPUT_MESSAGES
    assert served[f"{inp}.0.{M.MESSAGE_ROLE}"] == "system" and served[f"{inp}.0.{M.MESSAGE_CONTENT}"] == "be brief"
    assert served[f"{inp}.1.{M.MESSAGE_CONTENT}"] == "weather in Paris?"
    call = f"{inp}.2.{M.MESSAGE_TOOL_CALLS}.0."
    assert served[call + T.TOOL_CALL_ID] == "call_0" and served[call + T.TOOL_CALL_FUNCTION_NAME] == "geo"
    assert json.loads(served[call + T.TOOL_CALL_FUNCTION_ARGUMENTS_JSON]) == {"q": "Paris"}
    assert served[f"{inp}.3.{M.MESSAGE_ROLE}"] == "tool" and served[f"{inp}.3.{M.MESSAGE_TOOL_CALL_ID}"] == "call_0"
    assert served[f"{out}.0.{M.MESSAGE_ROLE}"] == "assistant"
    assert served[f"{out}.0.{M.MESSAGE_CONTENT}"] == "Checking."
    answer = f"{out}.0.{M.MESSAGE_TOOL_CALLS}.0."
    assert served[answer + T.TOOL_CALL_FUNCTION_NAME] == "weather"
    assert json.loads(served[answer + T.TOOL_CALL_FUNCTION_ARGUMENTS_JSON]) == {"lat": 48.85, "lon": 2.35}
    # input.value / output.value: the request's messages and the answer, as JSON
    assert served[S.INPUT_MIME_TYPE] == OpenInferenceMimeTypeValues.JSON.value
    assert json.loads(served[S.INPUT_VALUE])["messages"][1]["role"] == "user"
    assert served[S.OUTPUT_MIME_TYPE] == OpenInferenceMimeTypeValues.JSON.value
    assert json.loads(served[S.OUTPUT_VALUE])["tool_calls"][0]["function"]["name"] == "weather"
    assert S.OUTPUT_VALUE not in failed, "an attempt that failed answered nothing"
    # a plain answer is plain text
    _, (_, _, plain) = encode("{kind: phoenix, endpoint: URL}", chat_record(output_tool_calls=()))
    assert plain[S.OUTPUT_VALUE] == "Checking." and plain[S.OUTPUT_MIME_TYPE] == OpenInferenceMimeTypeValues.TEXT.value


def test_privacy_mode_sends_no_prompt_or_completion_but_keeps_model_tokens_and_cost() -> None:
    _, spans_ = encode("{kind: phoenix, endpoint: URL}", chat_record(), privacy=True)
    served = spans_[-1]
    text = json.dumps(spans_)
    for secret in ("be brief", "Paris", "Checking.", "weather"):
        assert secret not in text
    assert not any(k.startswith((S.LLM_INPUT_MESSAGES, S.LLM_OUTPUT_MESSAGES)) for k in served)
    assert S.INPUT_VALUE not in served and S.OUTPUT_VALUE not in served
    assert served[S.LLM_MODEL_NAME] == "mistral-large-2411" and served[S.LLM_TOKEN_COUNT_TOTAL] == 150
    assert served[S.LLM_COST_TOTAL] == pytest.approx(0.15)


def test_embeddings_are_embedding_spans_and_unpriced_attempts_carry_no_cost() -> None:
    a = Attempt(
        target="fake/text-embedding-3-small",
        provider="fake",
        model="text-embedding-3-small",
        started_ns=0,
        duration_ns=1_000,
        usage=Usage(prompt_tokens=8),
        cost_source="unpriced",
        vendor="openai",
    )
    rec = chat_record(endpoint="embeddings", attempts=(a,), input_messages=(), output_text=None, output_tool_calls=())
    _, (_, emb) = encode(f"{{kind: arize, api_key: {ARIZE_KEY}, space_id: s, endpoint: URL}}", rec)
    assert emb[S.OPENINFERENCE_SPAN_KIND] == OpenInferenceSpanKindValues.EMBEDDING.value
    assert emb[S.EMBEDDING_MODEL_NAME] == "text-embedding-3-small" and S.LLM_MODEL_NAME not in emb
    assert emb[S.LLM_TOKEN_COUNT_PROMPT] == 8
    assert not any(k.startswith("llm.cost") for k in emb)


def test_arize_requests_carry_the_space_the_key_and_the_project() -> None:
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        d = destination(
            f"{{kind: arize, api_key: {ARIZE_KEY}, space_id: '{SPACE}', project_name: shop, endpoint: {cap.url}/v1}}"
        )
        ex = build(d, session)
        await ex.send(ex.encode(chat_record(), False, ()))
        ((path, headers, raw),) = cap.requests
        assert path == "/v1/traces" and headers["content-type"] == "application/x-protobuf"
        assert headers["authorization"] == ARIZE_KEY and headers["arize-space-id"] == SPACE
        assert headers["space_id"] == SPACE and headers["api_key"] == ARIZE_KEY
        resource, found = decode(raw)
        assert resource[ResourceAttributes.PROJECT_NAME] == "shop" and resource["model_id"] == "shop"
        assert found[-1][1][S.LLM_MODEL_NAME] == "mistral-large-2411"

    run(body)


# --- Test Connection --------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_arize_test_connection_posts_an_empty_export_and_says_what_failed() -> None:
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        d = destination(f"{{kind: arize, api_key: {ARIZE_KEY}, space_id: s, endpoint: {cap.url}/v1}}")
        ex = build(d, session)
        cap.answers = [200, 401, 404]
        ok = await ex.test()
        assert ok.ok and "Arize AX" in ok.message, ok.message
        path, headers, raw = cap.requests[0]
        assert path == "/v1/traces" and raw == b"" and headers["authorization"] == ARIZE_KEY
        denied = await ex.test()
        assert not denied.ok and "rejected the credentials (HTTP 401)" in denied.message
        assert "space_id" in denied.message and "Space Settings" in denied.message
        missing = await ex.test()
        assert not missing.ok and "HTTP 404" in missing.message and "region" in missing.message
        gone = await build(
            destination(
                f"{{kind: arize, api_key: {ARIZE_KEY}, space_id: s, endpoint: http://127.0.0.1:{closed_port()}/v1}}"
            ),
            session,
        ).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        for r in (ok, denied, missing, gone):
            assert ARIZE_KEY not in r.message

    run(body)


def test_phoenix_test_connection_lists_projects_with_the_key() -> None:
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        d = destination(f"{{kind: phoenix, endpoint: {cap.url}, api_key: {PHOENIX_KEY}}}")
        ex = build(d, session)
        cap.answers = [(200, {"content-type": "application/json"}, b'{"data":[],"next_cursor":null}'), 401, 404]
        ok = await ex.test()
        assert ok.ok and "Phoenix" in ok.message, ok.message
        path, headers, raw = cap.requests[0]
        assert path == "/v1/projects" and raw == b"" and headers["authorization"] == f"Bearer {PHOENIX_KEY}"
        denied = await ex.test()
        assert not denied.ok and "rejected the credentials (HTTP 401)" in denied.message
        assert "api_key" in denied.message
        missing = await ex.test()
        assert not missing.ok and "HTTP 404" in missing.message
        assert all(p == "/v1/projects" for p, _, _ in cap.requests), "no span is sent to test"
        gone = await build(
            destination(f"{{kind: phoenix, endpoint: 'http://127.0.0.1:{closed_port()}'}}"), session
        ).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        for r in (ok, denied, missing, gone):
            assert PHOENIX_KEY not in r.message

    run(body)
