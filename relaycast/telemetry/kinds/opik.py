"""Comet Opik: OTLP traces into an Opik project, on Comet's cloud or a self-hosted Opik.

What its setup asks for, as the Opik SDK names it (sdks/python/src/opik/config.py in comet-ml/opik): the API key
(`OPIK_API_KEY`; a self-hosted Opik needs none), the workspace (`OPIK_WORKSPACE`, default "default"), the project
(`OPIK_PROJECT_NAME`, default "Default Project") and the API base URL (`OPIK_URL_OVERRIDE`, default Comet's cloud
`https://www.comet.com/opik/api`; a local Opik is `http://localhost:5173/api`).

The traces endpoint is `<base>/v1/private/otel/v1/traces`, with the headers `Authorization: <api key>`,
`Comet-Workspace` and `projectName` (https://www.comet.com/docs/opik/integrations/opentelemetry).

Opik's OTLP ingestion (apps/opik-backend/.../domain/mapping/otel/GenAIMappingRules.java and GeneralMappingRules.java)
reads `gen_ai.request.model` / `gen_ai.response.model` as the model, `gen_ai.system` as the provider (with the
model, what Opik prices the span by), `gen_ai.usage.*` as usage, `gen_ai.input.*` / `gen_ai.output.*` as input
and output, `gen_ai.conversation.id` or `thread_id` as the thread, `opik.tags` as tags and `opik.metadata.*` as
metadata. Attributes no rule names land in the span's input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.money import usd_float
from relaycast.records import Attempt, RequestRecord
from relaycast.telemetry.exporters.otlp_wire import Value
from relaycast.telemetry.kinds.base import Check, Dialect, KindSpec, env_or
from relaycast.telemetry.settings import OtlpOptions, url

CLOUD_URL = "https://www.comet.com/opik/api"  # opik.config.OPIK_URL_CLOUD
DEFAULT_WORKSPACE = "default"  # opik.config.OPIK_WORKSPACE_DEFAULT_NAME
DEFAULT_PROJECT = "Default Project"  # opik.config.OPIK_PROJECT_DEFAULT_NAME
TRACES_PATH = "/v1/private/otel/v1/traces"
# Test Connection: "Find projects", the cheapest call that needs the key and the workspace
# (https://www.comet.com/docs/opik/reference/rest-api/projects/find-projects).
CHECK_PATH = "/v1/private/projects?page=1&size=1"


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    api = url(r, env_or(m, "url", env, "OPIK_URL_OVERRIDE", default=CLOUD_URL), f"{at}.url").rstrip("/")
    key = env_or(m, "api_key", env, "OPIK_API_KEY")
    key = r.string(key, f"{at}.api_key") if key else None
    if key is None and urlsplit(api).hostname == urlsplit(CLOUD_URL).hostname:
        raise ConfigError(
            f"{at}.api_key",
            "required for Comet's cloud: the Opik API key (or set OPIK_API_KEY; a self-hosted Opik "
            "needs none: set url to its API, e.g. http://localhost:5173/api)",
        )
    workspace = r.string(env_or(m, "workspace", env, "OPIK_WORKSPACE", default=DEFAULT_WORKSPACE), f"{at}.workspace")
    project = r.string(
        env_or(m, "project_name", env, "OPIK_PROJECT_NAME", default=DEFAULT_PROJECT), f"{at}.project_name"
    )
    auth = (("Authorization", key),) if key else ()
    headers = (*auth, ("Comet-Workspace", workspace), ("projectName", project))
    return OtlpOptions(
        endpoint=api + TRACES_PATH,
        headers=headers,
        backend="opik",
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        check=Check(api + CHECK_PATH, "GET", (*auth, ("Comet-Workspace", workspace))),
        credentials=(key,) if key else (),
    )


class OpikDialect(Dialect):
    """The provider under the name Opik prices by, the session as Opik's thread, the request's tags as Opik tags,
    and attribution and relaycast's cost as Opik metadata (its columns, not its input)."""

    def root(self, record: RequestRecord) -> dict[str, Value]:
        return _shared(record)

    def attempt(self, record: RequestRecord, i: int, a: Attempt, op: str) -> dict[str, Value]:
        out = _shared(record)
        if a.vendor or a.provider:
            out["gen_ai.system"] = a.vendor or a.provider
        if a.cost_pusd is not None and a.cost_source != "none":
            out["opik.metadata.cost_usd"] = usd_float(a.cost_pusd)
            out["opik.metadata.cost_source"] = a.cost_source
        return out


def _shared(record: RequestRecord) -> dict[str, Value]:
    a = record.attribution
    out: dict[str, Value] = {}
    if a.session_id:
        out["thread_id"] = a.session_id  # older Opik releases read only this one
    tags = [f"{k}:{v}" for k, v in a.tags]
    if a.feature:
        tags.append(f"feature:{a.feature}")
    if tags:
        out["opik.tags"] = tags
    for key, value in (("user_id", a.user), ("feature", a.feature), ("key_name", a.key_name)):
        if value:
            out[f"opik.metadata.{key}"] = value
    return out


SPEC = KindSpec(
    kind="opik",
    title="Opik",
    keys=frozenset({"api_key", "workspace", "project_name", "url", "service"}),
    parse=parse,
    dialect=OpikDialect(),
    auth_hint="check api_key (OPIK_API_KEY) and workspace (OPIK_WORKSPACE): an API key of that workspace, "
    "from Opik's API key page",
)
