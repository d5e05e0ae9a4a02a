"""`relaycast broadcast test`: Test Connection for the destinations of a config, or of the standard `DD_*` and
`OTEL_*` variables alone, without a running gateway. For Datadog it says which way the spans go (through an Agent
or agentless) and why.

`relaycast broadcast list | add | remove | enable | disable`: the destinations of a running gateway, and the ones
saved in its store (the dashboard's Settings > Broadcast), through its admin API."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping
from urllib.parse import quote

import orjson

from relaycast import config as config_mod
from relaycast.redact import Redactor, proxy_secrets
from relaycast.telemetry.exporters import tried
from relaycast.telemetry.exporters.base import http_session
from relaycast.telemetry.settings import (
    DatadogOptions,
    DestinationConfig,
    datadog_from_env,
    otlp_from_env,
    parse_otel_headers,
)


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
        async with http_session() as session:
            out = []
            for d in dests:
                r = await tried(d, session)
                out.append((d.name, d.kind, r.ok, redactor.scrub(r.message)))
            return out

    results = asyncio.run(run())
    for name, kind, ok, message in results:
        print(f"{'OK  ' if ok else 'FAIL'} {name} ({kind}): {message}")
    return 0 if all(ok for _, _, ok, _ in results) else 1


# --- destinations saved in a running gateway's store (the Settings > Broadcast page's actions) -------------------


def _values(pairs: list[str], from_env: list[str]) -> dict[str, object] | None:
    """`--set name=value` and `--set-env name=VARIABLE` as a destination's settings (a secret from the environment
    stays out of the shell's history). `headers` takes `name=value` pairs separated by commas."""
    out: dict[str, object] = {}
    for item, env in [(p, False) for p in pairs] + [(p, True) for p in from_env]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"relaycast: expected name=value, got '{item[:60]}'", file=sys.stderr)
            return None
        if env:
            if value not in os.environ:
                print(f"relaycast: the environment variable {value} is not set (for {key})", file=sys.stderr)
                return None
            value = os.environ[value]
        if key == "headers":
            out[key] = dict(parse_otel_headers(value))
        elif value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            out[key] = int(value) if value.isdigit() and key not in ("api_key", "token", "password") else value
    return out


def broadcast_list(args: argparse.Namespace) -> int:
    from relaycast.cli.admin import admin_get, print_table

    body = admin_get(args.url, "/admin/broadcast/destinations", args.admin_key)
    if body is None:
        return 1
    if args.json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    saved_on = "on" if body.get("enabled") else "OFF"
    print(f"Broadcast of the dashboard's destinations: {saved_on}")
    rows = []
    for d in body.get("destinations", []):
        st = d.get("status")
        if d.get("problem"):
            state = "BROKEN"
        elif st is None:
            state = "off"
        else:
            state = "healthy" if st["healthy"] else "DOWN"
        dropped = str(st["dropped_total"]) if st else "-"
        rows.append(
            [
                d["name"],
                d["kind"],
                d["source"],
                state,
                str(st["sent"]) if st else "-",
                str(st["queued"]) if st else "-",
                str(st["spooled_records"]) if st else "-",
                dropped,
            ]
        )
    if not rows:
        print("no broadcast destinations")
        return 0
    print_table(["name", "kind", "from", "state", "sent", "queued", "spooled", "dropped"], rows)
    for d in body.get("destinations", []):
        st = d.get("status") or {}
        if d.get("problem"):
            print(f"{d['name']}: {d['problem']}")
        elif st.get("last_error"):
            print(f"{d['name']}: last error: {st['last_error']}")
    return 0


def broadcast_add(args: argparse.Namespace) -> int:
    from relaycast.cli.admin import admin_send

    values = _values(args.set or [], args.set_env or [])
    if values is None:
        return 2
    body = {"kind": args.kind, "settings": values, "save_anyway": args.save_anyway}
    answer = admin_send(
        args.url, "PUT", f"/admin/broadcast/destinations/{quote(args.name, safe='')}", args.admin_key, body
    )
    if answer is None:
        return 1
    test = answer["test"]
    verb = "added" if answer["created"] else "updated"
    print(f"{verb} {args.name} ({args.kind}); Test Connection {'OK' if test['ok'] else 'FAILED'}: {test['message']}")
    return 0


def broadcast_remove(args: argparse.Namespace) -> int:
    from relaycast.cli.admin import admin_send

    answer = admin_send(
        args.url, "DELETE", f"/admin/broadcast/destinations/{quote(args.name, safe='')}", args.admin_key
    )
    if answer is None:
        return 1
    print(f"removed {args.name}")
    return 0


def broadcast_toggle(args: argparse.Namespace) -> int:
    from relaycast.cli.admin import admin_send

    on = args.broadcast_command == "enable"
    if admin_send(args.url, "PUT", "/admin/broadcast/enabled", args.admin_key, {"enabled": on}) is None:
        return 1
    print(f"the dashboard's destinations are {'on' if on else 'off'} (the config file's are unchanged)")
    return 0
