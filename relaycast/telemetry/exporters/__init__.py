"""Broadcast exporters, one module per wire format. `build` is the only place that maps a kind to a class: the
four built-in kinds here, the others by their module in `relaycast.telemetry.kinds`."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import aiohttp

from relaycast.telemetry import kinds
from relaycast.telemetry.exporters.base import Exporter, TestResult
from relaycast.telemetry.settings import DestinationConfig, OtlpOptions

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
    where = EXPORTERS.get(dest.kind) or kinds.spec(dest.kind).exporter
    module, _, cls = where.partition(":")
    make = getattr(importlib.import_module(module), cls)
    if isinstance(dest.options, OtlpOptions):
        exporter: Exporter = make(dest, session, servers=servers)
    else:
        exporter = make(dest, session)
    return exporter


async def tried(cfg: DestinationConfig, session: aiohttp.ClientSession) -> TestResult:
    """Test Connection: one destination built from `cfg`, its test run, and the destination closed again."""
    exporter = build(cfg, session)
    try:
        return await exporter.test()
    finally:
        await exporter.close()
