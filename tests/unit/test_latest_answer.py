"""A view that must answer in time (`server.latest.LatestAnswer`, what `/metrics` uses): the first answer is waited
for; later, a question slower than `wait_s` is answered with the last answer and its age while it goes on, and
what it brings stands in for the next slow one; one question is asked at a time; an error is raised, cached answer or
not; an answer older than `max_age_s` is never served. Real questions on real event loops: an `asyncio.Event` the
test sets stands for the telemetry process answering."""

from __future__ import annotations

import asyncio
import time

import pytest

from relaycast.server.latest import LatestAnswer
from tests.unit.test_deadlines import aio


class Teller:
    """Answers questions when the test lets it (`answer`), or at once when `quick`; counts the questions asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.quick = True
        self.error: Exception | None = None
        self.go = asyncio.Event()

    async def ask(self) -> str:
        self.asked += 1
        n = self.asked
        if not self.quick:
            await self.go.wait()
        if self.error is not None:
            raise self.error
        return f"view {n}"


@aio
async def test_a_slow_answer_is_stood_in_for_by_the_last_one_with_its_age_and_served_once_it_comes() -> None:
    latest: LatestAnswer[str] = LatestAnswer(wait_s=0.05, max_age_s=60.0)
    t = Teller()
    assert await latest.get(t.ask) == ("view 1", 0.0)
    t.quick = False
    began = time.monotonic()
    view, age = await latest.get(t.ask)
    assert view == "view 1" and 0.05 <= age <= time.monotonic() - began + 0.01
    view, age = await latest.get(t.ask)  # the same question goes on: no second one is asked
    assert (view, t.asked) == ("view 1", 2) and age > 0.0
    t.go.set()
    await asyncio.sleep(0.01)  # the slow question is answered
    t.go.clear()
    view, age = await latest.get(t.ask)  # the next question is slow too: what the last one brought stands in
    assert (view, t.asked) == ("view 2", 3) and age >= 0.05
    t.go.set()
    t.quick = True
    await asyncio.sleep(0.01)
    assert await latest.get(t.ask) == ("view 4", 0.0)  # quick again: a fresh answer every time


@aio
async def test_the_first_answer_is_waited_for_however_slow() -> None:
    latest: LatestAnswer[str] = LatestAnswer(wait_s=0.01, max_age_s=60.0)
    t = Teller()
    t.quick = False
    asyncio.get_running_loop().call_later(0.1, t.go.set)
    assert await latest.get(t.ask) == ("view 1", 0.0)


@aio
async def test_an_error_is_raised_even_with_an_answer_kept() -> None:
    latest: LatestAnswer[str] = LatestAnswer(wait_s=0.05, max_age_s=60.0)
    t = Teller()
    await latest.get(t.ask)
    t.error = RuntimeError("the telemetry process is restarting")
    with pytest.raises(RuntimeError, match="restarting"):
        await latest.get(t.ask)
    t.error = None
    assert await latest.get(t.ask) == ("view 3", 0.0)  # and the next question is asked again


@aio
async def test_an_answer_past_its_max_age_is_not_served() -> None:
    latest: LatestAnswer[str] = LatestAnswer(wait_s=0.01, max_age_s=0.05)
    t = Teller()
    await latest.get(t.ask)
    await asyncio.sleep(0.08)
    t.quick = False
    asyncio.get_running_loop().call_later(0.1, t.go.set)
    assert await latest.get(t.ask) == ("view 2", 0.0)  # waited for, not the kept one


@aio
async def test_a_caller_that_leaves_does_not_cancel_the_question_the_next_one_waits_for() -> None:
    latest: LatestAnswer[str] = LatestAnswer(wait_s=0.05, max_age_s=60.0)
    t = Teller()
    t.quick = False
    first = asyncio.create_task(latest.get(t.ask))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    t.go.set()
    assert await latest.get(t.ask) == ("view 1", 0.0)
    assert t.asked == 1
