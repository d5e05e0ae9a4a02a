"""Deadlines without a loop timer each (`relaycast.deadlines`) and a stream's idle bound
(`providers.http.UpstreamEvents`) behave as `asyncio.timeout` does: the block raises TimeoutError (the idle bound:
Timeout, phase `idle`) once its time has passed (never before), a cancellation from elsewhere stays a cancellation,
nested deadlines each answer for their own, and nothing is left pending. Each test runs on its own event loop."""

from __future__ import annotations

import asyncio
import functools

import pytest

from relaycast import errors
from relaycast.deadlines import Deadlines
from relaycast.providers.http import UpstreamEvents
from relaycast.sse import Event


def aio(fn):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    def run(*args, **kw):  # type: ignore[no-untyped-def]
        return asyncio.run(fn(*args, **kw))

    return run


@aio
async def test_a_deadline_expires_after_its_time_and_raises_timeout_error() -> None:
    d = Deadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        with d.after(0.02) as dl:
            await asyncio.sleep(10)
    assert dl.expired and loop.time() >= dl.when, "never before its time"
    assert d.pending() == 0
    await asyncio.sleep(0)  # no cancellation is left over for the task
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


@aio
async def test_a_block_that_ends_in_time_leaves_nothing_behind() -> None:
    d = Deadlines()
    for _ in range(1000):
        with d.after(60) as dl:
            await asyncio.sleep(0)
        assert not dl.expired
    assert d.pending() == 0
    await asyncio.sleep(0)


@aio
async def test_nested_deadlines_each_answer_for_their_own() -> None:
    d = Deadlines()
    with d.after(60) as outer:
        with pytest.raises(TimeoutError):
            with d.after(0.01):
                await asyncio.sleep(10)
        await asyncio.sleep(0.001)  # the outer block goes on
    assert not outer.expired
    with pytest.raises(TimeoutError):
        with d.after(0.01) as outer:
            with d.after(60) as inner:
                await asyncio.sleep(10)
    assert outer.expired and not inner.expired and d.pending() == 0


@aio
async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    d = Deadlines()

    async def work() -> None:
        with d.after(60):
            await asyncio.sleep(10)

    task = asyncio.create_task(work())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert d.pending() == 0


@aio
async def test_a_deadline_already_past_expires_at_the_next_wait() -> None:
    d = Deadlines()
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        with d.at(loop.time() - 1):
            await asyncio.sleep(10)


@aio
async def test_many_tasks_under_deadlines_of_several_lengths_expire_exactly_the_late_ones() -> None:
    d = Deadlines()
    loop = asyncio.get_running_loop()
    outcomes: dict[int, str] = {}

    async def one(i: int) -> None:
        limit, work = (0.02, 10.0) if i % 3 == 0 else (30.0, 0.001 * (i % 7))
        try:
            with d.after(limit) as dl:
                await asyncio.sleep(work)
            outcomes[i] = "done"
        except TimeoutError:
            assert loop.time() >= dl.when
            outcomes[i] = "timeout"

    await asyncio.gather(*(one(i) for i in range(300)))
    assert all(v == ("timeout" if i % 3 == 0 else "done") for i, v in outcomes.items())
    assert d.pending() == 0


def test_one_deadlines_object_serves_one_loop_after_another() -> None:
    d = Deadlines()

    async def main() -> None:
        with pytest.raises(TimeoutError):
            with d.after(0.01):
                await asyncio.sleep(10)
        with d.after(60):
            await asyncio.sleep(0)

    asyncio.run(main())
    asyncio.run(main())


# --- a stream's idle bound -------------------------------------------------------------------------


class Reads:
    """Stands in for an upstream answer: `read` waits for what the test puts."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def read(self) -> bytes:
        return await self.queue.get()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def put(self, data: bytes) -> None:
        self.queue.put_nowait(b"data: " + data + b"\n\n")


def idle_events(reads: Reads, idle_s: float = 0.02) -> UpstreamEvents:
    return UpstreamEvents(reads, idle_s, "up/m")  # type: ignore[arg-type]


@aio
async def test_time_between_reads_is_not_idle_time() -> None:
    reads = Reads()
    up = idle_events(reads)
    for i in range(4):
        reads.put(b"x%d" % i)
        assert await up.next() == [Event(None, b"x%d" % i)]
        await asyncio.sleep(0.05)  # the client takes its time: longer than idle_s, but no read is waiting
    up.close()


@aio
async def test_a_read_that_waits_past_the_idle_bound_raises_timeout() -> None:
    reads = Reads()
    up = idle_events(reads)
    reads.put(b"first")
    assert await up.next() == [Event(None, b"first")]
    with pytest.raises(errors.Timeout) as e:
        await up.next()
    assert e.value.phase == "idle" and "sent nothing for 0.02s" in str(e.value)
    await asyncio.sleep(0)
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    up.close()


@aio
async def test_the_idle_bound_cancels_whichever_task_is_reading_and_nothing_else() -> None:
    """A hedged stream is opened (read up to its first token) by one task and relayed by another."""
    reads = Reads()
    up = idle_events(reads)

    async def first_reader() -> list[Event] | None:
        return await up.next()

    reads.put(b"token")
    assert await asyncio.create_task(first_reader()) == [Event(None, b"token")]
    await asyncio.sleep(0.05)  # the first task has ended; the timer must not touch this one for it
    reads.put(b"more")
    assert await up.next() == [Event(None, b"more")]

    async def outer_cancel() -> None:
        await up.next()

    task = asyncio.create_task(outer_cancel())
    await asyncio.sleep(0.005)
    task.cancel()  # the client left: a cancellation, not a timeout
    with pytest.raises(asyncio.CancelledError):
        await task
    up.close()


@aio
async def test_long_deadlines_of_short_requests_keep_no_more_than_the_live_buckets() -> None:
    # A 600 s total for requests that take milliseconds: the ticks of emptied buckets must not pile up until the
    # timer reaches them, minutes later (that was a worker's memory rising under steady traffic).
    deadlines = Deadlines()

    async def request() -> None:
        with deadlines.after(600.0):
            await asyncio.sleep(0.001)

    for _ in range(200):
        await asyncio.gather(*(request() for _ in range(3)))
        await asyncio.sleep(0.006)  # a new 5 ms bucket for every round
    assert deadlines.pending() == 0
    assert len(deadlines._ticks) <= 64 + 2 * len(deadlines._buckets)
