"""The command line's view of a running gateway's admin API: `relaycast routes status`, `relaycast broadcast status`,
`relaycast monitors status`, `relaycast keys ...`."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC
from typing import Any
from urllib.parse import quote

import orjson

from relaycast.cli.report_format import fmt_bucket_ms, fmt_rate
from relaycast.errors import error_source

DEFAULT_URL = "http://127.0.0.1:8080"
HISTORY_SHOWN = 5  # the last transitions `routes status` prints per target (--json has all the gateway keeps)


def add_url_argument(p: argparse.ArgumentParser, help_: str = "the gateway's address") -> None:
    """`--url` of a command that talks to a running gateway: $RELAYCAST_URL, else the address `relaycast serve` and
    `relaycast demo` listen on by default."""
    p.add_argument(
        "--url",
        default=os.environ.get("RELAYCAST_URL") or DEFAULT_URL,
        help=f"{help_} (default: $RELAYCAST_URL, else {DEFAULT_URL})",
    )


def admin_get(url: str, path: str, admin_key: str | None) -> dict[str, Any] | None:
    """GET an admin endpoint; print a plain error and return None when it fails."""
    return admin_send(url, "GET", path, admin_key)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """urllib follows redirects keeping `Authorization`: the admin key would go wherever a 3xx points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def open_without_redirects(req: urllib.request.Request, timeout: float) -> Any:
    """`urllib.request.urlopen`, except that a redirect is an HTTPError instead of a new request."""
    return urllib.request.build_opener(_NoRedirect()).open(req, timeout=timeout)


def admin_send(
    url: str, method: str, path: str, admin_key: str | None, body: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Call an admin endpoint (a JSON body for POST); print a plain error and return None when it fails."""
    key = admin_key or os.environ.get("RELAYCAST_ADMIN_KEY", "")
    headers = {"authorization": f"Bearer {key}"}
    data = None
    if method != "GET":
        data = orjson.dumps(body) if body is not None else b""
        headers["content-type"] = "application/json"
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with open_without_redirects(req, timeout=10) as r:
            answer: dict[str, Any] | None = orjson.loads(r.read())
            return answer
    except urllib.error.HTTPError as e:
        try:
            msg = orjson.loads(e.read()).get("error", {}).get("message", "")
        except (orjson.JSONDecodeError, AttributeError):
            msg = ""
        print(f"relaycast: the gateway answered HTTP {e.code}: {msg}", file=sys.stderr)
    except OSError as e:
        print(f"relaycast: cannot reach the gateway at {url}: {e}", file=sys.stderr)
    return None


def _fetch(args: argparse.Namespace, path: str) -> dict[str, Any] | int:
    """The admin endpoint's body to print as text, or the exit status when done (failed, or printed as JSON)."""
    body = admin_get(args.url, path, args.admin_key)
    if body is None:
        return 1
    if args.json:
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0
    return body


def routes_status(args: argparse.Namespace) -> int:
    body = _fetch(args, "/admin/routes")
    if isinstance(body, int):
        return body
    for name, r in body["routes"].items():
        sla = ", ".join(f"{k} {v:g}" for k, v in r["sla"].items() if v is not None) or "no SLA"
        print(f"route {name} ({r['strategy']}; {sla}): {' -> '.join(r['targets'])}")
    targets = body["targets"]
    window_s = body.get("window_s")
    print(
        f"\ntargets over the last {_seconds(window_s)} (routing.window_s): error rate = provider failures / requests, "
        "client-caused refusals apart;\nlatencies of successful attempts (and timeouts), as the upper edge of their "
        "10%-wide histogram bucket"
    )
    shared = body.get("shared") or {}
    elsewhere = [
        f"{n}: circuit open on another worker or replica (avoided here for {s:g} s more)"
        for n, s in (shared.get("open") or {}).items()
    ]
    elsewhere += [
        f"{d['target']}: demoted in {d['route']}: {d['why']}"
        for d in shared.get("demoted") or ()
        if d["route"] not in (targets.get(d["target"]) or {}).get("demoted_in", {})  # not listed with its target
    ]
    if not targets:
        print("no traffic yet")
        for n in elsewhere:
            print(n)
        return 0
    header = ["TARGET", "STATE", "CIRCUIT", "REQUESTS", "ERROR RATE", "FAILED", "REFUSED", "P50", "P99", "TTFT P99"]
    header.append("ERRORS BY CLASS")
    rows = []
    notes = []
    for name, t in targets.items():
        w = t["window"]
        errs = ", ".join(
            f"{k} {v}" + ("" if error_source(k) == "provider" else f" ({error_source(k)})")
            for k, v in sorted(w["errors"].items(), key=lambda kv: (-kv[1], kv[0]))
        )
        rows.append(
            [
                name,
                t["state"],
                t["circuit"],
                str(w["requests"]),
                fmt_rate(w["error_rate"]),
                str(w["provider_failures"]),
                str(w["client_refusals"]),
                fmt_bucket_ms(w["p50_ms"]),
                fmt_bucket_ms(w["p99_ms"]),
                fmt_bucket_ms(w["ttft_p99_ms"]),
                errs or "none",
            ]
        )
        if t["cooldown_reason"]:
            notes.append(f"{name}: cooling for {t['cooling_for_s']:g} s ({t['cooldown_reason']})")
        for route, why in t["demoted_in"].items():
            notes.append(f"{name}: demoted in {route}: {why}")
        if t["transitions"]:
            notes.append(f"{name}: transitions " + ", ".join(f"{k} {v}" for k, v in t["transitions"].items()))
        for h in (t.get("history") or [])[-HISTORY_SHOWN:]:
            where = f" in {h['route']}" if h.get("route") else ""
            notes.append(f"  {_utc(h['at'])}  {h['from']} -> {h['to']}{where}: {h['why']}")
    print_table(header, rows)
    for n in [*notes, *elsewhere]:
        print(n)
    return 0


def print_table(header: list[str], rows: list[list[str]], *, left: int = 3) -> None:
    """Columns padded to their widest cell: the first `left` left-aligned, the others right-aligned but the last."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    last = len(header) - 1
    for r in [header, *rows]:
        cells = [c.ljust(widths[i]) if i < left or i == last else c.rjust(widths[i]) for i, c in enumerate(r)]
        print("  ".join(cells).rstrip())


def _seconds(s: float | None) -> str:
    if s is None:
        return "window"
    return f"{s / 60:g} min" if s >= 60 and s % 60 == 0 else f"{s:g} s"


def _as_of(body: dict[str, Any]) -> None:
    """Say when a view is not fresh: the telemetry process was too busy, and the gateway served the last it had."""
    age = body.get("view_age_s") or 0
    if age > 0:
        print(f"as of {age:.0f} s ago: the telemetry process is busy (the gateway's last view of it)")


def broadcast_status(args: argparse.Namespace) -> int:
    body = _fetch(args, "/admin/broadcast")
    if isinstance(body, int):
        return body
    _as_of(body)
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


def monitors_status(args: argparse.Namespace) -> int:
    body = _fetch(args, "/admin/monitors")
    if isinstance(body, int):
        return body
    _as_of(body)
    mon = body.get("monitors")
    if mon is None:
        print("no monitors configured (monitors: rules: in the config)")
        return 0
    when = mon["last_evaluated_at"]
    print(
        f"{len(mon['rules'])} rules, evaluated every {mon['interval_s']:g}s; {mon['evaluations']} evaluations"
        f"{'' if when is None else ', last at ' + _utc(when)}, {mon['errors']} errors"
    )
    for r in mon["rules"]:
        alerting = [f for f in r["findings"] if f["state"] == "ALERT"]
        state = "ALERT" if alerting else ("OK" if r["findings"] else "no data yet")
        print(f"{r['name']} ({r['kind']}): {state}")
        for f in alerting or r["findings"][:3]:
            print(f"  {f['state']:<5} {f['message']}")
    for name, n in mon["notify"].items():
        print(
            f"notify {name} ({n['kind']}): sent {n['sent']}, failed {n['failed']}, retries {n['retries']}, queued {n['queued']}"
        )
    incidents = body.get("incidents") or []
    if incidents:
        print("recent incidents:")
        for i in incidents[:20]:
            end = "open" if i["resolved_ms"] is None else "resolved " + _utc(i["resolved_ms"] / 1000)
            print(
                f"  {_utc(i['opened_ms'] / 1000)}  {i['rule']}{' (' + i['scope'] + ')' if i['scope'] else ''}: {end}; {i['message']}"
            )
    return 0


def _utc(unix_s: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def keys_command(args: argparse.Namespace) -> int:
    cmd = args.keys_command
    if cmd == "list":
        body = _fetch(args, "/admin/keys")
        if isinstance(body, int):
            return body
        if not body["keys"]:
            print("no virtual keys (keys in the config file are not listed here)")
        for k in body["keys"]:
            lim = ", ".join(f"{n} {v:g}" for n, v in k["limits"].items() if v is not None) or "no limits"
            if k.get("pin"):
                lim += f"; pinned to {', '.join(f'{f} {k[f]}' for f in ('user', 'feature') if k.get(f))}"
            models = ", ".join(k["models"]) if k["models"] is not None else "all models"
            print(f"{k['name']:<20} {k['prefix']}…  {k['state']:<8} owner {k['owner'] or '-'}; {models}; {lim}")
        return 0
    if cmd == "create":
        spec: dict[str, Any] = {"name": args.name}
        for f in ("owner", "user", "feature", "rpm", "tpm"):
            if getattr(args, f) is not None:
                spec[f] = getattr(args, f)
        if args.models:
            spec["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
        if args.budget_day is not None:
            spec["budget_day_usd"] = args.budget_day
        if args.budget_month is not None:
            spec["budget_month_usd"] = args.budget_month
        if args.expires_in_days is not None:
            spec["expires_in_s"] = args.expires_in_days * 86400
        if args.tag:
            spec["tags"] = dict(t.split("=", 1) if "=" in t else (t, "") for t in args.tag)
        if getattr(args, "pin", False):  # --pin: its --user and --feature replace what its requests say
            spec["pin"] = True
        out = admin_send(args.url, "POST", "/admin/keys", args.admin_key, spec)
    elif cmd == "delete":
        out = admin_send(args.url, "DELETE", f"/admin/keys/{quote(args.name, safe='')}", args.admin_key)
    else:
        out = admin_send(args.url, "POST", f"/admin/keys/{quote(args.name, safe='')}/{cmd}", args.admin_key)
    if out is None:
        return 1
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    elif cmd in ("revoke", "delete"):
        print(f"{cmd}d {args.name}: it stops working on every replica within a second")
        if out.get("note"):
            print(out["note"])
    else:
        print(out["secret"])
        print(
            f"({'created' if cmd == 'create' else 'rotated'} {args.name}; this secret is shown once: relaycast keeps only its hash)",
            file=sys.stderr,
        )
    return 0
