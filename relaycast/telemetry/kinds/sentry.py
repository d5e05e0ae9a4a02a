"""Sentry: OTLP traces into a Sentry project, addressed by the project's DSN.

The DSN `https://<public key>@<host>/<project id>` (Settings > Projects > Client Keys (DSN); `SENTRY_DSN`) names
both the endpoint and the key, as Sentry's own OTLP integration derives them (getsentry/sentry-python
sentry_sdk/integrations/otlp.py, `EndpointType.OTLP_TRACES` in sentry_sdk/consts.py):
`https://<host>/api/<project id>/integration/otlp/v1/traces` with the header
`x-sentry-auth: sentry sentry_key=<public key>` (https://docs.sentry.io/concepts/otlp/direct/traces/). Sentry's
collector example sends protobuf, gzip-compressed.

For Sentry's AI Agents views (https://docs.sentry.io/platforms/python/tracing/instrumentation/custom-instrumentation/
ai-agents-module/): an LLM call's span op is `gen_ai.<operation>` (`sentry.op` over OTLP), its prompt
`gen_ai.request.messages` and its answer `gen_ai.response.text`; cost in US dollars goes in
`gen_ai.cost.total_tokens` / `input_tokens` / `output_tokens` (getsentry/sentry-conventions
model/attributes/gen_ai/gen_ai__cost__*.json).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.otlp_semconv import json_text
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Dialect, KindSpec, env_or, need
from relaycast.telemetry.settings import OtlpOptions


def dsn_endpoint(dsn: str, at: str) -> tuple[str, str]:
    """(traces endpoint, public key) from a DSN `scheme://key[:secret]@host[:port]/[path/]project_id`."""
    try:
        u = urlsplit(dsn.strip())
        port = u.port
    except ValueError:
        raise ConfigError(at, "is not a Sentry DSN (https://<key>@<host>/<project id>)") from None
    path, _, project = u.path.rstrip("/").rpartition("/")
    if u.scheme not in ("http", "https") or not u.hostname or not u.username or not project.isdigit():
        raise ConfigError(at, "is not a Sentry DSN (https://<key>@<host>/<project id>, from Client Keys (DSN))")
    where = f"{u.scheme}://{u.hostname}{f':{port}' if port else ''}{path}"
    return f"{where}/api/{project}/integration/otlp/v1/traces", u.username


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    dsn = need(r, env_or(m, "dsn", env, "SENTRY_DSN"), f"{at}.dsn", "the project's DSN (or SENTRY_DSN)")
    endpoint, key = dsn_endpoint(dsn, f"{at}.dsn")
    return OtlpOptions(
        endpoint=endpoint,
        headers=(("x-sentry-auth", f"sentry sentry_key={key}"),),
        backend="sentry",
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        credentials=(key, dsn),
        compression="gzip",
    )


class SentryDialect(Dialect):
    """Attempts as AI client spans (`gen_ai.chat`), with relaycast's cost where Sentry reads one, and the prompt
    and answer where its AI Agents views show them."""

    genai_content = False  # the backend renders its own content attributes

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        out: dict[str, Value] = {"sentry.op": f"gen_ai.{op}"}
        if a.cost_pusd is not None and a.cost_source != "none":
            out["gen_ai.cost.total_tokens"] = usd_float(a.cost_pusd)
            if a.cost_input_pusd is not None:
                out["gen_ai.cost.input_tokens"] = usd_float(a.cost_input_pusd)
                out["gen_ai.cost.output_tokens"] = usd_float(a.cost_pusd - a.cost_input_pusd)
        return out

    def content(self, record: RequestRecord, i: int, a: Attempt, op: str, genai: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        if record.input_messages:
            out["gen_ai.request.messages"] = json_text(spans.input_messages(record))
        text = spans.attempt_output_text(record, i, a)
        if text is not None:
            out["gen_ai.response.text"] = json_text([text])
        return out


SPEC = KindSpec(
    kind="sentry",
    title="Sentry",
    keys=frozenset({"dsn", "service"}),
    parse=parse,
    dialect=SentryDialect(),
    auth_hint="check the DSN (SENTRY_DSN): copy it from the project's Settings > Client Keys (DSN); the key may have "
    "been disabled or the project deleted",
)
