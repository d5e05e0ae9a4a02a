"""`relaycast report`: spend, tokens, latency or errors from the store, as a table, JSON or CSV.

Reads the store named by a config file (`--config`, no gateway needed), or asks a running gateway's analytics API
(`--url`, admin key). Both give the same documents (relaycast.store.queries).

    relaycast report --config relaycast.yaml --by user --since 24h
    relaycast report --url http://127.0.0.1:8080 --view latency --by provider --format csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from datetime import UTC
from typing import Any
from urllib.parse import urlencode

import orjson

from relaycast import config as config_mod
from relaycast.cli.admin import add_url_argument, admin_get
from relaycast.cli.report_format import fmt_bucket_ms, fmt_money, fmt_rate
from relaycast.store import queries
from relaycast.store.db import Connection, is_db_error

VIEWS = ("spend", "latency", "errors")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--by",
        default=None,
        help="spend: model|provider|user|feature|key|target|route (default model); latency: model|provider|target",
    )
    p.add_argument("--since", default="24h", help="how far back: 1h, 24h, 7d, or a time (default 24h)")
    p.add_argument("--until", default=None, help="end of the range (default now)")
    p.add_argument("--view", default="spend", choices=VIEWS, help="what to report (default spend)")
    p.add_argument("--format", default="table", choices=("table", "json", "csv"))
    p.add_argument("--limit", type=int, default=50, help="groups to list before '(other)' (default 50)")
    p.add_argument("--config", "-c", help="read the store this config names (no gateway needed)")
    add_url_argument(p, "else ask this running gateway (admin key)")
    p.add_argument("--admin-key", default=None, help="admin key for --url (default: $RELAYCAST_ADMIN_KEY)")


def run(args: argparse.Namespace) -> int:
    by = args.by or "model"
    params = {"since": args.since, "by": by, "limit": str(args.limit)}
    if args.until:
        params["until"] = args.until
    try:
        doc = _local(args, params) if args.config else _remote(args, params)
    except queries.BadQuery as e:
        print(f"relaycast report: {e}", file=sys.stderr)
        return 2
    except _Failed as e:
        print(f"relaycast report: {e}", file=sys.stderr)
        return 1
    if doc is None:
        return 1
    if args.format == "json":
        print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return 0
    header, rows = _table(args.view, doc)
    if args.format == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        sys.stdout.write(out.getvalue())
    else:
        _print_table(header, rows)
        if args.view == "spend":
            t = doc["totals"]
            extra = f", {t['unpriced_requests']} unpriced" if t["unpriced_requests"] else ""
            print(
                f"\n{t['requests']} requests, {_usd(t['cost_usd'])} in total{extra} "
                f"({_when(doc['since'])} to {_when(doc['until'])} UTC)"
            )
        elif args.view == "latency":
            print(
                f"\nsuccessful attempts only, {_when(doc['since'])} to {_when(doc['until'])} UTC; each percentile is "
                "the upper edge of its 10%-wide histogram bucket"
            )
        else:
            print(
                f"\nerrors are provider failures ({', '.join(doc['error_sources']['provider'])}); refusals are "
                f"client-caused ({', '.join(doc['error_sources']['client'])}); "
                f"{_when(doc['since'])} to {_when(doc['until'])} UTC"
            )
    return 0


class _Failed(Exception):
    pass


def _local(args: argparse.Namespace, params: dict[str, str]) -> dict[str, Any]:
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        raise _Failed(f"invalid config: {e}") from None
    if cfg.store is None:
        raise _Failed("the store is disabled in this config")
    try:
        conn = Connection(cfg.store)
    except Exception as e:
        if is_db_error(e):
            raise _Failed(str(e)) from None
        raise
    try:
        w = queries.window(params)
        if args.view == "spend":
            return queries.spend(conn, w, params["by"], params["limit"])
        if args.view == "latency":
            return queries.latency(conn, w, params["by"])
        return queries.error_rates(conn, w)
    except Exception as e:
        if is_db_error(e):
            raise _Failed(f"cannot read {cfg.store.display()}: {str(e).splitlines()[0][:200]}") from None
        raise
    finally:
        conn.close()


def _remote(args: argparse.Namespace, params: dict[str, str]) -> dict[str, Any] | None:
    if args.view == "errors":
        params.pop("by")
    return admin_get(args.url, f"/admin/analytics/{args.view}?{urlencode(params)}", args.admin_key)


def _table(view: str, doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    if view == "spend":
        header = [
            doc["by"],
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "cost_usd",
            "unpriced",
        ]
        rows = [
            [
                g["key"] or "(none)",
                g["requests"],
                g["errors"],
                g["prompt_tokens"],
                g["completion_tokens"],
                g["cached_tokens"],
                g["reasoning_tokens"],
                g["cost_usd"] if g["cost_usd"] is not None else "unpriced",
                g["unpriced_requests"],
            ]
            for g in doc["groups"]
        ]
        return header, rows
    if view == "latency":
        header = [doc["by"], "attempts", "p50_ms", "p90_ms", "p99_ms", "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"]
        rows = [
            [
                g["key"],
                g["attempts"],
                *(g["total_ms"][p] for p in ("p50", "p90", "p99")),
                *(g["ttft_ms"][p] for p in ("p50", "p90", "p99")),
            ]
            for g in doc["groups"]
        ]
        return header, rows
    header = ["provider", "attempts", "errors", "error_rate", "refusals", "refusal_rate", "by_class"]
    rows = [
        [
            p["provider"],
            p["attempts"],
            p["errors"],
            p["error_rate"],
            p["refusals"],
            p["refusal_rate"],
            " ".join(f"{k}={v}" for k, v in p["by_class"].items()),
        ]
        for p in doc["providers"]
    ]
    return header, rows


def _cell(column: str, v: Any) -> str:
    """A table's cell: money, rates and latencies written as everywhere else (relaycast.cli.report_format)."""
    if column.endswith("_rate"):
        return fmt_rate(v)
    if column.endswith("_ms"):
        return fmt_bucket_ms(v)
    if v is None:
        return "-"
    return _usd(v) if column == "cost_usd" else str(v)


def _print_table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [[h.removesuffix("_ms") for h in header]] + [[_cell(header[i], v) for i, v in enumerate(r)] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    if not rows:
        print("(no requests in this range)")


def _usd(v: str | None) -> str:
    """Money in a table: as on the dashboard (`fmt_money`); `unpriced` when nothing could be priced."""
    if v is None or v == "unpriced":
        return "unpriced"
    return fmt_money(v)


def _when(unix_s: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M")
