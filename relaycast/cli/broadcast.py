"""`relaycast broadcast test`: Test Connection for the destinations of a config, without a running gateway."""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp

from relaycast import config as config_mod
from relaycast.redact import Redactor
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import refuse_redirects


def broadcast_test(args: argparse.Namespace) -> int:
    cfg = config_mod.load_or_say(args.config)
    if cfg is None:
        return 2
    dests = [
        d for d in (cfg.broadcast.destinations if cfg.broadcast else ()) if args.name is None or d.name == args.name
    ]
    if not dests:
        which = f"named '{args.name}' " if args.name else ""
        print(
            f"relaycast: no broadcast destination {which}is configured (nor set by DD_* / OTEL_* variables)",
            file=sys.stderr,
        )
        return 2
    redactor = Redactor(cfg.secrets())

    async def run() -> list[tuple[str, str, bool, str]]:
        async with aiohttp.ClientSession(trust_env=False, trace_configs=[refuse_redirects()]) as session:
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
