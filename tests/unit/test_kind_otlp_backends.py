"""Comet Opik, W&B Weave, Sentry, Grafana Cloud and New Relic: their settings (defaults, the backends' own
environment variables, plain errors), what each receives (requests to a capture server on 127.0.0.1, decoded with
the official opentelemetry-proto classes) and their Test Connection verdicts."""

from __future__ import annotations

import base64
import gzip
import socket
from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from relaycast.config_reader import ConfigError, Reader
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.telemetry.exporters import build
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions, parse_broadcast
from tests.capture import AsyncCapture
from tests.capture import run_with_capture as run

MS = 1_000_000
PROMPT = "Which city is the capital of France? (prompt-marker-5e1)"
ANSWER = "Paris. (answer-marker-77c)"
COST_PUSD = 1_230_000_000  # $0.00123
INPUT_PUSD = 230_000_000


def dest(kind: str, env: Mapping[str, str] | None = None, **given: Any) -> DestinationConfig:
    """A destination as `broadcast.destinations[0]` of a config names it."""
    e = dict(env or {})
    raw = {"destinations": [{"name": kind, "kind": kind, **given}]}
    return parse_broadcast(Reader(e), raw, e, None).destinations[0]


def options(kind: str, env: Mapping[str, str] | None = None, **given: Any) -> OtlpOptions:
    o = dest(kind, env, **given).options
    assert isinstance(o, OtlpOptions)
    return o


def record(session: str | None = "sess-1", prompt: str = PROMPT) -> RequestRecord:
    attempt = Attempt(
        target="openai/gpt-4o-mini",
        provider="openai",
        vendor="openai",
        model="gpt-4o-mini",
        started_ns=MS,
        duration_ns=300 * MS,
        usage=Usage(prompt_tokens=42, completion_tokens=7),
        finish_reason="stop",
        upstream_status=200,
        cost_pusd=COST_PUSD,
        cost_input_pusd=INPUT_PUSD,
        cost_source="computed",
        response_model="gpt-4o-mini-2024-07-18",
    )
    return RequestRecord(
        request_id="req-kinds-1",
        endpoint="chat.completions",
        model_requested="fast",
        stream=False,
        started_unix_ns=1_760_000_000_000_000_000,
        duration_ns=310 * MS,
        status_code=200,
        attribution=Attribution(
            user="alice", session_id=session, feature="Checkout", key_name="web", tags=(("team", "pay"),)
        ),
        attempts=(attempt,),
        input_messages=({"role": "user", "content": prompt},),
        output_text=ANSWER,
    )


def value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def inflate(body: bytes) -> bytes:
    """The body as sent before compression (the capture server's aiohttp may already have inflated it)."""
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


def decode(body: bytes, headers: Mapping[str, str]) -> ExportTraceServiceRequest:
    req: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(inflate(body))
    return req


def spans_of(req: ExportTraceServiceRequest) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(resource attributes, root span attributes, attempt span attributes) of a one-record export."""
    (rs,) = req.resource_spans
    root, attempt = [s for ss in rs.scope_spans for s in ss.spans]
    resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
    return (
        resource,
        {kv.key: value(kv.value) for kv in root.attributes},
        {kv.key: value(kv.value) for kv in attempt.attributes},
    )


def export(d: DestinationConfig, rec: RequestRecord, privacy: bool = False) -> tuple[str, dict[str, str], bytes]:
    """Encode and send one record to a capture server standing in for the backend; the request it got."""

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple[str, dict[str, str], bytes]:
        ex = build(_at(d, cap.url), session)
        await ex.send(ex.encode(rec, privacy, ()))
        (got,) = cap.requests
        return got

    return run(body)  # type: ignore[no-any-return]


def connection_test(d: DestinationConfig, *answers: int) -> tuple[str, list[tuple[str, dict[str, str], bytes]]]:
    """Test Connection against a capture server answering `answers`; (message, requests)."""

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple[str, list[Any]]:
        cap.answers.extend(answers)
        result = await build(_at(d, cap.url), session).test()
        assert result.ok == (answers[0] < 300)
        return result.message, cap.requests

    return run(body)  # type: ignore[no-any-return]


def _at(d: DestinationConfig, origin: str) -> DestinationConfig:
    """`d` with its origin (scheme, host and port) replaced by the capture server's, in the endpoint and check."""
    import dataclasses
    from urllib.parse import urlsplit

    o = d.options
    assert isinstance(o, OtlpOptions)

    def move(u: str) -> str:
        s = urlsplit(u)
        return origin + s.path + (f"?{s.query}" if s.query else "")

    check = dataclasses.replace(o.check, url=move(o.check.url)) if o.check is not None else None
    return dataclasses.replace(d, options=dataclasses.replace(o, endpoint=move(o.endpoint), check=check))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- Comet Opik ---------------------------------------------------------------------------------------------------


def test_opik_defaults_to_comet_cloud_with_the_sdk_environment_variables() -> None:
    env = {"OPIK_API_KEY": "opik-key-0123456789", "OPIK_WORKSPACE": "acme"}
    o = options("opik", env)
    assert o.endpoint == "https://www.comet.com/opik/api/v1/private/otel/v1/traces"
    assert dict(o.headers) == {
        "Authorization": "opik-key-0123456789",
        "Comet-Workspace": "acme",
        "projectName": "Default Project",
    }
    assert o.check is not None and o.check.url == "https://www.comet.com/opik/api/v1/private/projects?page=1&size=1"
    assert "opik-key-0123456789" in dest("opik", env).secrets()
    # The config wins over the environment.
    o = options("opik", env, workspace="other", project_name="checkout", url="https://comet.example.com/opik/api/")
    assert o.endpoint == "https://comet.example.com/opik/api/v1/private/otel/v1/traces"
    assert dict(o.headers)["Comet-Workspace"] == "other" and dict(o.headers)["projectName"] == "checkout"


def test_opik_needs_a_key_for_the_cloud_but_not_self_hosted() -> None:
    with pytest.raises(ConfigError, match=r"api_key.*required for Comet's cloud"):
        options("opik", {})
    o = options("opik", {"OPIK_URL_OVERRIDE": "http://localhost:5173/api"})
    assert o.endpoint == "http://localhost:5173/api/v1/private/otel/v1/traces"
    assert "Authorization" not in dict(o.headers) and dict(o.headers)["Comet-Workspace"] == "default"


def test_opik_receives_model_provider_usage_thread_tags_and_messages() -> None:
    d = dest("opik", {"OPIK_API_KEY": "opik-key-0123456789"}, project_name="checkout")
    path, headers, body = export(d, record())
    assert path == "/opik/api/v1/private/otel/v1/traces"
    assert headers["authorization"] == "opik-key-0123456789" and headers["projectname"] == "checkout"
    assert headers["content-type"] == "application/x-protobuf"
    _, root, attempt = spans_of(decode(body, headers))
    assert attempt["gen_ai.request.model"] == "gpt-4o-mini" and attempt["gen_ai.system"] == "openai"
    assert attempt["gen_ai.usage.input_tokens"] == 42 and attempt["gen_ai.usage.output_tokens"] == 7
    assert attempt["opik.metadata.cost_usd"] == pytest.approx(0.00123)
    assert PROMPT in attempt["gen_ai.input.messages"] and ANSWER in attempt["gen_ai.output.messages"]
    for span in (root, attempt):
        assert span["thread_id"] == "sess-1" and span["gen_ai.conversation.id"] == "sess-1"
        assert span["opik.tags"] == ["team:pay", "feature:Checkout"]
        assert span["opik.metadata.user_id"] == "alice"


def test_opik_privacy_mode_sends_no_prompt_or_answer() -> None:
    d = dest("opik", {"OPIK_API_KEY": "opik-key-0123456789"})
    _, _, body = export(d, record(), privacy=True)
    assert PROMPT.encode() not in body and ANSWER.encode() not in body


def test_opik_test_connection_asks_for_projects_and_says_what_failed() -> None:
    d = dest("opik", {"OPIK_API_KEY": "opik-key-0123456789", "OPIK_WORKSPACE": "acme"})
    ok, requests = connection_test(d, 200)
    assert ok.startswith("ok: Opik")
    ((path, headers, _),) = requests
    assert path == "/opik/api/v1/private/projects"
    assert headers["authorization"] == "opik-key-0123456789" and headers["comet-workspace"] == "acme"
    denied, _ = connection_test(d, 401)
    assert "rejected the credentials (HTTP 401)" in denied and "OPIK_API_KEY" in denied
    wrong, _ = connection_test(d, 404)
    assert "HTTP 404" in wrong and "address" in wrong


# --- W&B Weave ----------------------------------------------------------------------------------------------------

WANDB = {"WANDB_API_KEY": "wandb-key-0123456789abcdef", "WANDB_ENTITY": "acme", "WANDB_PROJECT": "checkout"}


def test_weave_defaults_to_the_multi_tenant_cloud_and_follows_wandb_base_url() -> None:
    assert options("weave", WANDB).endpoint == "https://trace.wandb.ai/otel/v1/traces"
    on_api = {**WANDB, "WANDB_BASE_URL": "https://api.wandb.ai"}
    assert options("weave", on_api).endpoint == "https://trace.wandb.ai/otel/v1/traces"
    dedicated = {**WANDB, "WANDB_BASE_URL": "https://acme.wandb.io"}
    assert options("weave", dedicated).endpoint == "https://acme.wandb.io/traces/otel/v1/traces"
    given = options("weave", WANDB, base_url="https://weave.internal.example/traces/")
    assert given.endpoint == "https://weave.internal.example/traces/otel/v1/traces"
    assert options("weave", WANDB, entity="team-b").resource == (
        ("wandb.entity", "team-b"),
        ("wandb.project", "checkout"),
    )


@pytest.mark.parametrize("missing", ["WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT"])
def test_weave_names_a_missing_setting(missing: str) -> None:
    env = {k: v for k, v in WANDB.items() if k != missing}
    with pytest.raises(ConfigError, match=f"required: .*{missing}"):
        options("weave", env)


def test_weave_receives_its_routing_thread_and_call_inputs_and_outputs() -> None:
    path, headers, body = export(dest("weave", WANDB), record())
    assert path == "/otel/v1/traces" and headers["content-type"] == "application/x-protobuf"
    assert headers["wandb-api-key"] == WANDB["WANDB_API_KEY"]
    assert base64.b64decode(headers["authorization"].removeprefix("Basic ")) == f"api:{WANDB['WANDB_API_KEY']}".encode()
    assert headers["project_id"] == "acme/checkout"
    resource, root, attempt = spans_of(decode(body, headers))
    assert resource["wandb.entity"] == "acme" and resource["wandb.project"] == "checkout"
    assert root["wandb.thread_id"] == "sess-1" and root["wandb.is_turn"] is True
    assert attempt["wandb.thread_id"] == "sess-1" and "wandb.is_turn" not in attempt
    assert attempt["weave.span.kind"] == "llm" and attempt["llm.provider"] == "openai"
    assert attempt["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attempt["gen_ai.usage.input_tokens"] == 42 and attempt["llm.token_count.total"] == 49
    assert PROMPT in attempt["input.value"] and attempt["output.value"] == ANSWER


def test_weave_without_a_session_marks_no_thread_and_privacy_drops_inputs() -> None:
    _, headers, body = export(dest("weave", WANDB), record(session=None), privacy=True)
    _, root, attempt = spans_of(decode(body, headers))
    assert not any(k.startswith("wandb.") for k in (*root, *attempt))
    assert "input.value" not in attempt and PROMPT.encode() not in body


def test_weave_test_connection_posts_an_empty_export_and_reports_a_bad_key() -> None:
    ok, requests = connection_test(dest("weave", WANDB), 200)
    assert ok.startswith("ok: W&B Weave") and requests[0][2] == b""
    denied, _ = connection_test(dest("weave", WANDB), 401)
    assert "W&B Weave rejected the credentials (HTTP 401)" in denied and "WANDB_API_KEY" in denied


# --- Sentry -------------------------------------------------------------------------------------------------------

DSN = "https://0123456789abcdef0123456789abcdef@o4504765715316736.ingest.us.sentry.io/4505281256090153"


def test_sentry_derives_the_otlp_endpoint_and_auth_header_from_the_dsn() -> None:
    o = options("sentry", {"SENTRY_DSN": DSN})
    assert o.endpoint == (
        "https://o4504765715316736.ingest.us.sentry.io/api/4505281256090153/integration/otlp/v1/traces"
    )
    assert o.headers == (("x-sentry-auth", "sentry sentry_key=0123456789abcdef0123456789abcdef"),)
    assert o.compression == "gzip" and o.protocol == "protobuf"
    assert "0123456789abcdef0123456789abcdef" in dest("sentry", {"SENTRY_DSN": DSN}).secrets()
    # Self-hosted: a port and a path prefix are kept; a legacy secret is not sent.
    o = options("sentry", dsn="http://pub:legacysecret@sentry.internal:9000/sentry/7")
    assert o.endpoint == "http://sentry.internal:9000/sentry/api/7/integration/otlp/v1/traces"
    assert o.headers == (("x-sentry-auth", "sentry sentry_key=pub"),)


@pytest.mark.parametrize("bad", ["https://o1.ingest.sentry.io/42", "https://key@o1.ingest.sentry.io/", "not a dsn"])
def test_sentry_refuses_what_is_not_a_dsn(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a Sentry DSN"):
        options("sentry", dsn=bad)


def test_sentry_needs_a_dsn() -> None:
    with pytest.raises(ConfigError, match=r"dsn.*required: the project's DSN \(or SENTRY_DSN\)"):
        options("sentry", {})


def test_sentry_receives_ai_client_spans_with_cost_prompt_and_answer() -> None:
    path, headers, body = export(dest("sentry", {"SENTRY_DSN": DSN}), record())
    assert path == "/api/4505281256090153/integration/otlp/v1/traces"
    assert headers["x-sentry-auth"] == "sentry sentry_key=0123456789abcdef0123456789abcdef"
    assert headers["content-encoding"] == "gzip"
    _, root, attempt = spans_of(decode(body, headers))
    assert attempt["sentry.op"] == "gen_ai.chat" and "sentry.op" not in root
    assert attempt["gen_ai.request.model"] == "gpt-4o-mini" and attempt["gen_ai.usage.output_tokens"] == 7
    assert attempt["gen_ai.cost.total_tokens"] == pytest.approx(0.00123)
    assert attempt["gen_ai.cost.input_tokens"] == pytest.approx(0.00023)
    assert attempt["gen_ai.cost.output_tokens"] == pytest.approx(0.001)
    assert PROMPT in attempt["gen_ai.request.messages"] and ANSWER in attempt["gen_ai.response.text"]
    assert attempt["user.id"] == "alice"


def test_sentry_test_connection_verdicts() -> None:
    d = dest("sentry", {"SENTRY_DSN": DSN})
    denied, _ = connection_test(d, 403)
    assert "Sentry rejected the credentials (HTTP 403)" in denied and "Client Keys (DSN)" in denied
    wrong, _ = connection_test(d, 404)
    assert "Sentry answered HTTP 404" in wrong

    async def unreachable(cap: AsyncCapture, session: aiohttp.ClientSession) -> str:
        return (await build(_at(d, f"http://127.0.0.1:{closed_port()}"), session).test()).message

    assert run(unreachable).startswith("unreachable: http://127.0.0.1:")


# --- Grafana Cloud ------------------------------------------------------------------------------------------------


def test_grafana_cloud_endpoint_from_the_zone_or_the_page_endpoint() -> None:
    o = options("grafana_cloud", instance_id=123456, token="glc_token_0123456789", zone="prod-eu-west-2")
    assert o.endpoint == "https://otlp-gateway-prod-eu-west-2.grafana.net/otlp/v1/traces"
    auth = dict(o.headers)["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"123456:glc_token_0123456789"
    assert o.compression == "gzip"
    page = "https://otlp-gateway-prod-us-east-0.grafana.net/otlp"
    assert options("grafana_cloud", instance_id="1", token="t" * 12, endpoint=page).endpoint == page + "/v1/traces"
    assert (
        "glc_token_0123456789" in dest("grafana_cloud", instance_id=1, token="glc_token_0123456789", zone="x").secrets()
    )


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"token": "t", "zone": "prod-us-east-0"}, "instance_id.*required"),
        ({"instance_id": 1, "zone": "prod-us-east-0"}, "token.*required"),
        ({"instance_id": 1, "token": "t"}, "zone.*required"),
        ({"instance_id": 1, "token": "t", "zone": "prod us/east"}, "not a Grafana Cloud zone"),
    ],
)
def test_grafana_cloud_names_what_is_missing(given: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        options("grafana_cloud", **given)


def test_grafana_cloud_receives_the_genai_attributes() -> None:
    d = dest("grafana_cloud", instance_id=42, token="glc_token_0123456789", zone="prod-us-east-0")
    path, headers, body = export(d, record())
    assert path == "/otlp/v1/traces" and headers["content-encoding"] == "gzip"
    assert base64.b64decode(headers["authorization"].removeprefix("Basic ")) == b"42:glc_token_0123456789"
    _, _, attempt = spans_of(decode(body, headers))
    assert attempt["gen_ai.provider.name"] == "openai" and attempt["gen_ai.usage.input_tokens"] == 42
    assert attempt["relaycast.cost.usd"] == pytest.approx(0.00123) and attempt["session.id"] == "sess-1"
    denied, _ = connection_test(d, 401)
    assert "Grafana Cloud rejected the credentials (HTTP 401)" in denied and "traces:write" in denied


# --- New Relic ----------------------------------------------------------------------------------------------------

NR_KEY = "0123456789abcdef0123456789abcdefNRAL"


def test_newrelic_region_endpoints_and_the_license_key_variable() -> None:
    o = options("newrelic", {"NEW_RELIC_LICENSE_KEY": NR_KEY})
    assert o.endpoint == "https://otlp.nr-data.net:4318/v1/traces"
    assert o.headers == (("api-key", NR_KEY),) and o.compression == "gzip"
    assert o.max_body_bytes < 1_000_000  # New Relic's payload limit
    eu_key = "eu01xx" + NR_KEY[6:]
    assert options("newrelic", license_key=eu_key).endpoint == "https://otlp.eu01.nr-data.net:4318/v1/traces"
    fed = options("newrelic", license_key=NR_KEY, region="fedramp")
    assert fed.endpoint == "https://gov-otlp.nr-data.net:4318/v1/traces"
    with pytest.raises(ConfigError, match="not one of: us, eu, fedramp"):
        options("newrelic", license_key=NR_KEY, region="apac")
    with pytest.raises(ConfigError, match=r"license_key.*NEW_RELIC_LICENSE_KEY"):
        options("newrelic", {})


def test_newrelic_receives_gzip_bodies_under_its_limit() -> None:
    d = dest("newrelic", license_key=NR_KEY, endpoint="https://otlp.nr-data.net:4318")
    path, headers, body = export(d, record())
    assert path == "/v1/traces" and headers["api-key"] == NR_KEY and headers["content-encoding"] == "gzip"
    _, _, attempt = spans_of(decode(body, headers))
    assert attempt["gen_ai.request.model"] == "gpt-4o-mini" and attempt["gen_ai.usage.output_tokens"] == 7
    # A prompt too large for one request: the record still goes, without its content.
    huge = record(prompt="x" * 2_000_000)
    _, headers, body = export(d, huge)
    assert len(inflate(body)) < 1_000_000
    _, _, attempt = spans_of(decode(body, headers))
    assert attempt["relaycast.collection_errors"] == "dropped_io" and attempt["gen_ai.usage.input_tokens"] == 42


def test_newrelic_test_connection_verdicts() -> None:
    d = dest("newrelic", license_key=NR_KEY)
    ok, requests = connection_test(d, 200)
    assert ok.startswith("ok: New Relic") and requests[0][1]["api-key"] == NR_KEY
    denied, _ = connection_test(d, 403)
    assert "New Relic rejected the credentials (HTTP 403)" in denied and "license key" in denied
