"""`relaycast broadcast test` and `relaycast broadcast status`."""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp
import orjson

from relaycast import config as config_mod
from relaycast.admin_client import admin_get
from relaycast.redact import Redactor
from relaycast.telemetry.exporters import build


def broadcast_test(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        print(f"relaycast: invalid config: {e}", file=sys.stderr)
        return 2
    dests = [d for d in (cfg.broadcast.destinations if cfg.broadcast else ()) if args.name is None or d.name == args.name]
    if not dests:
        which = f"named '{args.name}' " if args.name else ""
        print(f"relaycast: no broadcast destination {which}is configured (nor set by DD_* / OTEL_* variables)", file=sys.stderr)
        return 2
    redactor = Redactor(cfg.secrets())

    async def run() -> list[tuple[str, str, bool, str]]:
        async with aiohttp.ClientSession(trust_env=False) as session:
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


def broadcast_status(args: argparse.Namespace) -> int:
    body = admin_get(args.url, "/admin/broadcast", args.admin_key)
    if body is None:
        return 1
    if args.json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    dests = body.get("destinations", [])
    if not dests:
        print("no broadcast destinations")
    for d in dests:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(d["dropped"].items())) or "none"
        print(
            f"{d['name']} ({d['kind']}): {'healthy' if d['healthy'] else 'DOWN'}; sent {d['sent']} in "
            f"{d['batches_sent']} batches, queued {d['queued']}, spooled {d['spooled_batches']} batches "
            f"({d['spool_bytes']} bytes), retries {d['retries']}, dropped: {dropped}"
        )
        if d.get("last_error"):
            print(f"  last error: {d['last_error']}")
    return 0
