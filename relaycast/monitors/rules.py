"""Each rule kind judged over the rows the store returns for it (`relaycast.store.monitor_queries`): pure
functions, with no I/O and no clock (the moment of evaluation is an argument), one `Finding` per scope.

A finding says whether the rule fires for that scope, the value against the threshold, a one-line message, and
details for the notification (for a spend spike: the baseline and the top contributors to the growth).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from relaycast.costs.money import PICO_PER_USD, format_usd
from relaycast.errors import CLIENT_REFUSALS, PROVIDER_FAILURES
from relaycast.limits.base import period_start
from relaycast.monitors.settings import Rule
from relaycast.store.monitor_queries import LatencySample, OutcomeCount, SpendRow, UsageTotal, Window
from relaycast.store.queries import NOT_ERRORS

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


def _usd(pico: float) -> str:
    return f"${pico / PICO_PER_USD:,.2f}" if pico >= PICO_PER_USD else f"${format_usd(int(pico))}"


def _dur(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{s:g}s"


def span_ms(rule: Rule, now: float) -> tuple[int, int]:
    """The rule's window ending now, `(since, until]` in unix milliseconds."""
    return int((now - rule.window_s) * 1000), int(now * 1000)


# --- spend spike --------------------------------------------------------------------------------


def spend_windows(rule: Rule, now: float) -> tuple[Window, ...]:
    """k = 0 is the current window, 1..N the baseline: the N windows before it (`previous`) or the same window on
    N earlier days (`same_hour`)."""
    now_ms = int(now * 1000)
    w = int(rule.window_s * 1000)
    if rule.baseline == "previous":
        return tuple(Window(k, now_ms - (k + 1) * w, now_ms - k * w) for k in range(rule.baseline_windows + 1))
    day = 86_400_000
    return (Window(0, now_ms - w, now_ms),) + tuple(
        Window(d, now_ms - d * day - w, now_ms - d * day) for d in range(1, rule.baseline_windows + 1)
    )


def usable_windows(rule: Rule, now: float, first_ms: int | None) -> tuple[int, ...]:
    """The baseline windows that count: those ending after the store's first request (a new gateway has no
    history, not a zero one)."""
    return tuple(w.k for w in spend_windows(rule, now)[1:] if first_ms is not None and w.end_ms > first_ms)


def _by_window(rows: Iterable[SpendRow]) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for r in rows:
        out[(r.window, r.value)] = out.get((r.window, r.value), 0) + r.pico
    return out


def spend_spike(rule: Rule, now: float, first_ms: int | None, rows: Iterable[SpendRow]) -> list[Finding]:
    """One finding per value of `rule.by` (or one for the rule), from the spend of each window split by it;
    `first_ms` is when the store's first request was made. Top contributors are added by `with_contributors`."""
    usable = usable_windows(rule, now, first_ms)
    spend = _by_window(rows)
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
        findings.append(Finding(scope, firing, current / PICO_PER_USD, rule.min_usd, msg, details))
    return findings


def contributor_dims(rule: Rule) -> tuple[str, ...]:
    """The dimensions a firing spike's growth is broken down by."""
    return tuple(d for d in CONTRIBUTOR_DIMS if d != rule.by)


def contributor_where(rule: Rule, f: Finding) -> tuple[tuple[str, str], ...]:
    """The filter of a finding's own spend: the rule's `where`, and the value of `by` it is about."""
    return (*rule.where, (rule.by, f.scope.partition("=")[2])) if rule.by else rule.where


def contributors(usable: Iterable[int], by_dim: Mapping[str, Iterable[SpendRow]]) -> list[dict[str, Any]]:
    """Which users, features, models and keys grew the most against their own baseline (five at most)."""
    usable = tuple(usable)
    grown: list[tuple[float, str, str, int, float]] = []  # (growth, dimension, value, current, baseline) in pico
    for dim, rows in by_dim.items():
        spend = _by_window(rows)
        for v in {v for k, v in spend if k == 0}:
            base = sum(spend.get((k, v), 0) for k in usable) / len(usable) if usable else 0
            growth = spend[(0, v)] - base
            if growth > 0:
                grown.append((growth, dim, v, spend[(0, v)], base))
    grown.sort(key=lambda c: -c[0])
    out = [
        {
            "dimension": dim,
            "value": v,
            "current_usd": current / PICO_PER_USD,
            "baseline_usd": base / PICO_PER_USD,
            "growth_pico": growth,
            "growth_usd": growth / PICO_PER_USD,
        }
        for growth, dim, v, current, base in grown
    ]
    return out[:5]


def with_contributors(f: Finding, top: list[dict[str, Any]]) -> Finding:
    """The firing finding with its top contributors in the details, and the first named in the message."""
    msg = f.message
    if top:
        t = top[0]
        msg += f"; top contributor: {t['dimension']} {t['value'] or '(none)'} (+{_usd(t['growth_pico'])})"
    return replace(f, message=msg, details={**f.details, "top_contributors": top})


# --- latency SLA --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values (q in (0, 1])."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def latency_sla(rule: Rule, samples: Iterable[LatencySample]) -> list[Finding]:
    """One finding per target, from the successful attempts in the window."""
    by_target: dict[str, list[float]] = {}
    ttft = rule.metric.startswith("ttft_")
    for s in samples:
        v = s.ttft_us if ttft else s.duration_us
        if v is not None:
            by_target.setdefault(s.target, []).append(v / 1000)
    q = float(rule.metric.rsplit("p", 1)[1]) / 100
    findings = []
    for target, values in sorted(by_target.items()):
        values.sort()
        n = len(values)
        p = percentile(values, q)
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


def error_rate(rule: Rule, outcomes: Iterable[OutcomeCount]) -> list[Finding]:
    """The provider's error rate (percent): its failures (`relaycast.errors.PROVIDER_FAILURES`) over its attempts in
    the window. A refusal the request caused (content policy, context length, a bad request...) is an attempt the
    provider answered correctly: it counts among the attempts, never among the errors, and is shown apart
    (`details.client_refusals`). Outcomes that say nothing about the provider (cancelled, a lost hedge) are left
    out of both sides. The same rate as `relaycast routes status`, the analytics API and the dashboard."""
    attempts = errors = refusals = 0
    by_class: dict[str, int] = {}
    refused: dict[str, int] = {}
    for o in outcomes:
        cls, n = o.error_class, o.count
        if cls is not None and cls in NOT_ERRORS:
            continue
        attempts += n
        if cls is None:
            continue
        if cls in PROVIDER_FAILURES:
            by_class[cls] = by_class.get(cls, 0) + n
            if rule.error_class is None or cls == rule.error_class:
                errors += n
        elif cls in CLIENT_REFUSALS:
            refused[cls] = refused.get(cls, 0) + n
            refusals += n
    rate = errors / attempts * 100 if attempts else 0.0
    firing = attempts >= rule.min_requests and errors * 100 > rule.threshold_pct * attempts  # 7 of 100 is not > 7%
    what = f"{rule.error_class} errors" if rule.error_class else "provider failures"
    msg = (
        f"{rule.provider}: {what} {rate:.1f}% of {attempts} attempts over {_dur(rule.window_s)} "
        f"(threshold {rule.threshold_pct:g}%)"
    )
    if refusals:
        msg += f"; {refusals} client-caused refusals not counted as errors"
    details: dict[str, Any] = {"attempts": attempts, "errors": errors, "by_class": by_class}
    if refusals:
        details["client_refusals"] = refusals
        details["client_refusals_by_class"] = refused
    return [
        Finding(
            f"provider={rule.provider}",
            firing,
            round(rate, 2),
            rule.threshold_pct,
            msg,
            details,
            ("*", f"provider:{rule.provider}"),
        )
    ]


# --- budget -------------------------------------------------------------------------------------


def budget_span(rule: Rule, now: float) -> tuple[int, int]:
    """The hours a budget counts, `[start, until]` in unix seconds: the current UTC day or month so far."""
    return period_start(now, rule.period), int(now)


def budget(rule: Rule, now: float, total: UsageTotal) -> list[Finding]:
    """The scope's spend this UTC day or month against its limit."""
    assert rule.scope is not None
    dim, value = rule.scope
    start = period_start(now, rule.period)
    limit = round(rule.limit_usd * PICO_PER_USD)  # whole pico-dollars: $0.27 is 270_000_000_000, not a hair over
    firing = total.pico > limit
    msg = f"{dim} {value}: {_usd(total.pico)} spent this {rule.period} (UTC), budget {_usd(limit)}"
    if total.unpriced:
        msg += f"; {total.unpriced} unpriced requests not counted"
    return [
        Finding(
            f"{dim}={value}",
            firing,
            total.pico / PICO_PER_USD,
            rule.limit_usd,
            msg,
            {"period": rule.period, "period_start": start, "unpriced_requests": total.unpriced},
        )
    ]
