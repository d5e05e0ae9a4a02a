"""Langfuse: OTLP/HTTP to `<base_url>/api/public/otel/v1/traces` with Basic auth (public key : secret key).

Sources: https://langfuse.com/integrations/native/opentelemetry (endpoint, regions, Basic auth, HTTP/protobuf and
HTTP/JSON only, the `x-langfuse-ingestion-version: 4` header for real-time ingestion, the `langfuse.*` attribute
mapping); langfuse/langfuse packages/shared/src/server/otel/OtelIngestionProcessor.ts (how those attributes are
read: an explicit `langfuse.observation.usage_details` replaces every `gen_ai.usage.*`, its keys `input`,
`input_cached_tokens`, `input_cache_creation`, `output`, `output_reasoning_tokens`, `total`; environment read from
resource attributes first); langfuse/langfuse-python langfuse/_client/environment_variables.py (LANGFUSE_BASE_URL,
deprecated LANGFUSE_HOST, default https://cloud.langfuse.com, LANGFUSE_TRACING_ENVIRONMENT) and client.py
`auth_check` (GET /api/public/projects: Test Connection's call).

What Langfuse shows: the root span as the trace (name, user, session, tags, metadata), each chat attempt as a
`generation` (model, usage, cost in US dollars split input/output, completion start time, prompt and completion as
OpenAI chat messages), an embeddings attempt as an `embedding`, failed attempts at level ERROR with their message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_semconv import json_text
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Check, Dialect, KindSpec, assistant_message, basic, env_or, metadata, need
from relaycast.telemetry.settings import OtlpOptions, url

# Langfuse Cloud data regions (the OpenTelemetry page above); EU is the SDKs' default.
REGIONS = {
    "eu": "https://cloud.langfuse.com",
    "us": "https://us.cloud.langfuse.com",
    "jp": "https://jp.cloud.langfuse.com",
    "hipaa": "https://hipaa.cloud.langfuse.com",
}
TRACES_PATH = "/api/public/otel/v1/traces"
CHECK_PATH = "/api/public/projects"
# environment_variables.py: lowercase letters, digits, hyphens and underscores, not starting with "langfuse".
_ENVIRONMENT = re.compile(r"^(?!langfuse)[a-z0-9_-]{1,40}$")


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    public = need(r, env_or(m, "public_key", env, "LANGFUSE_PUBLIC_KEY"), f"{at}.public_key", "public_key (pk-lf-...)")
    secret = need(r, env_or(m, "secret_key", env, "LANGFUSE_SECRET_KEY"), f"{at}.secret_key", "secret_key (sk-lf-...)")
    host = _base_url(r, m, at, env)
    environment = env_or(m, "environment", env, "LANGFUSE_TRACING_ENVIRONMENT")
    resource: tuple[tuple[str, str], ...] = ()
    if environment is not None:
        environment = r.string(environment, f"{at}.environment")
        if not _ENVIRONMENT.match(environment):
            raise ConfigError(
                f"{at}.environment",
                f"'{environment}' is not a Langfuse environment (lowercase letters, digits, '-' and '_', "
                "not starting with 'langfuse')",
            )
        resource = (("langfuse.environment", environment),)
    auth = basic(public, secret)
    return OtlpOptions(
        endpoint=host + TRACES_PATH,
        headers=(
            ("Authorization", auth),
            # Without it, directly ingested spans can take up to 10 minutes to show (the real-time ingestion note).
            ("x-langfuse-ingestion-version", "4"),
            ("x-langfuse-sdk-name", "relaycast"),
        ),
        backend="langfuse",
        resource=resource,
        check=Check(host + CHECK_PATH, "GET", (("Authorization", auth),)),
        credentials=(secret, auth.removeprefix("Basic ")),
        compression="gzip",  # the endpoint decompresses `Content-Encoding: gzip`
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
    )


def _base_url(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str]) -> str:
    """`base_url` (self-hosted or a region's URL), else `region`, else LANGFUSE_BASE_URL / LANGFUSE_HOST, else EU."""
    if m.get("base_url") is not None:
        return url(r, m["base_url"], f"{at}.base_url").rstrip("/")
    if m.get("region") is not None:
        region = r.string(m["region"], f"{at}.region").lower()
        if region not in REGIONS:
            raise ConfigError(
                f"{at}.region", f"'{region}' is not a Langfuse Cloud region (one of: {', '.join(REGIONS)})"
            )
        return REGIONS[region]
    given = env_or(m, "base_url", env, "LANGFUSE_BASE_URL", "LANGFUSE_HOST")
    if given is not None:
        return url(r, given, "LANGFUSE_BASE_URL").rstrip("/")
    return REGIONS["eu"]


def usage_details(a: Attempt) -> dict[str, int]:
    """Langfuse's usage keys: `input` without the cached and cache-write tokens (priced apart), `output` without the
    reasoning tokens, so that no token is counted twice (OtelIngestionProcessor's own normalisation)."""
    u = a.usage
    if u is None:
        return {}
    out = {
        "input": max(0, u.prompt_tokens - u.cached_tokens - u.cache_write_tokens),
        "output": max(0, u.completion_tokens - u.reasoning_tokens),
        "total": u.total_tokens,
    }
    if u.cached_tokens:
        out["input_cached_tokens"] = u.cached_tokens
    if u.cache_write_tokens:
        out["input_cache_creation"] = u.cache_write_tokens
    if u.reasoning_tokens:
        out["output_reasoning_tokens"] = u.reasoning_tokens
    return out


def cost_details(a: Attempt) -> dict[str, float]:
    """US dollars: `input`, `output` and `total` when the split is known, else `total` (a cost Langfuse is given
    is used as it is, never recomputed from its own prices)."""
    if a.cost_pusd is None or a.cost_source in ("none", "unpriced"):
        return {}
    if a.cost_input_pusd is None:
        return {"total": usd_float(a.cost_pusd)}
    return {
        "input": usd_float(a.cost_input_pusd),
        "output": usd_float(a.cost_pusd - a.cost_input_pusd),
        "total": usd_float(a.cost_pusd),
    }


def chat_messages(record: RequestRecord) -> list[dict[str, str]]:
    """The prompt as OpenAI chat messages (role, content), which Langfuse renders as a conversation."""
    return spans.input_messages(record)


class LangfuseDialect(Dialect):
    """Trace-wide attributes go on every span (Langfuse v4 filters observations, not traces)."""

    genai_content = False  # the backend renders its own content attributes

    def _trace_wide(self, record: RequestRecord) -> dict[str, Value]:
        out: dict[str, Value] = {"langfuse.trace.name": spans.root_name(record)}
        tags = [f"{k}:{v}" for k, v in record.attribution.tags]
        if tags:
            out["langfuse.trace.tags"] = tags
        a = record.attribution
        meta = metadata(record, {"request_id": record.request_id, "feature": a.feature, "key_name": a.key_name})
        for key, value in meta.items():
            # Filterable top-level metadata keys take strings.
            out[f"langfuse.trace.metadata.{key}"] = value if isinstance(value, str) else json_text(value)
        return out

    def root(self, record: RequestRecord) -> dict[str, Value]:
        out = self._trace_wide(record)
        if record.error_class:
            out["langfuse.observation.level"] = "ERROR"
            out["langfuse.observation.status_message"] = record.error_message or record.error_class
        return out

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        out = self._trace_wide(record)
        out["langfuse.observation.type"] = "embedding" if op == "embeddings" else "generation"
        out["langfuse.observation.model.name"] = a.response_model or a.model
        usage = usage_details(a)
        if usage:
            out["langfuse.observation.usage_details"] = json_text(usage)
        cost = cost_details(a)
        if cost:
            out["langfuse.observation.cost_details"] = json_text(cost)
        if a.ttft_ns is not None:
            first = record.started_unix_ns + a.started_ns + a.ttft_ns
            out["langfuse.observation.completion_start_time"] = iso(first)
        if a.error_class:
            out["langfuse.observation.level"] = "ERROR"
            out["langfuse.observation.status_message"] = a.error_message or a.error_class
        return out

    def root_content(self, record: RequestRecord) -> dict[str, str]:
        """The trace's input and output, which Langfuse shows from the root observation: the prompt and the
        answer the client got."""
        out: dict[str, str] = {}
        if record.input_messages:
            out["langfuse.observation.input"] = json_text(chat_messages(record))
        if record.output_text is not None or record.output_tool_calls:
            out["langfuse.observation.output"] = json_text(
                assistant_message(record.output_text, record.output_tool_calls)
            )
        return out

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if record.input_messages:
            out["langfuse.observation.input"] = json_text(chat_messages(record))
        text = spans.attempt_output_text(record, i, a)
        calls = spans.attempt_tool_calls(record, i, a)
        if text is not None or calls:
            out["langfuse.observation.output"] = json_text(assistant_message(text, calls))
        return out


def iso(unix_ns: int) -> str:
    """ISO 8601 in UTC with microseconds, as Langfuse's completion start time takes it."""
    t = datetime.fromtimestamp(unix_ns // 1_000_000_000, tz=UTC).replace(microsecond=unix_ns // 1000 % 1_000_000)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


SPEC = KindSpec(
    kind="langfuse",
    title="Langfuse",
    keys=frozenset({"public_key", "secret_key", "base_url", "region", "environment", "service"}),
    parse=parse,
    dialect=LangfuseDialect(),
    auth_hint="check public_key and secret_key (Langfuse > Project settings > API keys) and that they belong to "
    "this base_url's region",
)
