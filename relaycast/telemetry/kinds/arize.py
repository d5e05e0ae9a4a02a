"""Arize AX (SaaS): OTLP/HTTP traces with the OpenInference attributes, into a project of an Arize space.

    - name: arize
      kind: arize
      api_key: ${ARIZE_API_KEY}        # Space Settings > API Keys
      space_id: ${ARIZE_SPACE_ID}      # Space Settings
      project_name: checkout           # default "default" (ARIZE_PROJECT_NAME)
      region: us                       # us | eu | ca; or endpoint: https://otlp.<host>/v1 (ARIZE_COLLECTOR_ENDPOINT)

Sources: the OTLP hosts per region from https://arize.com/docs/ax/security-and-settings/compliance/data-regions
(HTTP traces at `<host>/v1`, OTLP/HTTP appends `/traces`); the headers and the project's resource attribute from
the official arize-otel package (github.com/Arize-ai/arize-otel-python, src/arize/otel/otel.py:
`_get_arize_auth_headers` sends the key as `authorization` and `api_key`, the space as `arize-space-id` and
`space_id`, with `arize-interface: otel`; `register` puts `openinference.project.name` on the resource; its
environment variables ARIZE_SPACE_ID, ARIZE_API_KEY, ARIZE_PROJECT_NAME, ARIZE_COLLECTOR_ENDPOINT). Arize's
collector examples (https://arize.com/docs/ax/instrument/advanced-patterns) name the project with the `model_id`
resource attribute, so it carries the same name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relaycast.config_reader import Reader
from relaycast.telemetry import settings
from relaycast.telemetry.kinds.base import KindSpec, env_or, need
from relaycast.telemetry.kinds.openinference import OPENINFERENCE
from relaycast.telemetry.settings import OtlpOptions

REGIONS = MappingProxyType(
    {
        "us": "https://otlp.arize.com/v1",
        "eu": "https://otlp.eu-west-1a.arize.com/v1",
        "ca": "https://otlp.ca-central-1a.arize.com/v1",
    }
)


def traces_url(base: str) -> str:
    """`https://otlp.arize.com/v1` (the SDK's form), `.../v1/traces`, or a bare origin -> the traces URL."""
    u = base.rstrip("/")
    if u.endswith("/v1/traces"):
        return u
    if u.endswith("/v1"):
        return u + "/traces"
    return u + "/v1/traces"


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    api_key = need(r, env_or(m, "api_key", env, "ARIZE_API_KEY"), f"{at}.api_key", "api_key (or ARIZE_API_KEY)")
    space_id = need(r, env_or(m, "space_id", env, "ARIZE_SPACE_ID"), f"{at}.space_id", "space_id (or ARIZE_SPACE_ID)")
    project = r.string(env_or(m, "project_name", env, "ARIZE_PROJECT_NAME", default="default"), f"{at}.project_name")
    region = settings.choice(r, m.get("region", "us"), f"{at}.region", tuple(REGIONS))
    given = env_or(m, "endpoint", env, "ARIZE_COLLECTOR_ENDPOINT")
    endpoint = settings.url(r, given, f"{at}.endpoint") if given is not None else REGIONS[region]
    extra = settings.headers(r, m.get("headers"), f"{at}.headers")
    headers = (
        ("authorization", api_key),
        ("api_key", api_key),  # the form older Arize collectors read; the SDK sends both
        ("arize-space-id", space_id),
        ("space_id", space_id),
        ("arize-interface", "otel"),
        *extra,
    )
    return OtlpOptions(
        endpoint=traces_url(endpoint),
        headers=headers,
        backend="arize",
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        resource=(("openinference.project.name", project), ("model_id", project)),
        credentials=(api_key, *settings.typed_secrets(extra)),
        compression=settings.choice(r, m.get("compression", "none"), f"{at}.compression", ("none", "gzip")),
    )


SPEC = KindSpec(
    kind="arize",
    title="Arize AX",
    keys=frozenset({"api_key", "space_id", "project_name", "region", "endpoint", "headers", "service", "compression"}),
    parse=parse,
    dialect=OPENINFERENCE,
    auth_hint="check api_key and space_id (Arize: Space Settings > API Keys) and the region",
)
