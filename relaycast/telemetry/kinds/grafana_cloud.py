"""Grafana Cloud: OTLP traces through a stack's OTLP gateway, into Tempo.

What the stack's OpenTelemetry page (Connections > OpenTelemetry, "Configure") shows: the OTLP endpoint
`https://otlp-gateway-<zone>.grafana.net/otlp`, the instance ID and an access-policy token ("Password / API
Token"); exporters authenticate with `Authorization: Basic base64(<instance id>:<token>)` and post traces to
`<endpoint>/v1/traces` (https://grafana.com/docs/grafana-cloud/send-data/otlp/send-data-otlp/). Grafana documents
no environment variables of its own for this (only the standard OTEL_EXPORTER_OTLP_* ones its page generates), so
the settings come from the config. Tempo stores the spans as they are: the GenAI attributes only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.telemetry.kinds.base import KindSpec, basic, need
from relaycast.telemetry.settings import OtlpOptions, choice, url

ZONE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")  # e.g. prod-us-east-0, prod-eu-west-2


def endpoint(r: Reader, m: dict[str, Any], at: str) -> str:
    """The traces URL from `endpoint` (the page's OTLP endpoint, with or without /v1/traces) or `zone`."""
    if m.get("endpoint") is not None:
        e = url(r, m["endpoint"], f"{at}.endpoint").rstrip("/")
        return e if e.endswith("/v1/traces") else e + "/v1/traces"
    zone = need(r, m.get("zone"), f"{at}.zone", "the stack's zone (e.g. prod-us-east-0) or its OTLP endpoint")
    if not ZONE.match(zone):
        raise ConfigError(f"{at}.zone", f"'{zone}' is not a Grafana Cloud zone (e.g. prod-us-east-0)")
    return f"https://otlp-gateway-{zone}.grafana.net/otlp/v1/traces"


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    instance = m.get("instance_id")
    if isinstance(instance, int) and not isinstance(instance, bool):
        instance = str(instance)  # YAML reads the numeric ID as a number
    instance_id = need(r, instance, f"{at}.instance_id", "the stack's OTLP instance ID")
    token = need(r, m.get("token"), f"{at}.token", "an access-policy token with the traces:write scope")
    return OtlpOptions(
        endpoint=endpoint(r, m, at),
        headers=(("Authorization", basic(instance_id, token)),),
        backend="grafana_cloud",
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        credentials=(token,),
        # gzip: what the Collector's otlphttp exporter, which Grafana's own setup uses, sends by default
        compression=choice(r, m.get("compression", "gzip"), f"{at}.compression", ("none", "gzip")),
    )


SPEC = KindSpec(
    kind="grafana_cloud",
    title="Grafana Cloud",
    keys=frozenset({"instance_id", "token", "zone", "endpoint", "service", "compression"}),
    parse=parse,
    auth_hint="check instance_id and token: the OTLP instance ID of that stack and an access-policy token with the "
    "traces:write scope",
)
