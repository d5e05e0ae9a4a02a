"""The command line's view of a running gateway's admin API: `relaycast routes status`, `relaycast broadcast status`."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from datetime import UTC
from typing import Any

import orjson


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
    if not targets:
        print("no traffic yet")
    for name, t in targets.items():
        w = t["window"]
        errs = ", ".join(f"{k} {v}" for k, v in sorted(w["errors"].items())) or "none"
        state = t["state"] + (f" ({t['cooldown_reason']}, {t['cooling_for_s']} s)" if t["cooldown_reason"] else "")
        print(
            f"{name}: {state}, circuit {t['circuit']}; {w['requests']} requests, error rate {w['error_rate']:.1%}, "
            f"p50 {_ms(w['p50_ms'])}, p99 {_ms(w['p99_ms'])}, TTFT p99 {_ms(w['ttft_p99_ms'])}; errors: {errs}"
        )
        for route, why in t["demoted_in"].items():
            print(f"  demoted in {route}: {why}")
        if t["transitions"]:
            print("  transitions: " + ", ".join(f"{k} {v}" for k, v in t["transitions"].items()))
    return 0


def broadcast_status(args: argparse.Namespace) -> int:
    body = _fetch(args, "/admin/broadcast")
    if isinstance(body, int):
        return body
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
    else:
        out = admin_send(args.url, "POST", f"/admin/keys/{args.name}/{cmd}", args.admin_key)
    if out is None:
        return 1
    if args.json:
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    elif cmd == "revoke":
        print(f"revoked {args.name}: it stops working on every replica within a second")
    else:
        print(out["secret"])
        print(
            f"({'created' if cmd == 'create' else 'rotated'} {args.name}; this secret is shown once: relaycast keeps only its hash)",
            file=sys.stderr,
        )
    return 0


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"
