"""Destination kinds beyond the four built into `settings` (datadog, otlp, webhook, file): one module per kind, each
holding that kind's settings (what its setup page asks for, with the backend's defaults and environment variables)
and, for backends that speak OTLP, the attributes it renders (its `Dialect`).

`KINDS` is the only list of them; a module is imported when a config names its kind.
"""

from __future__ import annotations

import importlib
from types import MappingProxyType

from relaycast.telemetry.kinds.base import KindSpec

# kind -> module holding `SPEC`
KINDS = MappingProxyType(
    {
        # OTLP backends: presets over the OTLP exporter
        "otel_collector": "relaycast.telemetry.kinds.otel_collector",
        "langfuse": "relaycast.telemetry.kinds.langfuse",
        "langsmith": "relaycast.telemetry.kinds.langsmith",
        "arize": "relaycast.telemetry.kinds.arize",
        "phoenix": "relaycast.telemetry.kinds.phoenix",
        "grafana_cloud": "relaycast.telemetry.kinds.grafana_cloud",
        "newrelic": "relaycast.telemetry.kinds.newrelic",
        "braintrust": "relaycast.telemetry.kinds.braintrust",
        "opik": "relaycast.telemetry.kinds.opik",
        "weave": "relaycast.telemetry.kinds.weave",
        "sentry": "relaycast.telemetry.kinds.sentry",
        # their own wire formats
        "s3": "relaycast.telemetry.kinds.s3",
        "clickhouse": "relaycast.telemetry.kinds.clickhouse",
        "posthog": "relaycast.telemetry.kinds.posthog",
    }
)


def spec(kind: str) -> KindSpec:
    s: KindSpec = importlib.import_module(KINDS[kind]).SPEC
    return s
