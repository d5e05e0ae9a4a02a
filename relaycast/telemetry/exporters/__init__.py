"""Broadcast exporters, one module per destination kind. `build` is the only place that maps a kind to a class."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import aiohttp

from relaycast.telemetry.exporters.base import Exporter
from relaycast.telemetry.settings import DestinationConfig

EXPORTERS = {
    "datadog": "relaycast.telemetry.exporters.datadog:DatadogExporter",
    "otlp": "relaycast.telemetry.exporters.otlp:OtlpExporter",
    "webhook": "relaycast.telemetry.exporters.webhook:WebhookExporter",
    "file": "relaycast.telemetry.exporters.file:FileExporter",
}


def build(
    dest: DestinationConfig, session: aiohttp.ClientSession, servers: Mapping[str, tuple[str, int]] | None = None
) -> Exporter:
    """`servers`: each configured provider's host and port, for the exporters that name them (OTLP)."""
    module, _, cls = EXPORTERS[dest.kind].partition(":")
    make = getattr(importlib.import_module(module), cls)
    exporter: Exporter = make(dest, session, servers=servers) if dest.kind == "otlp" else make(dest, session)
    return exporter
