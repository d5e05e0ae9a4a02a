"""The OTLP exporter: what it encodes (decoded with the official opentelemetry-proto classes) and what it sends
(to a capture server on 127.0.0.1, through a real aiohttp session)."""

from __future__ import annotations

import base64
import logging
import socket
from typing import Any

import aiohttp
import msgspec
import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.telemetry import spans
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import ExportError
from relaycast.telemetry.exporters.otlp import OtlpExporter
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions
from tests.capture import AsyncCapture as Capture
from tests.capture import run_with_capture as run

T0 = 1_760_000_000_123_456_789
MS = 1_000_000
SECRET = "otlp-header-secret-0123456789"
PROMPT = "What is the capital of France? (prompt-marker-7f3a)"
SYSTEM = "Be brief."
ANSWER = "Paris. (completion-marker-91c2)"
TAGS = (("team", "payments"), ("env", "staging"))
ATTRIBUTION = Attribution(
    user="user-42",
    session_id="sess-9",
    feature="Checkout Assistant",
    app_url="https://shop.example",
    key_name="web-app",
    trace={"trace_name": "checkout-flow", "order_id": 1234, "experiment": "b", "labels": ["x", "y"]},
)
MESSAGES = ({"role": "system", "content": SYSTEM}, {"role": "user", "content": [{"type": "text", "text": PROMPT}]})


def stream_record() -> RequestRecord:
    """A successful stream: time to first token, cached and reasoning tokens, OpenRouter's reported cost."""
    usage = Usage(
        prompt_tokens=120, completion_tokens=30, cached_tokens=100, reasoning_tokens=12, reported_cost_usd="0.00042"
    )
    attempt = Attempt(
        target="openrouter/openai/gpt-4o-mini",
        provider="openrouter",
        model="openai/gpt-4o-mini",
        started_ns=2 * MS,
        duration_ns=800 * MS,
        ttft_ns=150 * MS,
        usage=usage,
        finish_reason="stop",
        upstream_status=200,
        cost_pusd=420_000_000,
        cost_source="reported",
    )
    return RequestRecord(
        request_id="req-stream-1",
        endpoint="chat.completions",
        model_requested="fast",
        stream=True,
        started_unix_ns=T0,
        duration_ns=805 * MS,
        status_code=200,
        attribution=ATTRIBUTION,
        attempts=(attempt,),
        params={
            "temperature": 0.2,
            "max_tokens": 64,
            "top_p": 1,
            "stop": "END",
            "seed": 7,
            "n": 1,
            "response_format": {"type": "json_object"},
            "tool_choice": "auto",
            "reasoning_effort": "low",
        },
        input_messages=MESSAGES,
        output_text=ANSWER,
    )


def failover_record() -> RequestRecord:
    """A failed attempt (rate limited), then a successful one on another provider."""
    failed = Attempt(
        target="anthropic/claude-3-5-haiku",
        provider="anthropic",
        model="claude-3-5-haiku",
        started_ns=1 * MS,
        duration_ns=40 * MS,
        error_class="rate_limit",
        error_message="429 Too Many Requests",
        upstream_status=429,
    )
    served = Attempt(
        target="openai/gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        started_ns=45 * MS,
        duration_ns=300 * MS,
        usage=Usage(prompt_tokens=20, completion_tokens=5),
        finish_reason="length",
    )
    return RequestRecord(
        request_id="req-failover-2",
        endpoint="chat.completions",
        model_requested="resilient",
        stream=False,
        started_unix_ns=T0 + 5_000 * MS,
        duration_ns=350 * MS,
        status_code=200,
        attribution=Attribution(user="u-1"),
        attempts=(failed, served),
        input_messages=MESSAGES,
        output_text=ANSWER,
    )


def failed_record() -> RequestRecord:
    """Every target failed: the request itself is an error."""
    a1 = Attempt(
        target="openai/gpt-4o-mini",
        provider="openai",
        model="gpt-4o-mini",
        started_ns=0,
        duration_ns=20 * MS,
        error_class="upstream_5xx",
        error_message="upstream answered HTTP 500",
        upstream_status=500,
    )
    a2 = Attempt(
        target="openai/gpt-4o",
        provider="openai",
        model="gpt-4o",
        started_ns=25 * MS,
        duration_ns=30 * MS,
        error_class="upstream_5xx",
        error_message="upstream answered HTTP 503",
        upstream_status=503,
    )
    return RequestRecord(
        request_id="req-failed-3",
        endpoint="chat.completions",
        model_requested="all-down",
        stream=False,
        started_unix_ns=T0 + 9_000 * MS,
        duration_ns=60 * MS,
        status_code=502,
        attribution=Attribution(key_name="batch"),
        attempts=(a1, a2),
        error_class="upstream_5xx",
        error_message="all targets failed",
        input_messages=MESSAGES,
    )


def dest(endpoint: str = "http://127.0.0.1:4318/v1/traces", protocol: str = "protobuf") -> DestinationConfig:
    options = OtlpOptions(
        endpoint=endpoint,
        headers=(("x-api-key", SECRET), ("dd-otlp-source", "llmobs")),
        protocol=protocol,
        service="checkout",
    )
    return DestinationConfig(name="otel", kind="otlp", options=options, tags=TAGS, timeout_s=2.0)


def exporter(protocol: str = "protobuf", endpoint: str = "http://127.0.0.1:4318/v1/traces") -> OtlpExporter:
    return OtlpExporter(dest(endpoint, protocol), session=None)  # type: ignore[arg-type] # encoding needs no session


def decode(item: bytes) -> ResourceSpans:
    return ResourceSpans.FromString(item)


def one(record: RequestRecord, privacy: bool = False) -> ResourceSpans:
    items = exporter().encode(record, privacy, TAGS)
    assert len(items) == 1
    return decode(items[0])


def all_spans(rs: ResourceSpans) -> list[Span]:
    assert len(rs.scope_spans) == 1
    return list(rs.scope_spans[0].spans)


def attrs(kvs: Any) -> dict[str, Any]:
    out = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which == "array_value":
            out[kv.key] = [getattr(x, x.WhichOneof("value")) for x in v.array_value.values]
        else:
            out[kv.key] = getattr(v, which)
    return out


# --- encoding -------------------------------------------------------------------------------------


def test_each_record_becomes_exactly_one_resource_spans_with_the_service_name():
    ex = exporter()
    for record in (stream_record(), failover_record(), failed_record()):
        items = ex.encode(record, False, TAGS)
        assert len(items) == 1
        rs = decode(items[0])
        res = attrs(rs.resource.attributes)
        assert res["service.name"] == "checkout"
        assert res["telemetry.sdk.name"] == "relaycast"
        assert rs.scope_spans[0].scope.name == "relaycast"
        assert len(all_spans(rs)) == 1 + len(record.attempts)


def test_root_is_a_server_span_and_attempts_are_its_client_children_with_derived_ids():
    record = failover_record()
    ids = spans.trace_ids(record)
    root, first, second = all_spans(one(record))
    for s in (root, first, second):
        assert s.trace_id == bytes.fromhex(ids.trace_id)
    assert root.span_id == ids.root_span_id.to_bytes(8, "big") and root.parent_span_id == b""
    assert root.kind == Span.SPAN_KIND_SERVER and root.name == spans.root_name(record)
    for i, s in enumerate((first, second)):
        assert s.span_id == ids.attempt_span_id(i).to_bytes(8, "big")
        assert s.parent_span_id == root.span_id
        assert s.kind == Span.SPAN_KIND_CLIENT
    assert first.name == "chat claude-3-5-haiku" and second.name == "chat gpt-4o-mini"


def test_span_times_are_the_record_start_plus_attempt_offsets():
    record = failover_record()
    root, first, second = all_spans(one(record))
    assert root.start_time_unix_nano == record.started_unix_ns
    assert root.end_time_unix_nano == record.started_unix_ns + record.duration_ns
    for span, a in zip((first, second), record.attempts, strict=False):
        assert span.start_time_unix_nano == record.started_unix_ns + a.started_ns
        assert span.end_time_unix_nano - span.start_time_unix_nano == a.duration_ns


def test_successful_stream_carries_gen_ai_usage_cost_ttft_and_request_parameters():
    root, llm = all_spans(one(stream_record()))
    a = attrs(llm.attributes)
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openrouter"
    assert a["gen_ai.request.model"] == "openai/gpt-4o-mini"
    assert a["gen_ai.response.model"] == "openai/gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == 120 and a["gen_ai.usage.output_tokens"] == 30
    assert a["gen_ai.usage.cache_read.input_tokens"] == 100
    assert a["gen_ai.usage.reasoning.output_tokens"] == 12
    assert a["relaycast.cost.usd"] == pytest.approx(0.00042)
    assert "gen_ai.usage.input_cost" not in a and "gen_ai.usage.output_cost" not in a  # only the total is known
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.150)
    assert a["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.top_p"] == pytest.approx(1.0)
    assert a["gen_ai.request.stop_sequences"] == ["END"]
    assert a["gen_ai.request.seed"] == 7
    assert a["gen_ai.output.type"] == "json"
    assert a["relaycast.request.reasoning_effort"] == "low"
    assert a["gen_ai.request.stream"] is True
    assert llm.status.code == Status.STATUS_CODE_UNSET
    assert root.status.code == Status.STATUS_CODE_UNSET
    r = attrs(root.attributes)
    assert not any(k.startswith("gen_ai.usage.") for k in r)  # tokens and cost once, on the attempt


def test_attribution_trace_metadata_and_tags_are_on_every_span():
    for span in all_spans(one(stream_record())):
        a = attrs(span.attributes)
        assert a["user.id"] == "user-42"
        assert a["session.id"] == "sess-9"
        assert a["relaycast.feature"] == "Checkout Assistant"
        assert a["relaycast.app_url"] == "https://shop.example"
        assert a["relaycast.key_name"] == "web-app"
        assert a["relaycast.request_id"] == "req-stream-1"
        assert a["relaycast.trace.order_id"] == 1234
        assert a["relaycast.trace.experiment"] == "b"
        assert a["relaycast.trace.labels"] == ["x", "y"]
        assert "relaycast.trace.trace_name" not in a  # special keys name things instead
        assert a["team"] == "payments" and a["env"] == "staging"
    root = all_spans(one(stream_record()))[0]
    assert root.name == "checkout-flow"


def test_prompt_and_completion_are_json_messages_on_attempt_spans_output_only_on_the_serving_one():
    root, failed, served = all_spans(one(failover_record()))
    assert "gen_ai.input.messages" not in attrs(root.attributes)
    expected_input = [
        {"role": "system", "parts": [{"type": "text", "content": SYSTEM}]},
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]},
    ]
    for span in (failed, served):
        assert orjson.loads(attrs(span.attributes)["gen_ai.input.messages"]) == expected_input
    assert "gen_ai.output.messages" not in attrs(failed.attributes)
    output = orjson.loads(attrs(served.attributes)["gen_ai.output.messages"])
    assert output == [{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": "length"}]


def test_failed_attempt_has_error_status_and_error_type_while_the_request_succeeds():
    root, failed, served = all_spans(one(failover_record()))
    assert failed.status.code == Status.STATUS_CODE_ERROR
    assert failed.status.message == "429 Too Many Requests"
    fa = attrs(failed.attributes)
    assert fa["error.type"] == "rate_limit"
    assert fa["http.response.status_code"] == 429
    assert "gen_ai.response.model" not in fa
    assert served.status.code != Status.STATUS_CODE_ERROR and "error.type" not in attrs(served.attributes)
    assert root.status.code != Status.STATUS_CODE_ERROR
    assert attrs(root.attributes)["relaycast.served_by"] == "openai/gpt-4o-mini"


def test_failed_request_marks_the_root_and_every_attempt_as_errors():
    root, a1, a2 = all_spans(one(failed_record()))
    assert root.status.code == Status.STATUS_CODE_ERROR and root.status.message == "all targets failed"
    r = attrs(root.attributes)
    assert r["error.type"] == "upstream_5xx" and r["http.response.status_code"] == 502
    for span, message in ((a1, "upstream answered HTTP 500"), (a2, "upstream answered HTTP 503")):
        assert span.status.code == Status.STATUS_CODE_ERROR and span.status.message == message
        assert attrs(span.attributes)["error.type"] == "upstream_5xx"


def test_privacy_mode_removes_prompts_and_completions_but_keeps_tokens_and_metadata():
    for protocol in ("protobuf", "json"):
        for record in (stream_record(), failover_record()):
            item = exporter(protocol).encode(record, True, TAGS)[0]
            for secret_text in (PROMPT, ANSWER, SYSTEM):
                assert secret_text.encode() not in item
    root, llm = all_spans(one(stream_record(), privacy=True))
    a = attrs(llm.attributes)
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a
    assert a["gen_ai.usage.input_tokens"] == 120 and a["relaycast.cost.usd"] == pytest.approx(0.00042)
    assert a["user.id"] == "user-42"


def test_json_items_hold_the_same_spans_as_protobuf_items_with_hex_ids():
    for record in (stream_record(), failover_record(), failed_record()):
        pb = decode(exporter("protobuf").encode(record, False, TAGS)[0])
        doc = orjson.loads(exporter("json").encode(record, False, TAGS)[0])
        ids = spans.trace_ids(record)
        first = doc["scopeSpans"][0]["spans"][0]
        assert first["traceId"] == ids.trace_id and first["spanId"] == f"{ids.root_span_id:016x}"
        assert isinstance(first["startTimeUnixNano"], str) and first["kind"] == 2
        for s in doc["scopeSpans"][0]["spans"]:  # the standard protobuf JSON mapping wants base64 bytes
            for key in ("traceId", "spanId", "parentSpanId"):
                if key in s:
                    s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
        assert json_format.ParseDict(doc, ResourceSpans()) == pb


def test_oversized_content_is_replaced_by_a_marker_so_the_record_still_fits():
    huge = "x" * (5 * 1024 * 1024)
    record = msgspec.structs.replace(stream_record(), input_messages=({"role": "user", "content": huge},))
    ex = exporter()
    item = ex.encode(record, False, TAGS)[0]
    assert len(item) <= ex.max_batch_bytes
    a = attrs(all_spans(decode(item))[1].attributes)
    assert spans.DROPPED_IO in a["gen_ai.input.messages"]
    assert a["relaycast.collection_errors"] == "dropped_io"
    assert a["gen_ai.usage.input_tokens"] == 120


def test_client_parent_span_id_links_the_root_to_the_callers_trace():
    trace = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "parent_span_id": "b7ad6b7169203331"}
    record = RequestRecord(
        request_id="req-linked",
        endpoint="chat.completions",
        model_requested="m",
        stream=False,
        started_unix_ns=T0,
        duration_ns=MS,
        status_code=200,
        attribution=Attribution(trace=trace),
    )
    (root,) = all_spans(one(record))
    assert root.trace_id.hex() == trace["trace_id"]
    assert root.parent_span_id.hex() == trace["parent_span_id"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    meta=st.dictionaries(
        st.text(min_size=1, max_size=12).filter(
            lambda k: k not in ("trace_id", "parent_span_id", "trace_name", "span_name", "generation_name")
        ),
        st.one_of(
            st.text(max_size=40),
            st.integers(-(2**63), 2**63 - 1),
            st.booleans(),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        max_size=6,
    ),
    prompt=st.text(max_size=300),
)
def test_any_trace_metadata_and_prompt_round_trip_through_the_official_decoder(meta, prompt):
    record = RequestRecord(
        request_id="req-prop",
        endpoint="chat.completions",
        model_requested="m",
        stream=False,
        started_unix_ns=T0,
        duration_ns=MS,
        status_code=200,
        attribution=Attribution(trace=meta),
        attempts=stream_record().attempts,
        input_messages=({"role": "user", "content": prompt},),
        output_text=prompt,
    )
    for protocol in ("protobuf", "json"):
        item = exporter(protocol).encode(record, False, ())[0]
        if protocol == "json":
            doc = orjson.loads(item)
            for s in doc["scopeSpans"][0]["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64encode(bytes.fromhex(s[key])).decode()
            rs = json_format.ParseDict(doc, ResourceSpans())
        else:
            rs = decode(item)
        root, llm = all_spans(rs)
        a = attrs(llm.attributes)
        for k, v in meta.items():
            assert a[f"relaycast.trace.{k}"] == v
        assert orjson.loads(a["gen_ai.input.messages"])[0]["parts"][0]["content"] == prompt


# --- sending --------------------------------------------------------------------------------------


def test_sends_three_records_as_one_export_request_to_the_configured_path_with_headers():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = build(dest(cap.url + "/otlp/v1/traces"), session)
        assert isinstance(ex, OtlpExporter)
        items = [it for r in (stream_record(), failover_record(), failed_record()) for it in ex.encode(r, False, TAGS)]
        await ex.send(items)
        ((path, headers, raw),) = cap.requests
        assert path == "/otlp/v1/traces"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-api-key"] == SECRET and headers["dd-otlp-source"] == "llmobs"
        req = ExportTraceServiceRequest.FromString(raw)
        assert len(req.resource_spans) == 3
        assert [len(rs.scope_spans[0].spans) for rs in req.resource_spans] == [2, 3, 3]
        assert req.resource_spans[1] == decode(items[1])

    run(body)


def test_json_protocol_sends_resource_spans_json_with_hex_ids():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = OtlpExporter(dest(cap.url + "/v1/traces", protocol="json"), session)
        records = (stream_record(), failover_record())
        await ex.send([it for r in records for it in ex.encode(r, False, TAGS)])
        ((path, headers, raw),) = cap.requests
        assert headers["content-type"] == "application/json"
        doc = orjson.loads(raw)
        assert len(doc["resourceSpans"]) == 2
        for rs, record in zip(doc["resourceSpans"], records, strict=False):
            ids = spans.trace_ids(record)
            root = rs["scopeSpans"][0]["spans"][0]
            assert root["traceId"] == ids.trace_id
            assert root["spanId"] == f"{ids.root_span_id:016x}"
            child = rs["scopeSpans"][0]["spans"][1]
            assert child["parentSpanId"] == root["spanId"] and child["spanId"] == f"{ids.attempt_span_id(0):016x}"

    run(body)


def test_503_is_retryable_with_retry_after_and_400_is_not():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = OtlpExporter(dest(cap.url + "/v1/traces"), session)
        items = ex.encode(stream_record(), False, TAGS)
        cap.answers = [(503, {"Retry-After": "7"}, b""), (400, {}, b""), (500, {}, b""), (429, {}, b"")]
        with pytest.raises(ExportError) as e503:
            await ex.send(items)
        assert e503.value.retryable and e503.value.status == 503 and e503.value.retry_after == 7.0
        with pytest.raises(ExportError) as e400:
            await ex.send(items)
        assert not e400.value.retryable and e400.value.status == 400
        with pytest.raises(ExportError) as e500:  # the OTLP/HTTP spec retries only 429, 502, 503, 504
            await ex.send(items)
        assert not e500.value.retryable
        with pytest.raises(ExportError) as e429:
            await ex.send(items)
        assert e429.value.retryable
        assert all(SECRET not in str(e.value) for e in (e503, e400, e500, e429))

    run(body)


def test_a_secret_masked_by_the_pipeline_leaves_protobuf_items_decodable():
    key = "sk-upstream-secret-0123456789abcdef"  # the pipeline masks known secrets in items, length kept
    leaky = msgspec.structs.replace(
        failover_record(), input_messages=({"role": "user", "content": f"my key is {key}"},)
    )

    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = OtlpExporter(dest(cap.url + "/v1/traces"), session)
        scrub = Redactor([key]).scrub_known
        items = [scrub(it) for r in (stream_record(), leaky, failed_record()) for it in ex.encode(r, False, TAGS)]
        await ex.send(items)
        ((_, _, raw),) = cap.requests
        assert key.encode() not in raw
        req = ExportTraceServiceRequest.FromString(raw)
        assert len(req.resource_spans) == 3
        assert b"my key is " + b"*" * len(key) in raw

    run(body)


def test_partial_success_is_a_success_that_counts_and_logs_the_rejected_spans(caplog: pytest.LogCaptureFixture):
    answer = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=2, error_message="span name too long")
    ).SerializeToString()

    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = OtlpExporter(dest(cap.url + "/v1/traces"), session)
        cap.answers = [(200, {"Content-Type": "application/x-protobuf"}, answer)]
        with caplog.at_level(logging.WARNING, logger="relaycast.telemetry.otlp"):
            await ex.send(ex.encode(failover_record(), False, TAGS))
        assert ex.rejected_spans == 2
        assert ex.last_partial_success == "span name too long"
        await ex.send(ex.encode(failover_record(), False, TAGS))  # a plain 200 adds nothing
        assert ex.rejected_spans == 2

    run(body)
    assert any("rejected_spans=2" in r.getMessage() for r in caplog.records)


def test_connection_test_reports_ok_wrong_path_bad_credentials_and_unreachable_plainly():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = OtlpExporter(dest(cap.url + "/v1/traces"), session)
        cap.answers = [(200, {}, b""), (404, {}, b""), (401, {}, b""), (403, {}, b"")]
        ok = await ex.test()
        assert ok.ok and ok.message.startswith("ok")
        path, headers, raw = cap.requests[0]
        (rs,) = ExportTraceServiceRequest.FromString(raw).resource_spans
        assert rs.scope_spans[0].spans[0].name == "relaycast.test_connection"
        assert headers["x-api-key"] == SECRET
        not_found = await ex.test()
        assert not not_found.ok and "endpoint answered HTTP 404 (is the path /v1/traces?)" in not_found.message
        for status in (401, 403):
            denied = await ex.test()
            assert not denied.ok and f"rejected the credentials (HTTP {status})" in denied.message
        with socket.socket() as closed:  # bound but never listening: connections are refused
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            gone = await OtlpExporter(dest(f"http://127.0.0.1:{port}/v1/traces"), session).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        for result in (ok, not_found, denied, gone):
            assert SECRET not in result.message

    run(body)


def test_connection_test_never_shows_credentials_from_the_url():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        url = cap.url.replace("http://", "http://user:pa55word-in-url@") + "/v1/traces?token=query-secret"
        cap.answers = [(404, {}, b"")]
        result = await OtlpExporter(dest(url), session).test()
        assert not result.ok
        assert "pa55word-in-url" not in result.message and "query-secret" not in result.message

    run(body)


def test_the_provider_name_is_the_vendor_and_the_configured_provider_its_own_attribute():
    record = stream_record()
    vendored = msgspec.structs.replace(record, attempts=(msgspec.structs.replace(record.attempts[0], vendor="openai"),))
    _, llm = all_spans(one(vendored))
    a = attrs(llm.attributes)
    assert a["gen_ai.provider.name"] == "openai" and a["relaycast.provider"] == "openrouter"
    assert "gen_ai.usage.total_cost" not in a  # cost is not a GenAI convention: relaycast.cost.usd


def test_the_upstreams_model_id_and_address_pass_through_and_a_cut_stream_says_error():
    record = stream_record()
    ok = msgspec.structs.replace(record.attempts[0], response_model="gpt-4o-mini-2024-07-18", response_id="chatcmpl-9x")
    cut = msgspec.structs.replace(
        record.attempts[0], error_class="stream_cut", error_message="cut", finish_reason=None, ttft_ns=5 * MS
    )
    rec = msgspec.structs.replace(record, attempts=(cut, ok))
    exp = OtlpExporter(
        dest("http://127.0.0.1:4318/v1/traces", "protobuf"), None, servers={"openrouter": ("openrouter.ai", 443)}
    )  # type: ignore[arg-type]
    _, first, second = all_spans(decode(exp.encode(rec, False, TAGS)[0]))
    a, b = attrs(first.attributes), attrs(second.attributes)
    assert b["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18" and b["gen_ai.response.id"] == "chatcmpl-9x"
    assert (b["server.address"], b["server.port"]) == ("openrouter.ai", 443)
    assert a["gen_ai.response.finish_reasons"] == ["error"] and "gen_ai.response.id" not in a


def test_tool_calls_and_tool_results_are_message_parts():
    record = stream_record()
    call = {"id": "call_1", "type": "function", "function": {"name": "search", "arguments": '{"q":"fox"}'}}
    rec = msgspec.structs.replace(
        record,
        input_messages=(
            {"role": "user", "content": "find"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a fox"},
        ),
        output_text=None,
        output_tool_calls=({"id": "call_2", "name": "search", "arguments": '{"q":"dog"}'},),
    )
    _, llm = all_spans(one(rec))
    a = attrs(llm.attributes)
    inputs = orjson.loads(a["gen_ai.input.messages"])
    assert inputs[1] == {
        "role": "assistant",
        "parts": [{"type": "tool_call", "id": "call_1", "name": "search", "arguments": {"q": "fox"}}],
    }
    assert inputs[2] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "a fox"}]}
    [out] = orjson.loads(a["gen_ai.output.messages"])
    assert out["parts"] == [{"type": "tool_call", "id": "call_2", "name": "search", "arguments": {"q": "dog"}}]


def test_every_gen_ai_attribute_is_a_name_the_released_conventions_define():
    """Checked against OpenTelemetry's released semantic-conventions package, not against our own list. One name
    is ahead of it, on purpose: `gen_ai.usage.cache_write.input_tokens`, the GenAI conventions repository's new
    name for cache writes, sent beside the released `cache_creation` one until the rename is released."""
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes, server_attributes

    released = {v for v in vars(gen_ai_attributes).values() if isinstance(v, str) and v.startswith("gen_ai.")}
    released |= {server_attributes.SERVER_ADDRESS, server_attributes.SERVER_PORT}
    usage = Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=100, reasoning_tokens=12, cache_write_tokens=9)
    rec = msgspec.structs.replace(
        stream_record(), attempts=(msgspec.structs.replace(stream_record().attempts[0], usage=usage),)
    )
    ex = OtlpExporter(dest(), None, servers={"openrouter": ("openrouter.ai", 443)})  # type: ignore[arg-type]
    spans_sent = all_spans(decode(ex.encode(rec, False, ())[0]))
    sent = {a.key for s in spans_sent for a in s.attributes}
    ours = {k for k in sent if k.startswith("gen_ai.")}
    assert {"gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_read.input_tokens"} <= ours
    assert ours - released == {"gen_ai.usage.cache_write.input_tokens"}
    assert {"server.address", "server.port"} <= sent
