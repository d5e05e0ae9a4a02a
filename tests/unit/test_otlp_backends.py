"""What every OTLP backend preset shares, through the generic machinery: the kind registry and its settings,
gzip bodies, extra resource attributes, Test Connection by the backend's own check or by an empty export, the
credentials the redactor learns, and oversized content dropped whatever the backend names it."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket

import aiohttp
import msgspec
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relaycast import config as config_mod
from relaycast.config_reader import ConfigError
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.telemetry import kinds, spans
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.otlp_semconv import dropped
from relaycast.telemetry.exporters.otlp_wire import Content
from relaycast.telemetry.kinds.base import Check
from relaycast.telemetry.settings import KINDS, DestinationConfig, OtlpOptions, otlp_from_env
from tests.capture import AsyncCapture as Capture
from tests.capture import run_with_capture as run

PROVIDERS = """
providers:
  - {name: fake, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: x}
"""
KEY = "backend-key-0123456789abcdef"


def record() -> RequestRecord:
    now = 1_760_000_000_000_000_000
    a = Attempt(
        target="fake/gpt-4o-mini",
        provider="fake",
        model="gpt-4o-mini",
        started_ns=0,
        duration_ns=5_000_000,
        usage=Usage(prompt_tokens=11, completion_tokens=7),
        finish_reason="stop",
    )
    return RequestRecord(
        request_id="req-backend-1",
        endpoint="chat.completions",
        model_requested="gpt-4o-mini",
        stream=False,
        started_unix_ns=now,
        duration_ns=6_000_000,
        status_code=200,
        attribution=Attribution(user="u-1"),
        attempts=(a,),
        input_messages=({"role": "user", "content": "hello there"},),
        output_text="general kenobi",
    )


def dest(endpoint: str, **options: object) -> DestinationConfig:
    o = OtlpOptions(endpoint=endpoint, headers=(("authorization", f"Bearer {KEY}"),), backend="otel_collector")
    return DestinationConfig(name="c", kind="otel_collector", options=dataclasses.replace(o, **options))  # type: ignore[arg-type]


def test_every_kind_in_the_registry_has_a_module_with_its_spec():
    for kind in kinds.KINDS:
        s = kinds.spec(kind)
        assert s.kind == kind and s.title and kind in KINDS
        assert not (s.keys & {"name", "kind", "tags", "privacy_mode"}), f"{kind} redefines a common setting"


def test_an_unknown_kind_or_setting_is_refused_plainly():
    with pytest.raises(ConfigError) as e:
        config_mod.parse(PROVIDERS + "broadcast: {destinations: [{kind: honeycomb-ish}]}", env={})
    assert "unknown kind 'honeycomb-ish'" in str(e.value) and "langfuse" in str(e.value)
    with pytest.raises(ConfigError) as e:
        config_mod.parse(PROVIDERS + "broadcast: {destinations: [{kind: otel_collector, site: x}]}", env={})
    assert "broadcast.destinations[0].site" in str(e.value) and "unknown setting" in str(e.value)


def test_the_collector_kind_defaults_to_a_local_collector_and_takes_the_otlp_settings():
    cfg = config_mod.parse(
        PROVIDERS + "broadcast: {destinations: [{kind: otel_collector, compression: gzip, protocol: json}]}", env={}
    )
    assert cfg.broadcast is not None
    (d,) = cfg.broadcast.destinations
    assert isinstance(d.options, OtlpOptions)
    assert d.options.endpoint == "http://127.0.0.1:4318/v1/traces"
    assert (d.options.compression, d.options.protocol, d.options.backend) == ("gzip", "json", "otel_collector")


def test_otel_compression_variable_turns_on_gzip():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    d = otlp_from_env(env)
    assert d is not None and isinstance(d.options, OtlpOptions) and d.options.compression == "gzip"
    d = otlp_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert d is not None and isinstance(d.options, OtlpOptions) and d.options.compression == "none"


def test_otel_timeout_variables_are_milliseconds_and_default_to_the_specifications_ten_seconds():
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}

    def timeout_s(**env: str) -> float:
        d = otlp_from_env({**endpoint, **env})
        assert d is not None
        return d.timeout_s

    assert timeout_s() == 10.0
    assert timeout_s(OTEL_EXPORTER_OTLP_TIMEOUT="2500") == 2.5
    assert timeout_s(OTEL_EXPORTER_OTLP_TIMEOUT="2500", OTEL_EXPORTER_OTLP_TRACES_TIMEOUT="750") == 0.75
    assert timeout_s(OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=" ", OTEL_EXPORTER_OTLP_TIMEOUT="30000") == 30.0
    for bad in ("0", "-5", "10s", "nan", "inf", "3600001"):
        with pytest.raises(ConfigError) as e:
            timeout_s(OTEL_EXPORTER_OTLP_TRACES_TIMEOUT=bad)
        assert "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT" in str(e.value) and "milliseconds" in str(e.value)
    # A configured destination keeps its own `timeout` (seconds); the variables describe only the one they make.
    cfg = config_mod.parse(
        PROVIDERS + "broadcast: {destinations: [{kind: otel_collector, timeout: 3}]}",
        env={**endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "60000"},
    )
    assert cfg.broadcast is not None and cfg.broadcast.destinations[0].timeout_s == 3.0


def test_an_otel_sdk_switched_off_or_another_traces_exporter_makes_no_otlp_destination():
    endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}
    assert otlp_from_env(endpoint) is not None
    assert otlp_from_env({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert otlp_from_env({**endpoint, "OTEL_SDK_DISABLED": "TRUE "}) is None
    assert otlp_from_env({**endpoint, "OTEL_SDK_DISABLED": "false"}) is not None
    for exporters in ("none", "console", "zipkin,console"):
        assert otlp_from_env({**endpoint, "OTEL_TRACES_EXPORTER": exporters}) is None
    for exporters in ("otlp", "OTLP", "console, otlp", ""):
        assert otlp_from_env({**endpoint, "OTEL_TRACES_EXPORTER": exporters}) is not None
    cfg = config_mod.parse(PROVIDERS, env={**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert cfg.broadcast is not None and cfg.broadcast.destinations == ()


def test_gzip_bodies_and_extra_resource_attributes_arrive_decodable():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = build(dest(cap.url + "/v1/traces", compression="gzip", resource=(("project.name", "shop"),)), session)
        await ex.send(ex.encode(record(), False, ()))
        _, headers, raw = cap.requests[0]
        assert headers["content-encoding"] == "gzip" and headers["content-type"] == "application/x-protobuf"
        # aiohttp's server inflates the body it reads; the wire carried the gzip stream, as its length says
        assert int(headers["content-length"]) == len(gzip.compress(raw, 6)) < len(raw)
        req = ExportTraceServiceRequest.FromString(raw)
        (rs,) = req.resource_spans
        resource = {a.key: a.value.string_value for a in rs.resource.attributes}
        assert resource["project.name"] == "shop" and resource["service.name"] == "relaycast"
        names = [s.name for s in rs.scope_spans[0].spans]
        assert "chat gpt-4o-mini" in names

    run(body)


def test_a_backend_without_its_own_check_is_tested_with_an_empty_export():
    """No span reaches the backend's project; the key and the address are checked all the same."""

    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        cap.answers = [200, 401, 404]
        ex = build(dest(cap.url + "/v1/traces"), session)
        ok = await ex.test()
        assert ok.ok and "OpenTelemetry Collector" in ok.message, ok.message
        path, headers, raw = cap.requests[0]
        assert path == "/v1/traces" and raw == b"" and headers["authorization"] == f"Bearer {KEY}"
        assert not ExportTraceServiceRequest.FromString(raw).resource_spans
        denied = await ex.test()
        assert not denied.ok and "rejected the credentials (HTTP 401)" in denied.message
        assert "check the headers" in denied.message
        missing = await ex.test()
        assert not missing.ok and "HTTP 404" in missing.message and "address" in missing.message
        json_ex = build(dest(cap.url + "/v1/traces", protocol="json"), session)
        assert (await json_ex.test()).ok
        assert cap.requests[-1][2] == b"{}"
        for r in (ok, denied, missing):
            assert KEY not in r.message

    run(body)


def test_a_backend_check_calls_its_own_endpoint_and_reads_the_answer_plainly():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        check = Check(url=cap.url + "/api/projects", headers=(("x-api-key", KEY),))
        ex = build(dest(cap.url + "/v1/traces", check=check), session)
        cap.answers = [200, 403, 404, 302]
        ok = await ex.test()
        assert ok.ok and cap.requests[0][0] == "/api/projects" and cap.requests[0][1]["x-api-key"] == KEY
        assert cap.requests[0][2] == b"", "a GET: nothing posted"
        denied = await ex.test()
        assert not denied.ok and "rejected the credentials (HTTP 403)" in denied.message
        missing = await ex.test()
        assert not missing.ok and "HTTP 404" in missing.message
        moved = await ex.test()
        assert not moved.ok and "redirect" in moved.message
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            gone = await build(
                dest(cap.url + "/v1/traces", check=Check(url=f"http://127.0.0.1:{port}/api")), session
            ).test()
        assert not gone.ok and gone.message.startswith("unreachable:")
        assert all(r[0] == "/api/projects" for r in cap.requests), "the traces endpoint is not touched"

    run(body)


def test_credentials_and_check_headers_are_secrets_for_the_redactor():
    d = dest(
        "http://127.0.0.1:9/v1/traces",
        credentials=("sk-lf-raw-secret-part",),
        check=Check(url="http://127.0.0.1:9/api?token=url-token-123", headers=(("x-api-key", "check-key-98765"),)),
    )
    secrets = d.secrets()
    for s in ("sk-lf-raw-secret-part", "check-key-98765", "url-token-123", KEY):
        assert s in secrets


def test_oversized_content_is_dropped_whatever_the_backend_names_it():
    content = Content({7: {"gen_ai.input.messages": "[...]", "input.value": "a long prompt", "output.value": "x"}})
    out = dropped(content).by_span[7]
    assert out["input.value"] == spans.DROPPED_IO and out["output.value"] == spans.DROPPED_IO
    assert "a long prompt" not in str(out) and out["relaycast.collection_errors"] == "dropped_io"


def test_a_kind_may_default_common_settings_otherwise_and_the_config_still_wins():
    """S3 bills every PUT (30 s batches); ClickHouse wants few inserts; the others flush every half second."""

    def flush(entry: str) -> tuple[float, float]:
        cfg = config_mod.parse(PROVIDERS + f"broadcast: {{destinations: [{entry}]}}", env={})
        assert cfg.broadcast is not None
        d = cfg.broadcast.destinations[0]
        return d.flush_interval_s, d.timeout_s

    assert flush("{kind: s3, bucket: traces}") == (30.0, 30.0)
    assert flush("{kind: s3, bucket: traces, flush_interval: 5, timeout: 10}") == (5.0, 10.0)
    assert flush('{kind: clickhouse, url: "http://127.0.0.1:8123"}') == (2.0, 5.0)
    assert flush("{kind: otel_collector}") == (0.5, 5.0)


# Each OTLP backend with what its setup page asks for: a key that must be masked, and names that must not.
BACKENDS = {
    "langfuse": {"public_key": "pk-lf-visible-id", "secret_key": "sk-lf-secret-9f8e7d6c"},
    "langsmith": {"api_key": "lsv2_secret_9f8e7d6c", "project": "checkout-project"},
    "braintrust": {"api_key": "bt-secret-9f8e7d6c", "project": "checkout-project"},
    "arize": {"api_key": "arize-secret-9f8e7d6c", "space_id": "U3BhY2U6MTIz", "project_name": "checkout-project"},
    "phoenix": {"api_key": "phoenix-secret-9f8e7d6c", "project_name": "checkout-project"},
    "grafana_cloud": {"instance_id": "123456", "token": "glc_secret_9f8e7d6c", "zone": "prod-eu-west-2"},
    "newrelic": {"license_key": "nr-secret-9f8e7d6cNRAL"},
    "opik": {"api_key": "opik-secret-9f8e7d6c", "workspace": "acme-workspace", "project_name": "checkout-project"},
    "weave": {"api_key": "wandb-secret-9f8e7d6c", "entity": "acme-workspace", "project": "checkout-project"},
    "sentry": {"dsn": "https://sentrysecret9f8e7d6c@o1.ingest.sentry.io/42"},
}


def backend(kind: str, env: dict[str, str] | None = None) -> DestinationConfig:
    entry = ", ".join(f'{k}: "{v}"' for k, v in BACKENDS[kind].items())
    cfg = config_mod.parse(PROVIDERS + f"broadcast: {{destinations: [{{kind: {kind}, {entry}}}]}}", env=env or {})
    assert cfg.broadcast is not None
    return cfg.broadcast.destinations[0]


def test_every_backends_key_is_masked_and_its_plain_names_are_not():
    """A project, workspace or SDK name in a header is not a secret: masking it would mask that word in every
    export, log line and status (`relaycast.provider` would become `*********.provider`)."""
    for kind in BACKENDS:
        d = backend(kind)
        secrets = set(d.secrets())
        key = next(v for v in BACKENDS[kind].values() if "secret" in v)
        assert any(key in s for s in secrets), f"{kind}: its key is not masked"
        for word in ("relaycast", "checkout-project", "acme-workspace", "project_name:checkout-project", "otel"):
            assert word not in secrets, f"{kind}: '{word}' would be masked everywhere"
        text = Redactor(tuple(secrets)).scrub('{"schema":"relaycast.request.v1","project":"checkout-project"}')
        assert text == '{"schema":"relaycast.request.v1","project":"checkout-project"}', kind


def test_an_otel_collector_in_the_config_is_the_one_the_otel_variables_describe():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    cfg = config_mod.parse(PROVIDERS + "broadcast: {destinations: [{kind: otel_collector}]}", env=env)
    assert cfg.broadcast is not None and [d.kind for d in cfg.broadcast.destinations] == ["otel_collector"]
    with pytest.raises(ConfigError) as e:  # a name the environment's destination would take too
        config_mod.parse(
            PROVIDERS + "broadcast: {destinations: [{name: otlp, kind: webhook, url: 'http://h'}]}", env=env
        )
    assert "named 'otlp'" in str(e.value)


def big_failover_record(prompt: str) -> RequestRecord:
    base = record()
    failed = msgspec.structs.replace(base.attempts[0], error_class="upstream_5xx", usage=None, finish_reason=None)
    served = msgspec.structs.replace(base.attempts[0], started_ns=6_000_000)
    return msgspec.structs.replace(
        base,
        attempts=(failed, served),
        input_messages=({"role": "user", "content": prompt},),
        attribution=Attribution(user="u-1", trace={"key_name": "billing-admin", "request_id": "forged", "x": 1}),
    )


def test_a_record_too_large_for_a_backend_keeps_the_answering_attempts_content_first():
    """Langfuse sends the prompt on the root and on every attempt: a 1.5 MB prompt through a failover makes an
    item past the limit. The other spans' content goes first; the answer's stays."""
    prompt = "p" * 1_500_000

    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        for kind in ("langfuse", "braintrust", "phoenix"):
            d = backend(kind)
            assert isinstance(d.options, OtlpOptions)
            d = dataclasses.replace(d, options=dataclasses.replace(d.options, endpoint=cap.url + "/v1/traces"))
            ex = build(d, session)
            (item,) = ex.encode(big_failover_record(prompt), False, ())
            assert len(item) <= ex.max_batch_bytes
            await ex.send([item])
            (rs,) = ExportTraceServiceRequest.FromString(cap.requests[-1][2]).resource_spans
            root, failed, served = rs.scope_spans[0].spans
            kept = {a.key: a.value.string_value for a in served.attributes}
            assert any(prompt in v for v in kept.values()), f"{kind}: the answer's prompt was dropped"
            assert "relaycast.collection_errors" not in kept
            assert "gen_ai.input.messages" not in kept, f"{kind} renders its own content: the prompt goes once"
            for span in (root, failed):
                attrs = {a.key: a.value.string_value for a in span.attributes}
                if kind != "braintrust":  # Langfuse (root, attempts) and Phoenix (two forms) pass the limit
                    assert not any(prompt in v for v in attrs.values()), f"{kind}: {span.name} kept the prompt"
                if any(prompt in v for v in attrs.values()):
                    continue  # Braintrust: the prompt once per attempt fits
                if any(spans.DROPPED_IO in v for v in attrs.values()):
                    assert attrs["relaycast.collection_errors"] == "dropped_io"
                for k in (
                    "langfuse.observation.input",
                    "input.value",
                    "braintrust.input_json",
                    "gen_ai.input.messages",
                ):
                    if k in attrs:
                        json.loads(attrs[k])  # still JSON where the backend parses JSON
            for span in (root, failed, served):  # the client's trace metadata never overrides relaycast's
                for a in span.attributes:  # (it is kept under relaycast.trace.*, namespaced)
                    if not a.key.startswith("relaycast.trace."):
                        text = a.value.SerializeToString()
                        assert b"billing-admin" not in text and b"forged" not in text, f"{kind}: {a.key}"

    run(body)


def encoded(kind: str, rec: RequestRecord, privacy: bool = False) -> tuple[int, list[dict[str, str]]]:
    """(item size, each span's string attributes) as `kind` would send `rec`."""
    ex = build(backend(kind), None)  # type: ignore[arg-type]
    (item,) = ex.encode(rec, privacy, ())
    assert len(item) <= ex.max_batch_bytes
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    rs = ResourceSpans.FromString(item)
    return len(item), [{a.key: a.value.string_value for a in s.attributes} for s in rs.scope_spans[0].spans]


def test_thousands_of_small_messages_never_cost_the_record_its_tokens_and_cost():
    """20,000 one-word messages (600 KB) flatten to 40,000 attributes per span: dropped for size, they go whole,
    the record keeps its usage and cost."""
    many = tuple({"role": "user", "content": "hi"} for _ in range(20_000))
    rec = msgspec.structs.replace(big_failover_record("x"), input_messages=many)
    for kind in ("phoenix", "langfuse", "otel_collector"):
        if kind == "otel_collector":
            size = len(build(dest("http://127.0.0.1:9/v1/traces"), None).encode(rec, False, ())[0])  # type: ignore[arg-type]
            assert size < 4_000_000
            continue
        _, (root, failed, served) = encoded(kind, rec)
        assert served.get("gen_ai.usage.input_tokens") is not None or kind == "phoenix"
        assert not any(k.startswith("llm.input_messages.") for k in root), f"{kind}: flattened keys kept"


def test_a_huge_json_schema_or_trace_value_is_not_copied_into_openinference_metadata():
    """The client sizes its JSON schema and its trace metadata; the GenAI attributes carry them already
    (`relaycast.request.*`, `relaycast.trace.*`): the OpenInference copies are left out past 16 KiB, so the
    record is no larger for Phoenix than for a plain collector."""
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"description": "d" * 1_200_000}}}
    base = big_failover_record("x")
    for rec in (
        msgspec.structs.replace(base, params={"response_format": schema}),
        msgspec.structs.replace(base, attribution=Attribution(trace={"blob": "b" * 800_000})),
    ):
        plain = len(build(dest("http://127.0.0.1:9/v1/traces"), None).encode(rec, True, ())[0])  # type: ignore[arg-type]
        size, spans_ = encoded("phoenix", rec, privacy=True)
        assert size < plain + 50_000
        for attrs in spans_:
            assert len(attrs.get("metadata", "")) < 20_000
            assert len(attrs.get("llm.invocation_parameters", "")) < 20_000


def test_openinference_input_is_the_text_of_the_messages_never_an_images_bytes():
    image = "data:image/png;base64," + "A" * 300_000
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": image}}]
    rec = msgspec.structs.replace(record(), input_messages=({"role": "user", "content": content},))
    _, spans_ = encoded("phoenix", rec)
    for attrs in spans_:
        assert "AAAA" not in attrs.get("input.value", "")
    root, served = spans_
    assert "what is this?" in json.loads(root["input.value"])["messages"][0]["content"]
    assert root["input.mime_type"] == "application/json"


def test_llm_system_is_set_only_to_a_product_openinference_names():
    gemini = msgspec.structs.replace(record().attempts[0], vendor="gcp.gemini")
    _, (_, served) = encoded("phoenix", msgspec.structs.replace(record(), attempts=(gemini,)))
    assert served["llm.provider"] == "google" and "llm.system" not in served
    openai_ = msgspec.structs.replace(record().attempts[0], vendor="openai")
    _, (_, served) = encoded("phoenix", msgspec.structs.replace(record(), attempts=(openai_,)))
    assert served["llm.provider"] == served["llm.system"] == "openai"
