"""Properties of the monitor rules, which are pure functions over the rows the store returns: a spend spike never
fires below its floor or without a baseline, and more spend now never stops it firing; an error rate is a
percentage that leaves out what the client caused; a latency SLA fires exactly when the percentile passes the
threshold; a budget fires exactly when the period's spend passes its limit."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import example, given
from hypothesis import strategies as st

from relaycast.costs.money import PICO_PER_USD
from relaycast.monitors import rules
from relaycast.monitors.settings import Rule
from relaycast.store.monitor_queries import LatencySample, OutcomeCount, SpendRow, UsageTotal

NOW = 1_790_000_000.0
USERS = ("", "alice", "bob")
CLASSES = ("timeout", "rate_limit", "upstream_5xx", "connection")
CLIENT_CAUSED = ("client_cancelled", "hedge_lost")


@st.composite
def spike_rules(draw: st.DrawFn) -> Rule:
    return Rule(
        name="spike",
        kind="spend_spike",
        window_s=draw(st.sampled_from((60.0, 3600.0))),
        baseline=draw(st.sampled_from(("previous", "same_hour"))),
        baseline_windows=draw(st.integers(1, 6)),
        threshold_pct=draw(st.integers(0, 500)),
        min_usd=draw(st.integers(0, 1000)) / 100,
        by=draw(st.sampled_from((None, "user"))),
    )


def spend_rows(windows: int) -> st.SearchStrategy[list[SpendRow]]:
    return st.lists(
        st.builds(
            SpendRow,
            st.integers(0, windows),
            st.sampled_from(USERS),
            st.integers(0, 20 * PICO_PER_USD),
        ),
        max_size=30,
    )


@st.composite
def spikes(draw: st.DrawFn) -> tuple[Rule, int | None, list[SpendRow]]:
    rule = draw(spike_rules())
    rows = draw(spend_rows(rule.baseline_windows))
    if rule.by is None:
        rows = [SpendRow(r.window, "", r.pico) for r in rows]
    first_ms = draw(st.one_of(st.none(), st.integers(0, int(NOW * 1000))))
    return rule, first_ms, rows


def _current(rows: list[SpendRow], scope: str) -> int:
    value = scope.partition("=")[2]
    return sum(r.pico for r in rows if r.window == 0 and r.value == value)


@given(spikes())
def test_a_spend_spike_never_fires_below_its_floor_nor_without_a_baseline(case):
    rule, first_ms, rows = case
    for f in rules.spend_spike(rule, NOW, first_ms, rows):
        if _current(rows, f.scope) < rule.min_usd * PICO_PER_USD or first_ms is None:
            assert not f.firing
        if f.firing:
            assert f.value is not None and f.value > 0 and f.details["baseline_windows"] >= 1


@given(spikes(), st.integers(0, 50 * PICO_PER_USD))
def test_more_spend_in_the_current_window_never_stops_a_spike_firing(case, more):
    rule, first_ms, rows = case
    before = {f.scope: f.firing for f in rules.spend_spike(rule, NOW, first_ms, rows)}
    for scope, firing in before.items():
        grown = [*rows, SpendRow(0, scope.partition("=")[2], more)]
        after = {f.scope: f.firing for f in rules.spend_spike(rule, NOW, first_ms, grown)}
        assert after[scope] or not firing


@given(spikes())
def test_a_spike_finding_reports_the_current_windows_spend_for_its_scope(case):
    rule, first_ms, rows = case
    findings = rules.spend_spike(rule, NOW, first_ms, rows)
    if rule.by is None:
        assert [f.scope for f in findings] == [""]
    else:
        assert {f.scope for f in findings} == {f"user={r.value}" for r in rows}
    for f in findings:
        assert f.value == _current(rows, f.scope) / PICO_PER_USD


@st.composite
def error_rules(draw: st.DrawFn) -> Rule:
    return Rule(
        name="errors",
        kind="error_rate",
        window_s=300.0,
        provider="openai",
        error_class=draw(st.sampled_from((None, *CLASSES))),
        threshold_pct=draw(st.integers(0, 100)),
        min_requests=draw(st.integers(0, 50)),
    )


def outcomes(classes: tuple[str | None, ...]) -> st.SearchStrategy[list[OutcomeCount]]:
    return st.lists(st.builds(OutcomeCount, st.sampled_from(classes), st.integers(0, 1000)), max_size=8)


@given(error_rules(), outcomes((None, *CLASSES)), outcomes(CLIENT_CAUSED))
@example(  # exactly at the threshold, where 7 / 100 * 100 is 7.000000000000001 in floating point
    Rule(name="e", kind="error_rate", provider="openai", threshold_pct=7, min_requests=1),
    [OutcomeCount(None, 93), OutcomeCount("timeout", 7)],
    [],
)
def test_an_error_rate_is_a_percentage_that_leaves_out_what_the_client_caused(rule, counts, client_caused):
    (f,) = rules.error_rate(rule, counts)
    assert f.value is not None and 0.0 <= f.value <= 100.0
    attempts = sum(o.count for o in counts)
    errors = sum(o.count for o in counts if o.error_class is not None and rule.error_class in (None, o.error_class))
    assert f.details["attempts"] == attempts and f.details["errors"] == errors
    assert f.firing == (attempts >= rule.min_requests and attempts > 0 and errors * 100 > rule.threshold_pct * attempts)
    (g,) = rules.error_rate(rule, [*counts, *client_caused])
    assert (g.firing, g.value, g.details, g.message) == (f.firing, f.value, f.details, f.message)


@st.composite
def latencies(draw: st.DrawFn) -> tuple[Rule, list[LatencySample]]:
    rule = Rule(
        name="sla",
        kind="latency_sla",
        window_s=300.0,
        route="fast",
        metric=draw(st.sampled_from(("p50", "p90", "p99", "ttft_p50", "ttft_p90", "ttft_p99"))),
        threshold_ms=draw(st.integers(1, 3000)),
        min_requests=draw(st.integers(0, 20)),
    )
    samples = draw(
        st.lists(
            st.builds(
                LatencySample,
                st.sampled_from(("openai/gpt-4o", "claude/haiku")),
                st.integers(0, 5_000_000),
                st.one_of(st.none(), st.integers(0, 5_000_000)),
            ),
            max_size=60,
        )
    )
    return rule, samples


@given(latencies())
def test_a_latency_sla_fires_exactly_when_the_percentile_passes_the_threshold(case):
    rule, samples = case
    ttft = rule.metric.startswith("ttft_")
    findings = {f.scope: f for f in rules.latency_sla(rule, samples)}
    by_target: dict[str, list[int]] = {}
    for s in samples:
        v = s.ttft_us if ttft else s.duration_us
        if v is not None:
            by_target.setdefault(s.target, []).append(v)
    assert set(findings) == {f"target={t}" for t in by_target}
    pct = int(rule.metric.rsplit("p", 1)[1])
    for target, values in by_target.items():
        n = len(values)
        rank = math.ceil(Fraction(pct * n, 100))  # the nearest rank, exactly
        # The value at that rank is over the threshold exactly when at least n - rank + 1 values are.
        over = sum(1 for v in values if v > rule.threshold_ms * 1000)
        f = findings[f"target={target}"]
        assert f.firing == (n >= rule.min_requests and over >= n - rank + 1)
        assert f.demote == ("fast", target) and f.details["requests"] == n


@given(
    st.sampled_from(("day", "month")),
    st.integers(0, 100_000),
    st.integers(0, 2000 * PICO_PER_USD),
    st.integers(0, 5),
    st.floats(0, 5e9),
)
@example("day", 201, 201 * 10**10, 0, NOW)  # exactly the limit, where 2.01 * 10**12 falls just short of it
@example("day", 1, 10**10 + 1, 0, NOW)
def test_a_budget_fires_exactly_when_the_periods_spend_passes_its_limit(period, cents, pico, unpriced, now):
    rule = Rule(name="b", kind="budget", scope=("key", "team-a"), period=period, limit_usd=cents / 100)
    (f,) = rules.budget(rule, now, UsageTotal(pico, unpriced))
    assert f.firing == (pico * 100 > cents * PICO_PER_USD)
    start, until = rules.budget_span(rule, now)
    assert f.details["period_start"] == start <= until == int(now) and start > until - 31 * 86400
    assert ("unpriced" in f.message) == (unpriced > 0)
