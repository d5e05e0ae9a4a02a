"""What the serving path computes once instead of per request, checked where it could go wrong: the UTC day and
month a budget counts in (cached per period, exact at the boundary, month and year ends and a leap day included,
and with a clock that goes back), reservation and request ids (unique), and the prompt's token estimate (made only
when a limit needs it, and still there for those that do)."""

from __future__ import annotations

import asyncio
import calendar
import os
import random
import re
import time
from datetime import UTC, datetime

import pytest

from relaycast.asgi import ID_BATCH, RequestIds
from relaycast.costs.catalog import Catalog
from relaycast.costs.pricer import Pricer
from relaycast.keys.policy import KeyPolicy, Limits
from relaycast.limits.admission import Admission
from relaycast.limits.base import Check, Periods, period_bounds, period_span, period_start
from relaycast.limits.memory import MemoryLimiter
from relaycast.limits.settings import LimitsConfig
from relaycast.records import Attribution
from relaycast.routing.plan import Plan
from relaycast.routing.settings import Route
from relaycast.routing.target import Target


def utc(*args: int) -> float:
    return float(calendar.timegm(datetime(*args, tzinfo=UTC).timetuple()))  # type: ignore[misc]


def by_datetime(now: float, period: str) -> tuple[str, float]:
    """The period id and what is left of it, from datetime alone: what the cache must always agree with."""
    t = datetime.fromtimestamp(int(now // 1), UTC)
    if period == "day":
        nxt = datetime(t.year, t.month, t.day, tzinfo=UTC).timestamp() + 86400
        return t.strftime("%Y-%m-%d"), nxt - now
    y, m = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.strftime("%Y-%m"), datetime(y, m, 1, tzinfo=UTC).timestamp() - now


BOUNDARIES = [
    utc(2025, 11, 2),  # a day
    utc(2025, 12, 1),  # a month
    utc(2026, 1, 1),  # a year
    utc(2024, 2, 29),  # a leap day begins
    utc(2024, 3, 1),  # and ends, with its month
    utc(2025, 3, 1),  # February of a common year ends
]


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("period", ["day", "month"])
def test_the_cached_period_is_exact_on_both_sides_of_a_boundary(boundary: float, period: str) -> None:
    periods = Periods()
    # Walking forward through the boundary, with the cache warm from the instant before.
    for now in (boundary - 3600, boundary - 1, boundary - 0.001, boundary, boundary + 0.001, boundary + 1):
        assert periods.bounds(now, period) == by_datetime(now, period) == period_bounds(now, period), now
    if period == "day" or datetime.fromtimestamp(boundary, UTC).day == 1:  # a boundary of this period
        before, after = periods.bounds(boundary - 1e-6, period), periods.bounds(boundary, period)
        assert before[0] != after[0], "the first instant of a period counts in the new one"
        assert before[1] == pytest.approx(1e-6, abs=1e-7), "the old period ends exactly at the boundary"


def test_the_first_instant_of_a_period_counts_in_the_new_one_and_a_clock_that_goes_back_is_answered() -> None:
    periods = Periods()
    new_year = utc(2026, 1, 1)
    assert periods.bounds(new_year, "month") == ("2026-01", 31 * 86400)
    assert periods.bounds(new_year, "day") == ("2026-01-01", 86400)
    assert periods.bounds(new_year - 0.5, "month") == ("2025-12", 0.5)  # the clock stepped back
    assert periods.bounds(new_year - 0.5, "day") == ("2025-12-31", 0.5)
    assert periods.bounds(new_year, "day") == ("2026-01-01", 86400)


def test_random_instants_agree_with_datetime_whatever_order_they_come_in() -> None:
    rng = random.Random(7)
    periods = Periods()
    edges = [utc(y, m, 1) for y in (2024, 2025, 2026) for m in range(1, 13)]
    instants = [rng.uniform(utc(2024, 1, 1), utc(2027, 1, 1)) for _ in range(2000)]
    instants += [e + d for e in edges for d in (-1.5, -0.25, 0.0, 0.25)]
    instants.sort()  # a running clock: the cache is reused, and renewed at each boundary
    instants += rng.sample(instants, 500)  # then jumps, back and forth
    for now in instants:
        for period in ("day", "month"):
            assert periods.bounds(now, period) == by_datetime(now, period), (now, period)


def test_period_start_is_the_span_start() -> None:
    now = utc(2025, 12, 31, 23, 59, 59) + 0.9999
    assert period_start(now, "day") == utc(2025, 12, 31) and period_start(now, "month") == utc(2025, 12, 1)
    assert period_span(now, "month") == ("2025-12", utc(2025, 12, 1), utc(2026, 1, 1))


# --- ids -------------------------------------------------------------------------------------------


def test_request_ids_are_unique_random_and_in_time_order() -> None:
    ids = RequestIds()
    before_ms = time.time_ns() // 1_000_000
    made = [ids() for _ in range(20 * ID_BATCH + 7)]  # across many batches
    after_ms = time.time_ns() // 1_000_000
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"req_[0-9a-f]{36}", i) for i in made)
    # the time in milliseconds first: ids sort by when they were made (the store's index grows at its end)
    assert all(before_ms <= int(i[4:16], 16) <= after_ms for i in made)
    assert [i[4:16] for i in made] == sorted(i[4:16] for i in made)
    assert len({i[16:] for i in made}) == len(made)  # 96 random bits each
    assert len({RequestIds()()[16:] for _ in range(100)}) == 100  # another gateway's ids are its own


def test_a_forked_child_draws_request_ids_of_its_own() -> None:
    ids = RequestIds()
    ids()  # a batch is drawn before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, ids().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    os.close(write)
    assert child.startswith("req_") and child != ids()


def test_reservation_ids_are_unique_in_a_limiter() -> None:
    """The host's limiter keeps reservations by id (`limits.host.HostLimits`)."""

    async def main() -> set[str]:
        lim = MemoryLimiter()
        checks = (Check("key", "k", Limits(rpm=100_000)),)
        return {(await lim.admit(checks, 0, 0, time.time())).id for _ in range(5000)}

    assert len(asyncio.run(main())) == 5000


# --- the prompt's token estimate -----------------------------------------------------------------


MINI = Target("openai", "gpt-4o-mini")
PLAN = Plan(Route(name="r", targets=(MINI.name,)), (MINI,))


@pytest.mark.parametrize(
    ("limits", "counted"),
    [
        (Limits(rpm=10), False),
        (None, False),
        (Limits(tpm=100_000), True),
        (Limits(budget_day_usd=1.0), True),
        (Limits(rpm=10, budget_month_usd=1.0), True),
    ],
)
def test_the_prompt_is_counted_only_when_a_limit_needs_it(limits: Limits | None, counted: bool) -> None:
    calls: list[int] = []

    def count() -> int:
        calls.append(1)
        return 42

    async def main() -> None:
        adm = Admission(
            LimitsConfig(), MemoryLimiter(), Pricer(Catalog.packaged(), {"openai": "openai"}), time.time, lambda a: None
        )
        key = KeyPolicy(name="k", limits=limits) if limits is not None else None
        res = await adm.admit(key, Attribution(), PLAN, {"max_tokens": 8}, count)
        if counted:
            assert res is not None and res.est_tokens == 42 + 8  # the estimate is in the reservation
        else:
            assert res is None or res.est_tokens == 0

    asyncio.run(main())
    assert len(calls) == (1 if counted else 0)


def test_attempts_without_usage_are_estimated_with_the_prompt_counted_once() -> None:
    """Two streams that produced output without a usage report (a lost hedge, then a cut stream): both are billed
    on an estimate, with the same prompt count; attempts that reported usage cost no counting at all."""
    from relaycast.costs.compute import Coster
    from relaycast.costs.estimate import TokenEstimator
    from relaycast.records import Attempt, Usage

    counted: list[str] = []
    coster = Coster(
        Pricer(Catalog.packaged(), {"openai": "openai"}), TokenEstimator(lambda s: counted.append(s) or len(s))
    )
    messages = [{"role": "user", "content": "hello there"}]
    lost = Attempt("openai/gpt-4o-mini", "openai", "gpt-4o-mini", 0, 5, ttft_ns=2, error_class="hedge_lost")
    cut = Attempt("openai/gpt-4o-mini", "openai", "gpt-4o-mini", 0, 9, ttft_ns=3, error_class="stream_cut")
    a, b = coster.chat([lost, cut], messages, "partial answer")
    assert a.cost_source == b.cost_source == "estimated"
    assert a.usage is not None and b.usage is not None and a.usage.prompt_tokens == b.usage.prompt_tokens > 0
    assert counted.count("hello there") == 1
    counted.clear()
    ok = Attempt("openai/gpt-4o-mini", "openai", "gpt-4o-mini", 0, 9, usage=Usage(5, 7))
    (c,) = coster.chat([ok], messages, "full answer")
    assert c.cost_source == "computed" and counted == []
