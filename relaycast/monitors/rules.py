"""Each rule kind evaluated against the store at a point in time: pure reads, one `Finding` per scope.

A finding says whether the rule fires for that scope, the value against the threshold, a one-line message, and
details for the notification (for a spend spike: the baseline and the top contributors to the growth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relaycast.costs.money import PICO_PER_USD, format_usd
from relaycast.monitors.settings import Rule
from relaycast.store.db import Connection
from relaycast.store.queries import DIMENSIONS, NOT_ERRORS

CONTRIBUTOR_DIMS = ("user", "feature", "model", "key")


@dataclass(frozen=True, slots=True)
class Finding:
    scope: str  # "" for the whole rule, else "user=alice", "target=openai/gpt-4o", ...
    firing: bool
    value: float | None
    threshold: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    demote: tuple[str, str] | None = None  # (route or "*", target or "provider:<name>") while firing


def evaluate(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    if rule.kind == "spend_spike":
        return spend_spike(conn, rule, now)
    if rule.kind == "latency_sla":
        return latency_sla(conn, rule, now)
    if rule.kind == "error_rate":
        return error_rate(conn, rule, now)
    return budget(conn, rule, now)


def _usd(pico: float) -> str:
    return f"${pico / PICO_PER_USD:,.2f}" if pico >= PICO_PER_USD else f"${format_usd(int(pico))}"


# --- spend spike --------------------------------------------------------------------------------


def _windows(rule: Rule, now_ms: int) -> list[tuple[int, int, int]]:
    """(k, start_ms, end_ms): k = 0 is the current window, 1..N the baseline. A window is (start, end]: a request
    stamped at the very moment of evaluation counts in the current one."""
    w = int(rule.window_s * 1000)
    if rule.baseline == "previous":
        return [(k, now_ms - (k + 1) * w, now_ms - k * w) for k in range(rule.baseline_windows + 1)]
    day = 86_400_000
    return [(0, now_ms - w, now_ms)] + [
        (d, now_ms - d * day - w, now_ms - d * day) for d in range(1, rule.baseline_windows + 1)
    ]


def _spend_by_window(
    conn: Connection, rule: Rule, now_ms: int, dim: str | None, extra: tuple[tuple[str, str], ...] = ()
) -> dict[tuple[int, str], int]:
    """pico-dollars per (window k, value of `dim`), from the raw requests in each window."""
    where, args = "", []
    for d, v in (*rule.where, *extra):
        where += f" AND {DIMENSIONS[d]} = ?"
        args.append(v)
    col = DIMENSIONS[dim] if dim else "''"
    out: dict[tuple[int, str], int] = {}
    wins = _windows(rule, now_ms)
    if rule.baseline == "previous":
        w = int(rule.window_s * 1000)
        rows = conn.query(
            f"SELECT (? - ts_ms) / ? AS k, {col}, sum(coalesce(cost_pusd, 0)) FROM requests "
            f"WHERE ts_ms > ? AND ts_ms <= ?{where} GROUP BY k, {col}",
            [now_ms, w, wins[-1][1], now_ms, *args],
        )
        for k, v, pico in rows:
            out[(int(k), v)] = out.get((int(k), v), 0) + int(pico or 0)
        return out
    for k, start, end in wins:
        for v, pico in conn.query(
            f"SELECT {col}, sum(coalesce(cost_pusd, 0)) FROM requests WHERE ts_ms > ? AND ts_ms <= ?{where} "
            f"GROUP BY {col}",
            [start, end, *args],
        ):
            out[(k, v)] = int(pico or 0)
    return out


def spend_spike(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    now_ms = int(now * 1000)
    wins = _windows(rule, now_ms)
    first = conn.query("SELECT min(ts_ms) FROM requests")[0][0]
    # Baseline windows count only from when the store has data: a new gateway has no history, not a zero one.
    usable = [k for k, _, end in wins[1:] if first is not None and end > int(first)]
    spend = _spend_by_window(conn, rule, now_ms, rule.by)
    values = sorted({v for _, v in spend}) if rule.by else [""]
    floor = rule.min_usd * PICO_PER_USD
    findings = []
    for v in values:
        current = spend.get((0, v), 0)
        baseline = sum(spend.get((k, v), 0) for k in usable) / len(usable) if usable else None
        limit = None if baseline is None else baseline * (1 + rule.threshold_pct / 100)
        firing = baseline is not None and current >= floor and current > (limit or 0) and current > 0
        growth = None if not baseline else (current - baseline) / baseline * 100
        scope = f"{rule.by}={v}" if rule.by else ""
        what = f"spend{' of ' + scope if scope else ''} over the last {_dur(rule.window_s)}"
        if baseline is None:
            msg = f"{what}: {_usd(current)}; no baseline yet"
        elif firing:
            g = "from nothing" if growth is None else f"+{growth:.0f}%"
            msg = f"{what} is {_usd(current)}, {g} against a baseline of {_usd(baseline)} (threshold +{rule.threshold_pct:g}%)"
        else:
            msg = f"{what} is {_usd(current)} against a baseline of {_usd(baseline)}"
        details: dict[str, Any] = {
            "current_usd": current / PICO_PER_USD,
            "baseline_usd": None if baseline is None else baseline / PICO_PER_USD,
            "growth_pct": None if growth is None else round(growth, 1),
            "baseline_windows": len(usable),
        }
        if firing:
            extra = ((rule.by, v),) if rule.by else ()
            details["top_contributors"] = _contributors(conn, rule, now_ms, usable, extra)
            if details["top_contributors"]:
                top = details["top_contributors"][0]
                msg += f"; top contributor: {top['dimension']} {top['value'] or '(none)'} (+{_usd(top['growth_pico'])})"
        findings.append(Finding(scope, firing, current / PICO_PER_USD, rule.min_usd, msg, details))
    return findings


def _contributors(
    conn: Connection, rule: Rule, now_ms: int, usable: list[int], extra: tuple[tuple[str, str], ...]
) -> list[dict[str, Any]]:
    """Which users, features, models and keys grew the most against their own baseline."""
    out = []
    for dim in CONTRIBUTOR_DIMS:
        if dim == rule.by:
            continue
        spend = _spend_by_window(conn, rule, now_ms, dim, extra)
        for v in {v for k, v in spend if k == 0}:
            base = sum(spend.get((k, v), 0) for k in usable) / len(usable) if usable else 0
            growth = spend[(0, v)] - base
            if growth > 0:
                out.append(
                    {
                        "dimension": dim,
                        "value": v,
                        "current_usd": spend[(0, v)] / PICO_PER_USD,
                        "baseline_usd": base / PICO_PER_USD,
                        "growth_pico": growth,
                    }
                )
    out.sort(key=lambda c: -c["growth_pico"])
    for c in out:
        c["growth_usd"] = c["growth_pico"] / PICO_PER_USD
    return out[:5]


# --- latency SLA --------------------------------------------------------------------------------


def latency_sla(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    since = int((now - rule.window_s) * 1000)
    until = int(now * 1000)
    sql = "SELECT a.target, a.duration_us, a.ttft_us FROM attempts a"
    args: list[Any] = []
    if rule.route is not None:
        sql += " JOIN requests r ON r.id = a.request_row WHERE r.model_requested = ? AND"
        args.append(rule.route)
    else:
        sql += " WHERE"
        for col in ("model", "provider", "target"):
            v = getattr(rule, col)
            if v is not None:
                sql += f" a.{col} = ? AND"
                args.append(v)
    sql += " a.ts_ms > ? AND a.ts_ms <= ? AND a.error_class IS NULL"
    by_target: dict[str, list[float]] = {}
    ttft = rule.metric.startswith("ttft_")
    for target, dur, tt in conn.query(sql, [*args, since, until]):
        v = tt if ttft else dur
        if v is not None:
            by_target.setdefault(target, []).append(v / 1000)
    q = float(rule.metric.rsplit("p", 1)[1]) / 100
    findings = []
    for target, values in sorted(by_target.items()):
        values.sort()
        n = len(values)
        p = values[max(0, math.ceil(q * n) - 1)]
        firing = n >= rule.min_requests and p > rule.threshold_ms
        label = rule.metric.replace("ttft_", "TTFT ")
        msg = f"{target}: {label} {p:.0f} ms over {_dur(rule.window_s)} ({n} requests), SLA {rule.threshold_ms:g} ms"
        findings.append(
            Finding(
                f"target={target}",
                firing,
                round(p, 1),
                rule.threshold_ms,
                msg,
                {"requests": n, "metric": rule.metric},
                (rule.route or "*", target),
            )
        )
    return findings


# --- error rate ---------------------------------------------------------------------------------


def error_rate(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    rows = conn.query(
        "SELECT error_class, count(*) FROM attempts WHERE provider = ? AND ts_ms > ? AND ts_ms <= ? GROUP BY error_class",
        (rule.provider, int((now - rule.window_s) * 1000), int(now * 1000)),
    )
    attempts = errors = 0
    by_class: dict[str, int] = {}
    for cls, n in rows:
        n = int(n)
        if cls is not None and cls in NOT_ERRORS:
            continue  # cancelled by the client or a lost hedge: no verdict on the provider
        attempts += n
        if cls is not None:
            by_class[cls] = n
            if rule.error_class is None or cls == rule.error_class:
                errors += n
    rate = errors / attempts * 100 if attempts else 0.0
    firing = attempts >= rule.min_requests and rate > rule.threshold_pct
    what = f"{rule.error_class} errors" if rule.error_class else "errors"
    msg = (
        f"{rule.provider}: {what} {rate:.1f}% of {attempts} attempts over {_dur(rule.window_s)} "
        f"(threshold {rule.threshold_pct:g}%)"
    )
    return [
        Finding(
            f"provider={rule.provider}",
            firing,
            round(rate, 2),
            rule.threshold_pct,
            msg,
            {"attempts": attempts, "errors": errors, "by_class": by_class},
            ("*", f"provider:{rule.provider}"),
        )
    ]


# --- budget -------------------------------------------------------------------------------------


def period_start(now: float, period: str) -> int:
    t = datetime.fromtimestamp(now, UTC)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return int(start.timestamp())


def budget(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    assert rule.scope is not None
    dim, value = rule.scope
    start = period_start(now, rule.period)
    row = conn.query(
        "SELECT sum(cost_pusd), sum(unpriced) FROM usage_hourly WHERE dim = ? AND value = ? AND hour >= ? AND hour <= ?",
        (dim, value, start, int(now)),
    )[0]
    pico = int(row[0] or 0)
    limit = rule.limit_usd * PICO_PER_USD
    firing = pico > limit
    msg = f"{dim} {value}: {_usd(pico)} spent this {rule.period} (UTC), budget {_usd(limit)}"
    if row[1]:
        msg += f"; {int(row[1])} unpriced requests not counted"
    return [
        Finding(
            f"{dim}={value}",
            firing,
            pico / PICO_PER_USD,
            rule.limit_usd,
            msg,
            {"period": rule.period, "period_start": start, "unpriced_requests": int(row[1] or 0)},
        )
    ]


def _dur(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


__all__ = ["Finding", "evaluate"]
