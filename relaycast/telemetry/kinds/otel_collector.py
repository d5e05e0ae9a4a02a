"""An OpenTelemetry Collector (or any OTLP/HTTP receiver): the generic `otlp` kind under the name OpenRouter's
Broadcast gives it. The GenAI conventions only; `endpoint` defaults to a local collector."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relaycast.config_reader import Reader
from relaycast.telemetry.kinds.base import KindSpec
from relaycast.telemetry.settings import OtlpOptions, otlp_options


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    given = dict(m)
    given.setdefault("endpoint", "http://127.0.0.1:4318/v1/traces")
    return otlp_options(r, given, at, env, backend="otel_collector")


SPEC = KindSpec(
    kind="otel_collector",
    title="OpenTelemetry Collector",
    keys=frozenset({"endpoint", "headers", "protocol", "service", "compression"}),
    parse=parse,
    auth_hint="check the headers",
)
