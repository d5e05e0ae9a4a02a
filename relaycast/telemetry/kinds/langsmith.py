"""LangSmith: OTLP/HTTP to `<endpoint>/otel/v1/traces` with `x-api-key` and, for a project other than "default",
`Langsmith-Project`.

Sources: https://docs.langchain.com/langsmith/trace-with-opentelemetry (endpoint `https://api.smith.langchain.com/otel`,
regional hosts eu., apac., aws.; self-hosted `<host>/api/v1`; the headers; the attribute mapping: `langsmith.span.kind`,
`langsmith.trace.name`, `langsmith.metadata.*`, `langsmith.span.tags`, `gen_ai.prompt` / `gen_ai.completion` as
inputs / outputs, `gen_ai.usage.*` as usage_metadata); langchain-ai/langsmith-sdk
python/langsmith/_internal/otel/_otel_client.py (`{LANGSMITH_ENDPOINT}/otel`, `x-api-key`, `Langsmith-Project`) and
_otel_exporter.py (`gen_ai.prompt` / `gen_ai.completion` hold the run's inputs / outputs as JSON; note that its
`langsmith.trace.session_id` is the project's id, so a conversation id never goes there); client.py (`X-Tenant-Id`
from LANGSMITH_WORKSPACE_ID; `list_projects` = GET /sessions: Test Connection's call);
https://docs.langchain.com/langsmith/threads (a conversation is the `session_id` metadata key, on every run);
https://docs.smith.langchain.com/how_to_guides/tracing/calculate_token_based_costs (LangSmith prices a run from
`ls_provider` and `ls_model_name` metadata and its tokens).

What LangSmith shows: the root span as a `chain` run, each chat attempt as an `llm` run (embeddings: `embedding`)
with its messages, model, token usage, LangSmith's own cost from its price table and relaycast's cost in US dollars
as metadata, user and conversation as metadata (`user_id`, `session_id`: LangSmith's threads), failed attempts as
errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaycast.config_reader import Reader
from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_semconv import attr_value, json_text
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Check, Dialect, KindSpec, env_or, metadata, need, openai_choice
from relaycast.telemetry.settings import OtlpOptions, url

DEFAULT_ENDPOINT = "https://api.smith.langchain.com"  # LANGSMITH_ENDPOINT's default (US)


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    # The SDK also reads the older LANGCHAIN_* names (langsmith.utils.get_env_var).
    key = need(r, env_or(m, "api_key", env, "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"), f"{at}.api_key", "api_key")
    endpoint = url(
        r,
        env_or(m, "endpoint", env, "LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT", default=DEFAULT_ENDPOINT),
        f"{at}.endpoint",
    ).rstrip("/")
    project = env_or(m, "project", env, "LANGSMITH_PROJECT", "LANGCHAIN_PROJECT")
    workspace = env_or(m, "workspace_id", env, "LANGSMITH_WORKSPACE_ID")
    headers: list[tuple[str, str]] = [("x-api-key", key)]
    if project is not None:
        headers.append(("Langsmith-Project", r.string(project, f"{at}.project")))
    if workspace is not None:
        headers.append(("X-Tenant-Id", r.string(workspace, f"{at}.workspace_id")))
    auth = tuple(h for h in headers if h[0] != "Langsmith-Project")
    return OtlpOptions(
        endpoint=endpoint + "/otel/v1/traces",
        headers=tuple(headers),
        backend="langsmith",
        check=Check(endpoint + "/sessions?limit=1", "GET", auth),
        credentials=(key,),
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
    )


def _metadata(record: RequestRecord) -> dict[str, Value]:
    """`langsmith.metadata.*` for every run: LangSmith filters threads and sums their tokens only over runs that
    carry the thread key."""
    a = record.attribution
    meta = metadata(
        record,
        {
            "user_id": a.user,
            "session_id": a.session_id,
            "feature": a.feature,
            "key_name": a.key_name,
            "request_id": record.request_id,
        },
    )
    out: dict[str, Value] = {}
    for key, value in meta.items():
        v = attr_value(value)
        if v is not None:
            out[f"langsmith.metadata.{key}"] = v
    tags = [f"{k}:{v}" for k, v in a.tags]
    if tags:
        out["langsmith.span.tags"] = ",".join(tags)  # comma-separated, per the mapping table
    return out


class LangSmithDialect(Dialect):
    def root(self, record: RequestRecord) -> dict[str, Value]:
        out = _metadata(record)
        out["langsmith.span.kind"] = "chain"
        out["langsmith.trace.name"] = spans.root_name(record)
        return out

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        out = _metadata(record)
        out["langsmith.span.kind"] = "embedding" if op == "embeddings" else "llm"
        # LangSmith's cost: its price table, matched by provider and model name.
        out["langsmith.metadata.ls_provider"] = a.vendor or a.provider
        out["langsmith.metadata.ls_model_name"] = a.response_model or a.model
        if a.usage is not None:
            out["gen_ai.usage.total_tokens"] = a.usage.total_tokens
            if a.usage.reasoning_tokens:
                out["gen_ai.usage.details.reasoning_tokens"] = a.usage.reasoning_tokens
        if a.cost_pusd is not None and a.cost_source not in ("none", "unpriced"):
            # No OTel attribute sets LangSmith's cost columns: relaycast's figure travels as metadata.
            out["langsmith.metadata.cost_usd"] = usd_float(a.cost_pusd)
            if a.cost_input_pusd is not None:
                out["langsmith.metadata.cost_input_usd"] = usd_float(a.cost_input_pusd)
                out["langsmith.metadata.cost_output_usd"] = usd_float(a.cost_pusd - a.cost_input_pusd)
            out["langsmith.metadata.cost_source"] = a.cost_source
        if a.ttft_ns is not None:
            out["langsmith.metadata.time_to_first_token_s"] = a.ttft_ns / 1e9
        return out

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        """Inputs and outputs as the LangSmith SDK's own OTel exporter sends them: the OpenAI request's
        `{"messages": [...]}` and the OpenAI response's `{"choices": [...]}`."""
        out: dict[str, str] = {}
        if record.input_messages:
            out["gen_ai.prompt"] = json_text({"messages": spans.input_messages(record)})
        text = spans.attempt_output_text(record, i, a)
        calls = spans.attempt_tool_calls(record, i, a)
        if text is not None or calls:
            choice = openai_choice(text, calls, a.finish_reason)
            out["gen_ai.completion"] = json_text({"choices": [choice]})
        return out


SPEC = KindSpec(
    kind="langsmith",
    title="LangSmith",
    keys=frozenset({"api_key", "endpoint", "project", "workspace_id", "service"}),
    parse=parse,
    dialect=LangSmithDialect(),
    auth_hint="check api_key (LangSmith > Settings > API Keys) and that endpoint is your region's "
    "(https://eu.api.smith.langchain.com for EU); a key linked to several workspaces needs workspace_id",
)
