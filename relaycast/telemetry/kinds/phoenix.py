"""Arize Phoenix (self-hosted, or Phoenix Cloud): OTLP/HTTP traces with the OpenInference attributes, into a
Phoenix project.

    - name: phoenix
      kind: phoenix
      endpoint: http://localhost:6006   # Phoenix's address (PHOENIX_COLLECTOR_ENDPOINT); Phoenix Cloud:
                                        # https://app.phoenix.arize.com/s/<space>
      api_key: ${PHOENIX_API_KEY}       # only when Phoenix has authentication on
      project_name: checkout            # default "default" (PHOENIX_PROJECT, PHOENIX_PROJECT_NAME)

Sources: the official arize-phoenix-otel package (github.com/Arize-ai/phoenix, packages/phoenix-otel/src/phoenix/
otel/settings.py and otel.py): traces go to `<endpoint>/v1/traces` (a Phoenix Cloud space keeps its `/s/<space>`
path), the key as `authorization: Bearer <key>`, extra headers from PHOENIX_CLIENT_HEADERS (the W3C baggage form
of OTEL_EXPORTER_OTLP_HEADERS), the project from PHOENIX_PROJECT, then PHOENIX_PROJECT_NAME, else "default", put
on the resource as `openinference.project.name`. Test Connection lists the projects through Phoenix's REST API
(`GET /v1/projects`), which needs the key when authentication is on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaycast.config_reader import Reader
from relaycast.telemetry import settings
from relaycast.telemetry.kinds.base import Check, KindSpec, env_or
from relaycast.telemetry.kinds.openinference import OPENINFERENCE
from relaycast.telemetry.settings import OtlpOptions

DEFAULT_ENDPOINT = "http://localhost:6006"


def base_url(endpoint: str) -> str:
    """Phoenix's address, from the address or its traces URL."""
    u = endpoint.rstrip("/")
    return u.removesuffix("/v1/traces")


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    given = env_or(m, "endpoint", env, "PHOENIX_COLLECTOR_ENDPOINT", default=DEFAULT_ENDPOINT)
    root = base_url(settings.url(r, given, f"{at}.endpoint"))
    key = env_or(m, "api_key", env, "PHOENIX_API_KEY")
    api_key = r.string(key, f"{at}.api_key") if key else None
    project = r.string(
        env_or(m, "project_name", env, "PHOENIX_PROJECT", "PHOENIX_PROJECT_NAME", default="default"),
        f"{at}.project_name",
    )
    extra = (
        settings.headers(r, m["headers"], f"{at}.headers")
        if m.get("headers") is not None
        else settings.parse_otel_headers(env.get("PHOENIX_CLIENT_HEADERS", ""))
    )
    auth = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    headers = (*extra, *auth)
    return OtlpOptions(
        endpoint=root + "/v1/traces",
        headers=headers,
        backend="phoenix",
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        resource=(("openinference.project.name", project),),
        check=Check(root + "/v1/projects?limit=1", "GET", headers),
        credentials=((api_key,) if api_key else ()) + settings.typed_secrets(extra),
        compression=settings.choice(r, m.get("compression", "none"), f"{at}.compression", ("none", "gzip")),
    )


SPEC = KindSpec(
    kind="phoenix",
    title="Phoenix",
    keys=frozenset({"endpoint", "api_key", "project_name", "headers", "service", "compression"}),
    parse=parse,
    dialect=OPENINFERENCE,
    auth_hint="check api_key (Phoenix: Settings > API Keys; a system key or a user key)",
)
