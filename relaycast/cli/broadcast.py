"""`relaycast broadcast test`: Test Connection for the destinations of a config, or of the standard `DD_*` and
`OTEL_*` variables alone, without a running gateway. For Datadog it says which way the spans go (through an Agent
or agentless) and why."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping

import aiohttp

from relaycast import config as config_mod
from relaycast.redact import Redactor, proxy_secrets
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import refuse_redirects
from relaycast.telemetry.settings import DatadogOptions, DestinationConfig, datadog_from_env, otlp_from_env


def datadog_mode(o: DatadogOptions, env: Mapping[str, str]) -> str:
    """Which way a Datadog destination's spans go, and why."""
    if o.agentless:
        return f"agentless to {o.intake_url} with an API key (no Agent address is set)"
    given_key = o.api_key or env.get("DD_API_KEY")
    why = (
        "; an API key is set too, but with an Agent address the Agent's own key is used (set "
        "DD_LLMOBS_AGENTLESS_ENABLED=1, or leave out agent_url, to send agentless)"
        if given_key
        else ""
    )
    return f"through the Datadog Agent at {o.agent_url}, which adds its API key{why}"


def _destinations(args: argparse.Namespace) -> tuple[list[DestinationConfig], tuple[str, ...]] | None:
    """The destinations to test and the secrets to scrub: the config's, else the environment's alone."""
    if args.config is not None:
        cfg = config_mod.load_or_say(args.config)
        if cfg is None:
            return None
        return list(cfg.broadcast.destinations if cfg.broadcast else ()), cfg.secrets()
    try:
        found = [d for d in (datadog_from_env(os.environ), otlp_from_env(os.environ)) if d is not None]
    except config_mod.ConfigError as e:
        print(f"relaycast: {e}", file=sys.stderr)
        return None
    return found, tuple(s for d in found for s in d.secrets()) + proxy_secrets()


def broadcast_test(args: argparse.Namespace) -> int:
    given = _destinations(args)
    if given is None:
        return 2
    every, secrets = given
    dests = [d for d in every if args.name is None or d.name == args.name]
    if not dests:
        which = f"named '{args.name}' " if args.name else ""
        print(
            f"relaycast: no broadcast destination {which}is configured (nor set by DD_* / OTEL_* variables)",
            file=sys.stderr,
        )
        return 2
    redactor = Redactor(secrets)
    for d in dests:
        if isinstance(d.options, DatadogOptions):
            print(f"     {d.name} (datadog): {redactor.scrub(datadog_mode(d.options, os.environ))}")

    async def run() -> list[tuple[str, str, bool, str]]:
        # As the gateway does: through HTTP_PROXY / HTTPS_PROXY unless NO_PROXY says otherwise.
        async with aiohttp.ClientSession(trust_env=True, trace_configs=[refuse_redirects()]) as session:
            out = []
            for d in dests:
                exporter = build(d, session)
                try:
                    r = await exporter.test()
                finally:
                    await exporter.close()
                out.append((d.name, d.kind, r.ok, redactor.scrub(r.message)))
            return out

    results = asyncio.run(run())
    for name, kind, ok, message in results:
        print(f"{'OK  ' if ok else 'FAIL'} {name} ({kind}): {message}")
    return 0 if all(ok for _, _, ok, _ in results) else 1
