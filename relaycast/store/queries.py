"""Analytics over the store: spend, latency percentiles, error rates, the request explorer and one request's
waterfall. Each function takes a blocking `Connection` and returns the JSON document the analytics API serves
(and `relaycast report` prints); they read the hourly rollups, so their cost does not grow with stored requests.

Money leaves as exact decimal text (`cost_usd`); the per-bucket `series` carry floats, for charts only. By model,
provider or target, each attempt's tokens and cost count for its own model, provider and target (a failover's two
billed attempts on two models show on both), and the request itself (its count, its error) for its final attempt's:
every grouping sums to the totals.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson

from relaycast.costs.money import format_usd, usd_float
from relaycast.errors import error_source, error_sources
from relaycast.store.db import Connection
from relaycast.store.histogram import percentiles
from relaycast.store.rows import ATTEMPT_DIMS, TOTAL, TTFT
from relaycast.store.schema import MINUTE_RANGE_S, MINUTE_RETENTION_S, USAGE_SUMS

DIMENSIONS = {
    "model": "model",
    "provider": "provider",
    "target": "target",
    "key": "key_name",
    "user": "user_id",
    "feature": "feature",
    "route": "model_requested",
}
LATENCY_DIMENSIONS = ("model", "provider", "target")
NOT_ERRORS = frozenset({"ok", "client_cancelled", "hedge_lost"})  # outcomes that say nothing against a provider
OTHER = "(other)"
QS = (50.0, 90.0, 99.0)
MAX_LIMIT = 1000
_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class BadQuery(ValueError):
    """A parameter the analytics cannot take; becomes a 400 with this message."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Window:
    since: int  # unix seconds, the start of its first bucket
    until: int  # unix seconds, exclusive
    bucket: str  # "minute" | "hour" | "day"
    filters: Mapping[str, str] = field(default_factory=dict)  # dimension -> exact value
    start: float = 0.0  # the range asked for (unix seconds); `since`..`until` are its buckets' edges
    end: float = 0.0
    auto: bool = False  # the bucket was chosen, not asked for (`fitted` may choose hours instead)

    @property
    def bucket_s(self) -> int:
        return BUCKET_S[self.bucket]

    @property
    def grain(self) -> str:
        """The rollups read: `minute` (`*_minute`, column `minute`) or `hour` (`*_hourly`, column `hour`)."""
        return "minute" if self.bucket == "minute" else "hour"

    def rollup(self, name: str) -> str:
        """`usage`, `attempts` or `latency` -> the table this window reads."""
        return f"{name}_minute" if self.grain == "minute" else f"{name}_hourly"

    @property
    def row_s(self) -> int:
        """The rollup rows' length: 60 or 3600 seconds."""
        return 60 if self.grain == "minute" else 3600

    def buckets(self) -> list[int]:
        return list(range(self.since, self.until, self.bucket_s))

    def bucket_of(self, hour: int) -> int:
        return hour - (hour - self.since) % self.bucket_s

    def header(self) -> dict[str, Any]:
        """What every analytics document says about its window: the range asked for and the buckets it used."""
        return {
            "since": self.since,
            "until": self.until,
            "bucket": self.bucket,
            "bucket_s": self.bucket_s,
            "range": {"start": round(self.start, 3), "end": round(self.end, 3)},
            "filters": dict(self.filters),
        }


BUCKET_S = {"minute": 60, "hour": 3600, "day": 86400}


def parse_time(text: str, now: float, param: str) -> float:
    """`24h`, `30m`, `7d` (that long ago), unix seconds, or an ISO 8601 time."""
    t = text.strip()
    m = _REL.match(t)
    value: float | None = None
    if m:
        value = now - float(m.group(1)) * _UNIT[m.group(2)]
    else:
        try:
            value = float(t)
        except ValueError:
            try:
                value = datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
            except ValueError:
                value = None
    # Years 1970 to 9999 (nan, inf and overflowing values are not times).
    if value is None or not (math.isfinite(value) and 0 <= value < 253402300800):
        raise BadQuery(f"'{param}' must be like 24h, 7d, unix seconds or an ISO 8601 time; got '{text[:50]}'", param)
    return value


def window(params: Mapping[str, str], now: float | None = None, default_since: str = "24h") -> Window:
    """The window of `since`/`until` with buckets of `bucket`: `minute`, `hour`, `day`, or `auto` (the default:
    minutes up to MINUTE_RANGE_S within the last MINUTE_RETENTION_S, hours up to three days, else days)."""
    now = time.time() if now is None else now
    since = parse_time(params.get("since") or default_since, now, "since")
    until = parse_time(params["until"], now, "until") if params.get("until") else now
    if until <= since:
        raise BadQuery("'until' must be after 'since'", "until")
    bucket = params.get("bucket") or "auto"
    auto = bucket == "auto"
    if auto:
        span = until - since
        recent = since >= now - MINUTE_RETENTION_S + 60  # minute rows still kept for all of it
        bucket = "minute" if span <= MINUTE_RANGE_S + 1 and recent else "hour" if span <= 3 * 86400 else "day"
    if bucket not in BUCKET_S:
        raise BadQuery("'bucket' must be 'minute', 'hour', 'day' or 'auto'", "bucket")
    if bucket == "minute" and since < now - MINUTE_RETENTION_S + 60:
        raise BadQuery(
            f"minute buckets are kept for {MINUTE_RETENTION_S // 3600} hours: use bucket=hour for older times",
            "bucket",
        )
    step = BUCKET_S[bucket]
    start = int(since) // step * step
    end = start + math.ceil((until - start) / step) * step
    if (end - start) // step > 2000:
        raise BadQuery("too many buckets: use bucket=day or a shorter range", "bucket")
    filters = {}
    for dim in DIMENSIONS:
        v = params.get(dim)
        if v is not None:
            filters[dim] = v if v != "(none)" else ""
    return Window(since=start, until=end, bucket=bucket, filters=filters, start=since, end=until, auto=auto)


def fitted(conn: Connection, w: Window) -> Window:
    """An `auto` window of minutes that starts before the store's first minute rollup (a store migrated from a
    version without them, or replicas still writing only hours) is read by the hour: no recent range shows
    empty."""
    if not (w.auto and w.bucket == "minute"):
        return w
    hour = conn.query("SELECT min(hour) FROM usage_hourly WHERE dim = 'all' AND hour >= ?", (w.since // 3600 * 3600,))
    if hour[0][0] is None:
        return w  # nothing in the range's hours at all
    first = conn.query("SELECT min(minute) FROM usage_minute WHERE dim = 'all'")[0][0]
    if first is not None and int(first) // 3600 * 3600 <= int(hour[0][0]):
        return w  # the minute rollups cover every hour the range has data in
    start = int(w.start) // 3600 * 3600
    end = start + math.ceil((w.end - start) / 3600) * 3600
    return replace(w, since=start, until=end, bucket="hour")


def _dimension(by: str, allowed: Any = DIMENSIONS) -> str:
    if by not in allowed:
        raise BadQuery(f"'by' must be one of {', '.join(allowed)}; got '{by[:50]}'", "by")
    return DIMENSIONS[by]


def _where(w: Window, allowed: Any = DIMENSIONS) -> tuple[str, list[Any]]:
    sql = f"{w.grain} >= ? AND {w.grain} < ?"
    args: list[Any] = [w.since, w.until]
    for dim, v in w.filters.items():
        if dim not in allowed:
            raise BadQuery(f"this view cannot be filtered by '{dim}' (it can by {', '.join(allowed)})", dim)
        sql += f" AND {DIMENSIONS[dim]} = ?"
        args.append(v)
    return sql, args


def _limit(v: Any, default: int) -> int:
    if v is None or v == "":
        return default
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise BadQuery("'limit' must be an integer", "limit") from None
    if not 1 <= n <= MAX_LIMIT:
        raise BadQuery(f"'limit' must be from 1 to {MAX_LIMIT}", "limit")
    return n


# --- spend and tokens ---------------------------------------------------------------------------


def _usage_doc(sums: list[int]) -> dict[str, Any]:
    d: dict[str, Any] = dict(zip(USAGE_SUMS, (int(x or 0) for x in sums), strict=False))
    cost = d.pop("cost_pusd")
    unpriced = d.pop("unpriced")
    estimated = d.pop("estimated")
    reported = d.pop("reported")
    # Nothing known: every request is unpriced (in a model's group: every one there, or its only attempts there were)
    nothing_priced = unpriced > 0 and unpriced >= d["requests"] and cost == 0
    d["cost_usd"] = None if nothing_priced else format_usd(cost)
    d["cost_pusd"] = None if nothing_priced else cost
    d["unpriced_requests"] = unpriced
    d["estimated_requests"] = estimated
    d["reported_requests"] = reported
    return d


_RAW_SUMS = (
    "count(*)",
    "sum(CASE WHEN (status >= 400 OR error_class IS NOT NULL) AND status <> 499 THEN 1 ELSE 0 END)",
    "sum(prompt_tokens)",
    "sum(completion_tokens)",
    "sum(cached_tokens)",
    "sum(cache_write_tokens)",
    "sum(reasoning_tokens)",
    "sum(coalesce(cost_pusd, 0))",
    "sum(CASE WHEN cost_source = 'unpriced' THEN 1 ELSE 0 END)",
    "sum(CASE WHEN cost_source = 'estimated' THEN 1 ELSE 0 END)",
    "sum(CASE WHEN cost_source = 'reported' THEN 1 ELSE 0 END)",
)  # the same sums as usage_hourly's, from the raw requests
_COST, _REQS = 8, 1  # positions in a (key, *sums) row
ATTEMPT_DIMENSIONS = frozenset(ATTEMPT_DIMS)  # decided by each attempt: its tokens and cost go to its own value
_ERROR = "CASE WHEN (r.status >= 400 OR r.error_class IS NOT NULL) AND r.status <> 499 THEN 1 ELSE 0 END"
_RANK = "CASE {c} WHEN 'unpriced' THEN 4 WHEN 'estimated' THEN 3 WHEN 'reported' THEN 2 ELSE 0 END"
_SHARE_SUMS = (
    "sum(fin)",
    "sum(fin * err)",
    "sum(pt)",
    "sum(ct)",
    "sum(cat)",
    "sum(cwt)",
    "sum(rt)",
    "sum(cost)",
    "sum(CASE WHEN rk = 4 THEN 1 ELSE 0 END)",
    "sum(CASE WHEN rk = 3 THEN 1 ELSE 0 END)",
    "sum(CASE WHEN rk = 2 THEN 1 ELSE 0 END)",
)  # usage_hourly's sums over _shares' rows


def _shares(w: Window, by: str) -> tuple[str, list[Any]]:
    """The raw rows the model, provider and target rollups are made of, filtered: one per (request, value of `by`)
    with the tokens and cost of the request's attempts on that value (`fin` 1 when its final attempt is one of
    them: the request counts there). A request whose tokens and cost are all its final attempt's (`split` 0: nearly
    every one) is its own row, since its model, provider and target are that attempt's; only the others are read
    from their attempts, found through the `requests_split` index."""
    tok = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens")
    names = ("pt", "ct", "cat", "cwt", "rt")
    a_where = r_where = "r.ts_ms >= ? AND r.ts_ms < ?"
    a_args: list[Any] = [w.since * 1000, w.until * 1000]
    r_args = list(a_args)
    for dim, v in w.filters.items():
        col = DIMENSIONS[dim]
        a_where += f" AND {'a' if dim in ATTEMPT_DIMENSIONS else 'r'}.{col} = ?"
        r_where += f" AND r.{col} = ?"
        a_args.append(v)
        r_args.append(v)
    col = DIMENSIONS[by]
    a_col = f"{'a' if by in ATTEMPT_DIMENSIONS else 'r'}.{col}"
    own = (
        f"SELECT r.ts_ms AS ts, r.{col} AS g, 1 AS fin, {_ERROR} AS err, "
        + ", ".join(f"r.{t} AS {n}" for t, n in zip(tok, names, strict=True))
        + f", coalesce(r.cost_pusd, 0) AS cost, {_RANK.format(c='r.cost_source')} AS rk FROM requests r "
    )
    sql = (
        f"{own}WHERE {r_where} AND r.split = 0 "
        f"UNION ALL SELECT r.ts_ms, {a_col}, max(CASE WHEN a.idx = r.attempts - 1 THEN 1 ELSE 0 END), max({_ERROR}), "
        + ", ".join(f"sum(a.{t})" for t in tok)
        + f", sum(coalesce(a.cost_pusd, 0)), max({_RANK.format(c='a.cost_source')}) "
        f"FROM requests r JOIN attempts a ON a.request_row = r.id WHERE r.split = 1 AND {a_where} "
        f"GROUP BY r.id, r.ts_ms, {a_col}"
    )
    return sql, r_args + a_args


def _spend_rows(
    conn: Connection, w: Window, by: str
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(totals, rows per group, rows per (hour, group)) with USAGE_SUMS order. Unfiltered: from the per-dimension
    rollup. Filtered (e.g. features of one model): from the raw rows, through the (dimension, time) indexes; from
    the attempts when grouped or filtered by model, provider or target, split as the rollups split them."""
    if not w.filters:
        sums = ", ".join(f"sum({c})" for c in USAGE_SUMS)
        t = w.grain
        base = f"FROM {w.rollup('usage')} WHERE dim = ? AND {t} >= ? AND {t} < ?"
        totals = conn.query(f"SELECT {sums} {base}", ("all", w.since, w.until))[0]
        grouped = conn.query(f"SELECT value, {sums} {base} GROUP BY value", (by, w.since, w.until))
        series = conn.query(
            f"SELECT {t}, value, sum(cost_pusd), sum(requests), sum(prompt_tokens + completion_tokens) {base} "
            f"GROUP BY {t}, value",
            (by, w.since, w.until),
        )
        return totals, grouped, series
    if by in ATTEMPT_DIMENSIONS or any(d in ATTEMPT_DIMENSIONS for d in w.filters):
        # One pass, per (hour, group); the groups and the totals are summed from it here (a few thousand rows).
        rows, shares_args = _shares(w, by)
        hourly = conn.query(
            f"SELECT (ts / {w.row_s * 1000}) * {w.row_s} AS h, g, {', '.join(_SHARE_SUMS)} FROM ({rows}) t "
            "GROUP BY h, g",
            shares_args,
        )
        per_group: dict[Any, list[int]] = {}
        all_sums = [0] * len(USAGE_SUMS)
        series = []
        for h, g, *vals in hourly:
            acc = per_group.setdefault(g, [0] * len(USAGE_SUMS))
            for i, v in enumerate(vals):
                acc[i] += int(v or 0)
                all_sums[i] += int(v or 0)
            series.append((h, g, vals[_COST - 1], vals[_REQS - 1], int(vals[2] or 0) + int(vals[3] or 0)))
        return tuple(all_sums), [(g, *acc) for g, acc in per_group.items()], series
    col = DIMENSIONS[by]
    where = "ts_ms >= ? AND ts_ms < ?"
    args: list[Any] = [w.since * 1000, w.until * 1000]
    for dim, v in w.filters.items():
        where += f" AND {DIMENSIONS[dim]} = ?"
        args.append(v)
    sums = ", ".join(_RAW_SUMS)
    totals = conn.query(f"SELECT {sums} FROM requests WHERE {where}", args)[0]
    grouped = conn.query(f"SELECT {col}, {sums} FROM requests WHERE {where} GROUP BY {col}", args)
    series = conn.query(
        f"SELECT (ts_ms / {w.row_s * 1000}) * {w.row_s} AS h, {col}, sum(coalesce(cost_pusd, 0)), count(*), "
        f"sum(prompt_tokens + completion_tokens) FROM requests WHERE {where} GROUP BY h, {col}",
        args,
    )
    return totals, grouped, series


def spend(conn: Connection, w: Window, by: str = "model", limit: Any = None) -> dict[str, Any]:
    w = fitted(conn, w)
    _dimension(by)
    n = _limit(limit, 10)
    total_row, grouped, rows = _spend_rows(conn, w, by)
    grouped = sorted(grouped, key=lambda r: (-(r[_COST] or 0), -(r[_REQS] or 0), r[0]))  # by cost, then requests
    top = [r[0] for r in grouped[:n]]
    groups = [{"key": r[0], **_usage_doc(list(r[1:]))} for r in grouped[:n]]
    rest = grouped[n:]
    if rest:
        merged = [sum(int(r[i] or 0) for r in rest) for i in range(1, len(USAGE_SUMS) + 1)]
        groups.append({"key": OTHER, **_usage_doc(merged)})
    buckets = w.buckets()
    index = {b: i for i, b in enumerate(buckets)}
    series: dict[str, dict[str, list[float]]] = {}
    keep = set(top)
    for hour, key, cost, reqs, toks in rows:
        i = index.get(w.bucket_of(int(hour)))
        if i is None:
            continue
        name = key if key in keep else OTHER
        s = series.get(name)
        if s is None:
            s = series[name] = {
                "cost": [0.0] * len(buckets),
                "requests": [0] * len(buckets),
                "tokens": [0] * len(buckets),
            }
        s["cost"][i] += usd_float(cost)
        s["requests"][i] += int(reqs or 0)
        s["tokens"][i] += int(toks or 0)
    return {
        **w.header(),
        "by": by,
        "totals": _usage_doc(list(total_row)),
        "groups": groups,
        "buckets": buckets,
        "series": series,
    }


# --- latency ------------------------------------------------------------------------------------


def latency(conn: Connection, w: Window, by: str = "model") -> dict[str, Any]:
    w = fitted(conn, w)
    col = _dimension(by, LATENCY_DIMENSIONS)
    where, args = _where(w, LATENCY_DIMENSIONS)
    # Grouped by the view's bucket in SQL (a day holds 24 hourly rows): the rows returned do not grow with the range.
    rows = conn.query(
        f"SELECT (({w.grain} - ?) / ?) * ? + ? AS b, {col}, kind, bucket, sum(n) FROM {w.rollup('latency')} "
        f"WHERE {where} "
        f"GROUP BY b, {col}, kind, bucket",
        [w.since, w.bucket_s, w.bucket_s, w.since, *args],
    )
    buckets = w.buckets()
    index = {b: i for i, b in enumerate(buckets)}
    overall: dict[tuple[str, int], dict[int, int]] = {}
    per: dict[tuple[str, int, int], dict[int, int]] = {}
    for hour, key, kind, b, n in rows:
        n = int(n)
        o = overall.setdefault((key, kind), {})
        o[b] = o.get(b, 0) + n
        i = index.get(w.bucket_of(hour))
        if i is not None:
            p = per.setdefault((key, kind, i), {})
            p[b] = p.get(b, 0) + n
    keys = sorted({k for k, _ in overall}, key=lambda k: -sum(overall.get((k, TOTAL), {}).values()))
    groups = []
    series: dict[str, dict[str, list[float | None]]] = {}
    for key in keys:
        tot = overall.get((key, TOTAL), {})
        ttft = overall.get((key, TTFT), {})
        pt, pf = percentiles(tot.items(), QS), percentiles(ttft.items(), QS)
        groups.append(
            {
                "key": key,
                "attempts": sum(tot.values()),
                "streams": sum(ttft.values()),
                "total_ms": {"p50": pt[50.0], "p90": pt[90.0], "p99": pt[99.0]},
                "ttft_ms": {"p50": pf[50.0], "p90": pf[90.0], "p99": pf[99.0]},
            }
        )
        s: dict[str, list[float | None]] = {"total_p50": [], "total_p99": [], "ttft_p50": [], "ttft_p99": []}
        for i in range(len(buckets)):
            a = percentiles(per.get((key, TOTAL, i), {}).items(), (50.0, 99.0))
            f = percentiles(per.get((key, TTFT, i), {}).items(), (50.0, 99.0))
            s["total_p50"].append(a[50.0])
            s["total_p99"].append(a[99.0])
            s["ttft_p50"].append(f[50.0])
            s["ttft_p99"].append(f[99.0])
        series[key] = s
    return {
        **w.header(),
        "by": by,
        "buckets": buckets,
        "groups": groups,
        "series": series,
    }


# --- errors -------------------------------------------------------------------------------------


def error_rates(conn: Connection, w: Window) -> dict[str, Any]:
    """Per provider: its attempts, the provider failures among them (`errors`, `error_rate`) and the client-caused
    refusals (`refusals`, `refusal_rate`), apart, by the one classification in relaycast.errors (`error_sources`);
    errors the gateway caused itself are in `by_class` and `gateway_errors` only. Cancelled attempts and lost
    hedges count on neither side (`cancelled`)."""
    w = fitted(conn, w)
    where, args = _where(w, LATENCY_DIMENSIONS)
    rows = conn.query(
        f"SELECT {w.grain}, provider, outcome, sum(n) FROM {w.rollup('attempts')} WHERE {where} "
        f"GROUP BY {w.grain}, provider, outcome",
        args,
    )
    buckets = w.buckets()
    index = {b: i for i, b in enumerate(buckets)}
    totals: dict[str, dict[str, int]] = {}
    series: dict[str, dict[str, Any]] = {}
    for hour, provider, outcome, n in rows:
        n = int(n)
        t = totals.setdefault(provider, {})
        t[outcome] = t.get(outcome, 0) + n
        i = index.get(w.bucket_of(hour))
        if i is None:
            continue
        zeros = [0] * len(buckets)
        s = series.setdefault(
            provider,
            {"attempts": list(zeros), "errors": list(zeros), "refusals": list(zeros), "rate": [], "by_class": {}},
        )
        if outcome in NOT_ERRORS and outcome != "ok":
            continue
        s["attempts"][i] += n
        if outcome in NOT_ERRORS:
            continue
        s["by_class"].setdefault(outcome, list(zeros))[i] += n
        source = error_source(outcome)
        if source == "provider":
            s["errors"][i] += n
        elif source == "client":
            s["refusals"][i] += n
    for s in series.values():
        s["rate"] = [round(e / a, 4) if a else None for a, e in zip(s["attempts"], s["errors"], strict=False)]
    providers: list[dict[str, Any]] = []
    seen: set[str] = set()
    for provider, t in totals.items():
        by_class = {c: n for c, n in sorted(t.items(), key=lambda x: (-x[1], x[0])) if c not in NOT_ERRORS}
        seen.update(by_class)
        attempts = sum(n for c, n in t.items() if c == "ok" or c not in NOT_ERRORS)
        errors = sum(n for c, n in by_class.items() if error_source(c) == "provider")
        refusals = sum(n for c, n in by_class.items() if error_source(c) == "client")
        providers.append(
            {
                "provider": provider,
                "attempts": attempts,
                "errors": errors,
                "error_rate": round(errors / attempts, 4) if attempts else None,
                "refusals": refusals,
                "refusal_rate": round(refusals / attempts, 4) if attempts else None,
                "gateway_errors": sum(by_class.values()) - errors - refusals,
                "by_class": by_class,
                "cancelled": sum(n for c, n in t.items() if c in NOT_ERRORS and c != "ok"),
            }
        )
    providers.sort(key=lambda p: (-(p["error_rate"] or 0), p["provider"]))
    # Errors per bucket by class, over every provider (the Errors view's stacked chart), and the totals.
    by_class_series: dict[str, list[int]] = {}
    for s in series.values():
        for c, counts in s["by_class"].items():
            acc = by_class_series.setdefault(c, [0] * len(buckets))
            for i, n in enumerate(counts):
                acc[i] += n
    attempts = sum(p["attempts"] for p in providers)
    errors = sum(p["errors"] for p in providers)
    refusals = sum(p["refusals"] for p in providers)
    return {
        **w.header(),
        "buckets": buckets,
        "totals": {
            "attempts": attempts,
            "errors": errors,
            "error_rate": round(errors / attempts, 4) if attempts else None,
            "refusals": refusals,
            "refusal_rate": round(refusals / attempts, 4) if attempts else None,
            "gateway_errors": sum(p["gateway_errors"] for p in providers),
        },
        "providers": providers,
        "series": series,
        "by_class": dict(sorted(by_class_series.items(), key=lambda x: (-sum(x[1]), x[0]))),
        "error_sources": error_sources(),
        "classes": {c: error_source(c) for c in sorted(seen)},
    }


# --- the request explorer -----------------------------------------------------------------------

_LIST_COLUMNS = (
    "id",
    "request_id",
    "ts_ms",
    "endpoint",
    "model_requested",
    "target",
    "provider",
    "model",
    "status",
    "error_class",
    "stream",
    "duration_us",
    "ttft_us",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cost_pusd",
    "cost_source",
    "user_id",
    "feature",
    "key_name",
    "session_id",
)
_DETAIL_COLUMNS = (
    "tags",
    "params",
    "app_url",
    "error_message",
    "input_messages",
    "output_text",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def _request_doc(r: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "request_id": r["request_id"],
        "ts": r["ts_ms"],
        "endpoint": r["endpoint"],
        "model_requested": r["model_requested"],
        "target": r["target"] or None,
        "provider": r["provider"] or None,
        "model": r["model"],
        "status": r["status"],
        "error_class": r["error_class"],
        "stream": bool(r["stream"]),
        "duration_ms": r["duration_us"] / 1000,
        "ttft_ms": None if r["ttft_us"] is None else r["ttft_us"] / 1000,
        "attempts": r["attempts"],
        "prompt_tokens": r["prompt_tokens"],
        "completion_tokens": r["completion_tokens"],
        "cost_usd": format_usd(r["cost_pusd"]),
        "cost_source": r["cost_source"],
        "user": r["user_id"] or None,
        "feature": r["feature"] or None,
        "key": r["key_name"] or None,
        "session_id": r["session_id"],
    }


def requests(conn: Connection, params: Mapping[str, str], now: float | None = None) -> dict[str, Any]:
    """The request explorer: newest first, `limit` a page, paged with `before`. Filters: `model` (the model asked
    for, the upstream model or the target, exactly; a prefix of any when it ends in `*`), `route`, `target`, `provider`,
    `key`, `user`, `feature` (exact; `(none)` for empty), `session`, `error_class` (exact), `status` (`ok`,
    `error` or a status code)."""
    n = _limit(params.get("limit"), 50)
    now = time.time() if now is None else now
    sql = f"SELECT {', '.join(_LIST_COLUMNS)} FROM requests WHERE ts_ms >= ?"
    args: list[Any] = [int(parse_time(params.get("since") or "30d", now, "since") * 1000)]
    if params.get("until"):
        sql += " AND ts_ms < ?"
        args.append(int(parse_time(params["until"], now, "until") * 1000))
    for dim, col in DIMENSIONS.items():
        v = params.get(dim)
        if not v:
            continue
        v = v if v != "(none)" else ""
        if dim != "model":
            sql += f" AND {col} = ?"
            args.append(v)
        elif v.endswith("*") and len(v) > 1:  # a prefix of what the request asked for or of the upstream model
            prefix = v[:-1]
            sql += " AND (substr(model_requested, 1, ?) = ? OR substr(model, 1, ?) = ? OR substr(target, 1, ?) = ?)"
            args += [len(prefix), prefix] * 3
        else:
            sql += " AND (model_requested = ? OR model = ? OR target = ?)"
            args += [v, v, v]
    for param, col in (("session", "session_id"), ("error_class", "error_class")):
        v = params.get(param)
        if v:
            sql += f" AND {col} = ?"
            args.append(v)
    status = params.get("status")
    if status == "error":  # a stream that failed mid-way answered 200, then an error event
        sql += " AND (status >= 400 OR error_class IS NOT NULL)"
    elif status == "ok":
        sql += " AND status < 400 AND error_class IS NULL"
    elif status and re.fullmatch(r"[1-5][0-9][0-9]", status):
        sql += " AND status = ?"
        args.append(int(status))
    elif status:
        raise BadQuery("'status' must be 'ok', 'error' or a status code such as 429", "status")
    before = params.get("before")
    if before:
        ts, _, rid = before.partition(":")
        if not re.fullmatch(r"[0-9]{1,15}", ts) or not re.fullmatch(r"-?[0-9]{1,19}", rid):
            raise BadQuery("'before' must be a cursor from a previous page's next_before", "before")
        sql += " AND ts_ms <= ? AND (ts_ms < ? OR id < ?)"  # the first term keeps the time index usable
        args += [int(ts), int(ts), int(rid)]
    sql += " ORDER BY ts_ms DESC, id DESC LIMIT ?"
    args.append(n + 1)
    rows = [dict(zip(_LIST_COLUMNS, r, strict=False)) for r in conn.query(sql, args)]
    more = len(rows) > n
    rows = rows[:n]
    return {
        "requests": [_request_doc(r) for r in rows],
        "next_before": f"{rows[-1]['ts_ms']}:{rows[-1]['id']}" if more and rows else None,
    }


def request_detail(conn: Connection, request_id: str) -> dict[str, Any] | None:
    cols = _LIST_COLUMNS + _DETAIL_COLUMNS
    found = conn.query(
        f"SELECT {', '.join(cols)} FROM requests WHERE request_id = ? ORDER BY ts_ms DESC LIMIT 1", (request_id,)
    )
    if not found:
        return None
    r = dict(zip(cols, found[0], strict=False))
    doc = _request_doc(r)
    doc.update(
        {
            "tags": _loads(r["tags"]) or {},
            "params": _loads(r["params"]) or {},
            "app_url": r["app_url"],
            "error_message": r["error_message"],
            "input_messages": _loads(r["input_messages"]),
            "output_text": r["output_text"],
            "cached_tokens": r["cached_tokens"],
            "cache_write_tokens": r["cache_write_tokens"],
            "reasoning_tokens": r["reasoning_tokens"],
        }
    )
    acols = (
        "idx",
        "target",
        "provider",
        "model",
        "started_us",
        "duration_us",
        "ttft_us",
        "upstream_status",
        "error_class",
        "error_message",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "cost_pusd",
        "cost_source",
    )
    attempts = []
    for a in conn.query(f"SELECT {', '.join(acols)} FROM attempts WHERE request_row = ? ORDER BY idx", (r["id"],)):
        d = dict(zip(acols, a, strict=False))
        attempts.append(
            {
                "index": d["idx"],
                "target": d["target"],
                "provider": d["provider"],
                "model": d["model"],
                "started_ms": d["started_us"] / 1000,
                "duration_ms": d["duration_us"] / 1000,
                "ttft_ms": None if d["ttft_us"] is None else d["ttft_us"] / 1000,
                "upstream_status": d["upstream_status"],
                "error_class": d["error_class"],
                "error_message": d["error_message"],
                "finish_reason": d["finish_reason"],
                "prompt_tokens": d["prompt_tokens"],
                "completion_tokens": d["completion_tokens"],
                "cached_tokens": d["cached_tokens"],
                "cache_write_tokens": d["cache_write_tokens"],
                "reasoning_tokens": d["reasoning_tokens"],
                "cost_usd": format_usd(d["cost_pusd"]) if d["cost_source"] != "none" else "0",
                "cost_source": d["cost_source"],
            }
        )
    return {"request": doc, "attempts": attempts}


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
