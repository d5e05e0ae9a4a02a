"""W&B Weave: OTLP traces into a Weave project.

Endpoint, auth and routing (https://docs.wandb.ai/weave/guides/tracking/otel): `POST <base>/otel/v1/traces`,
protobuf only, where the base is `https://trace.wandb.ai` on the multi-tenant cloud and
`https://<subdomain>.wandb.io/traces` on Dedicated Cloud and Self-Managed; the key in the `wandb-api-key` header;
the entity and project as the resource attributes `wandb.entity` and `wandb.project`. Earlier releases of the same
page (wandb/weave docs/docs/guides/tools/otel.md) route by a `project_id: <entity>/<project>` header with
`Authorization: Basic base64(api:<key>)`; both are sent, so either kind of server accepts the spans.

Settings as W&B names them: the API key (`WANDB_API_KEY`), the entity (`WANDB_ENTITY`), the project
(`WANDB_PROJECT`) and the deployment (`base_url`, a trace base; else from `WANDB_BASE_URL`, W&B's API address:
`https://api.wandb.ai` means the multi-tenant cloud, any other host gets `/traces`).

Attributes Weave maps (the "Attribute mappings" table of that page; weave/trace_server/opentelemetry/constants.py):
`gen_ai.usage.input_tokens` / `output_tokens` as usage, `gen_ai.response.model` as the model, `gen_ai.request.*`
as model parameters, `input.value` / `output.value` as the call's inputs and outputs, `llm.provider`,
`weave.span.kind`, and `wandb.thread_id` / `wandb.is_turn` for its Threads view.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relaycast.config_reader import Reader
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_semconv import json_text
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Dialect, KindSpec, basic, env_or, need
from relaycast.telemetry.settings import OtlpOptions, url

CLOUD_TRACE_BASE = "https://trace.wandb.ai"
CLOUD_API_HOST = "api.wandb.ai"  # WANDB_BASE_URL's default in the wandb SDK


def trace_base(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str]) -> str:
    """The trace server's base URL: `base_url` as given, else derived from W&B's own `WANDB_BASE_URL`."""
    if m.get("base_url") is not None:
        return url(r, m["base_url"], f"{at}.base_url").rstrip("/")
    api = (env.get("WANDB_BASE_URL") or "").strip().rstrip("/")
    if not api or urlsplit(api).hostname == CLOUD_API_HOST:
        return CLOUD_TRACE_BASE
    return url(r, api, "WANDB_BASE_URL") + "/traces"  # Dedicated Cloud / Self-Managed


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    key = need(r, env_or(m, "api_key", env, "WANDB_API_KEY"), f"{at}.api_key", "the W&B API key (or WANDB_API_KEY)")
    entity = need(
        r,
        env_or(m, "entity", env, "WANDB_ENTITY"),
        f"{at}.entity",
        "the W&B entity, a team or user name (or WANDB_ENTITY)",
    )
    project = need(r, env_or(m, "project", env, "WANDB_PROJECT"), f"{at}.project", "the project (or WANDB_PROJECT)")
    return OtlpOptions(
        endpoint=trace_base(r, m, at, env) + "/otel/v1/traces",
        headers=(("wandb-api-key", key), ("Authorization", basic("api", key)), ("project_id", f"{entity}/{project}")),
        backend="weave",
        resource=(("wandb.entity", entity), ("wandb.project", project)),
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        credentials=(key,),
    )


class WeaveDialect(Dialect):
    """The request is a turn of its session's thread; attempts are LLM calls with their provider, total tokens and
    their input and output where Weave shows a call's."""

    genai_content = False  # the backend renders its own content attributes

    def root(self, record: RequestRecord) -> dict[str, Value]:
        out: dict[str, Value] = {}
        if record.attribution.session_id:
            out["wandb.thread_id"] = record.attribution.session_id
            out["wandb.is_turn"] = True
        return out

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        out: dict[str, Value] = {"weave.span.kind": "llm" if op == "chat" else op}
        if a.vendor or a.provider:
            out["llm.provider"] = a.vendor or a.provider
        if record.attribution.session_id:
            out["wandb.thread_id"] = record.attribution.session_id  # nested in the turn: not a turn itself
        if a.usage is not None:
            out["llm.token_count.total"] = a.usage.prompt_tokens + a.usage.completion_tokens
        return out

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if record.input_messages:
            out["input.value"] = json_text({"messages": spans.input_messages(record)})
        text = spans.attempt_output_text(record, i, a)
        if text is not None:
            out["output.value"] = text
        return out


SPEC = KindSpec(
    kind="weave",
    title="W&B Weave",
    keys=frozenset({"api_key", "entity", "project", "base_url", "service"}),
    parse=parse,
    dialect=WeaveDialect(),
    auth_hint="check api_key (WANDB_API_KEY, from https://wandb.ai/settings) and that it may write to the entity's "
    "project",
)
