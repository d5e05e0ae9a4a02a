"""Braintrust: OTLP/HTTP to `<api_url>/otel/v1/traces` with `Authorization: Bearer <API key>` and `x-bt-parent`
naming the project that receives the logs (`project_name:<name>` or `project_id:<id>`).

Sources: https://www.braintrust.dev/docs/integrations/sdk-integrations/opentelemetry (endpoint, `x-bt-parent`,
BRAINTRUST_API_KEY, BRAINTRUST_PARENT, BRAINTRUST_API_URL for a self-hosted data plane) and its "attributes"
page (GenAI conventions mapped to input, output and metrics; `braintrust.*` attributes set fields directly:
`braintrust.input_json` / `output_json` must be valid JSON text, else they fall back to metadata, per
https://www.braintrust.dev/docs/kb/null-input-on-spans-when-using-otel-attributes);
https://braintrust.dev/docs/kb/ingest-otlp-log-records-into-braintrust (EU: https://api-eu.braintrust.dev; a cost
as `metrics.estimated_cost`); braintrustdata SDK wrappers (metric names `prompt_tokens`, `completion_tokens`,
`tokens`, `prompt_cached_tokens`, `prompt_cache_creation_tokens`, `completion_reasoning_tokens`,
`time_to_first_token`; `braintrust.span_attributes` `{"type": "llm"}`); the REST API's GET /v1/project (list
projects: Test Connection's call).

What Braintrust shows: each attempt as an `llm` span with its messages (OpenAI format, so "Try prompt" works), model,
token metrics, cost in US dollars, and metadata (user, session, feature, relaycast's cost split); the root as a
`task` span; failed attempts as errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_semconv import json_text
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Check, Dialect, KindSpec, env_or, metadata, need, openai_choice
from relaycast.telemetry.settings import OtlpOptions, url

DEFAULT_API_URL = "https://api.braintrust.dev"  # US; EU: https://api-eu.braintrust.dev
DEFAULT_PROJECT = "relaycast"
PARENT_KINDS = ("project_name", "project_id")


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    key = need(r, env_or(m, "api_key", env, "BRAINTRUST_API_KEY"), f"{at}.api_key", "api_key")
    api = url(r, env_or(m, "api_url", env, "BRAINTRUST_API_URL", default=DEFAULT_API_URL), f"{at}.api_url").rstrip("/")
    auth = ("Authorization", f"Bearer {key}")
    return OtlpOptions(
        endpoint=api + "/otel/v1/traces",
        headers=(auth, ("x-bt-parent", _parent(r, m, at, env))),
        backend="braintrust",
        check=Check(api + "/v1/project?limit=1", "GET", (auth,)),
        credentials=(key,),
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
    )


def _parent(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str]) -> str:
    """`project_id`, else `project` (a name), else BRAINTRUST_PARENT (`project_name:...` / `project_id:...`), else
    the project named "relaycast"."""
    if m.get("project_id") is not None and m.get("project") is not None:
        raise ConfigError(f"{at}.project_id", "give project (a name) or project_id, not both")
    if m.get("project_id") is not None:
        return "project_id:" + r.string(m["project_id"], f"{at}.project_id")
    if m.get("project") is not None:
        return "project_name:" + r.string(m["project"], f"{at}.project")
    given = (env.get("BRAINTRUST_PARENT") or "").strip()
    if given:
        kind, sep, value = given.partition(":")
        if not sep or kind not in PARENT_KINDS or not value:
            raise ConfigError("BRAINTRUST_PARENT", f"'{given[:100]}' is not project_name:<name> or project_id:<id>")
        return given
    return f"project_name:{DEFAULT_PROJECT}"


def metrics(record: RequestRecord, a: Attempt) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    u = a.usage
    if u is not None:
        out["prompt_tokens"] = u.prompt_tokens
        out["completion_tokens"] = u.completion_tokens
        out["tokens"] = u.total_tokens
        if u.cached_tokens:
            out["prompt_cached_tokens"] = u.cached_tokens
        if u.cache_write_tokens:
            out["prompt_cache_creation_tokens"] = u.cache_write_tokens
        if u.reasoning_tokens:
            out["completion_reasoning_tokens"] = u.reasoning_tokens
    if a.ttft_ns is not None:
        out["time_to_first_token"] = a.ttft_ns / 1e9
    if a.cost_pusd is not None and a.cost_source not in ("none", "unpriced"):
        out["estimated_cost"] = usd_float(a.cost_pusd)
    return out


def _metadata(record: RequestRecord) -> dict[str, Any]:
    a = record.attribution
    return metadata(
        record,
        {
            "user_id": a.user,
            "session_id": a.session_id,
            "feature": a.feature,
            "key_name": a.key_name,
            "request_id": record.request_id,
        },
    )


class BraintrustDialect(Dialect):
    genai_content = False  # the backend renders its own content attributes

    def root(self, record: RequestRecord) -> dict[str, Value]:
        out: dict[str, Value] = {
            "braintrust.span_attributes": json_text({"type": "task", "name": spans.root_name(record)}),
            "braintrust.metadata": json_text(_metadata(record)),
        }
        tags = [f"{k}:{v}" for k, v in record.attribution.tags]
        if tags:
            out["braintrust.tags"] = tags
        return out

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        meta = _metadata(record)
        meta["model"] = a.response_model or a.model
        meta["provider"] = a.vendor or a.provider
        meta["relaycast_provider"] = a.provider
        if a.finish_reason:
            meta["finish_reason"] = a.finish_reason
        if a.cost_pusd is not None and a.cost_source not in ("none", "unpriced"):
            meta["cost_source"] = a.cost_source
            if a.cost_input_pusd is not None:
                meta["cost_input_usd"] = usd_float(a.cost_input_pusd)
                meta["cost_output_usd"] = usd_float(a.cost_pusd - a.cost_input_pusd)
        if a.error_class:
            meta["error_class"] = a.error_class
        out: dict[str, Value] = {
            "braintrust.span_attributes": json_text({"type": "llm"}),
            "braintrust.metadata": json_text(meta),
        }
        m = metrics(record, a)
        if m:
            out["braintrust.metrics"] = json_text(m)
        return out

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        """The prompt as OpenAI chat messages and the completion as OpenAI's `choices` list, the shape Braintrust's
        own OpenAI wrapper logs for an LLM span."""
        out: dict[str, str] = {}
        if record.input_messages:
            out["braintrust.input_json"] = json_text(spans.input_messages(record))
        text = spans.attempt_output_text(record, i, a)
        calls = spans.attempt_tool_calls(record, i, a)
        if text is not None or calls:
            choice = openai_choice(text, calls, a.finish_reason)
            out["braintrust.output_json"] = json_text([choice])
        return out


SPEC = KindSpec(
    kind="braintrust",
    title="Braintrust",
    keys=frozenset({"api_key", "api_url", "project", "project_id", "service"}),
    parse=parse,
    dialect=BraintrustDialect(),
    auth_hint="check api_key (Braintrust > Settings > API keys) and that api_url is your data plane's "
    "(https://api-eu.braintrust.dev for EU)",
)
