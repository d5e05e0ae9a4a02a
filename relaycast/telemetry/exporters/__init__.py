"""Broadcast exporters, one module per destination kind. `build` is the only place that maps a kind to a class."""

from __future__ import annotations

import importlib

import aiohttp

from relaycast.telemetry.exporters.base import Exporter
from relaycast.telemetry.settings import DestinationConfig

EXPORTERS = {
    "datadog": "relaycast.telemetry.exporters.datadog:DatadogExporter",
    "otlp": "relaycast.telemetry.exporters.otlp:OtlpExporter",
    "webhook": "relaycast.telemetry.exporters.webhook:WebhookExporter",
    "file": "relaycast.telemetry.exporters.file:FileExporter",
}


def build(dest: DestinationConfig, session: aiohttp.ClientSession) -> Exporter:
    module, _, cls = EXPORTERS[dest.kind].partition(":")
    exporter: Exporter = getattr(importlib.import_module(module), cls)(dest, session)
    return exporter
