"""The out-of-band machine (relaycast.worker.BatchWorker) on a fake clock: when it exports, what it drops and
counts, how it retries later, and what it hands back at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.worker import BatchPolicy, BatchWorker, Overflow, RetryLater
from tests.sample_records import ManualTime, settle


class Recorder:
    """An export that records its batches; it fails, or asks to retry later, as told."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.plan: list[BaseException | None] = []  # the outcome of each next export; then success
        self.gate: asyncio.Event | None = None  # when set up, exports wait for it

    async def __call__(self, batch: list[Any]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        outcome = self.plan.pop(0) if self.plan else None
        if outcome is not None:
            raise outcome
        self.batches.append(batch)

    @property
    def items(self) -> list[Any]:
        return [x for b in self.batches for x in b]


def make(
    time: ManualTime,
    export: Callable[[list[Any]], Awaitable[None]],
    *,
    size: Callable[[Any], int] | None = None,
    idle: Callable[[], Awaitable[None]] | None = None,
    **policy: Any,
) -> BatchWorker[Any]:
    p = BatchPolicy(**{"max_queue": 100, "max_batch": 10, "interval_s": 60.0, **policy})
    return BatchWorker("test", export, p, size=size, idle=idle, clock=time.clock, sleep=time.sleep)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_a_batch_is_exported_as_soon_as_it_reaches_the_count() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, max_batch=3)
        w.start()
        w.put(1)
        w.put(2)
        await settle()
        assert rec.batches == [] and w.queued == 2, "two of three: wait for the interval"
        w.put(3)
        await settle()
        assert rec.batches == [[1, 2, 3]] and w.sent == 3 and w.batches == 1
        await w.stop(t.now + 1)

    run(go())


def test_a_batch_is_exported_as_soon_as_its_bytes_reach_the_limit() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, size=len, max_batch_bytes=10)
        w.start()
        w.put(b"aaaa")
        w.put(b"bbbb")
        await settle()
        assert rec.batches == [] and w.queued_bytes == 8
        w.put(b"cc")
        await settle()
        assert rec.batches == [[b"aaaa", b"bbbb", b"cc"]] and w.queued_bytes == 0
        await w.stop(t.now + 1)

    run(go())


def test_no_batch_passes_the_byte_limit_and_an_oversized_item_goes_alone() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, size=len, max_batch_bytes=10)
        for item in (b"1234", b"5678", b"9abc", b"x" * 25, b"de"):
            w.put(item)
        await w.flush()
        assert rec.batches == [[b"1234", b"5678"], [b"9abc"], [b"x" * 25], [b"de"]]

    run(go())


def test_what_is_queued_is_exported_when_the_interval_passes() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, interval_s=5.0)
        w.start()
        await settle()
        w.put("a")
        await t.advance(4.9)
        assert rec.batches == []
        await t.advance(0.1)
        assert rec.batches == [["a"]]
        await w.stop(t.now + 1)

    run(go())


def test_a_full_queue_drops_the_oldest_and_counts_the_drop() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, max_queue=3)
        assert all(w.put(i) for i in range(5)), "drop-oldest always takes the new item"
        assert w.queued == 3 and w.dropped == {"queue_full": 2}
        await w.flush()
        assert rec.items == [2, 3, 4]

    run(go())


def test_a_refusing_queue_keeps_the_oldest_and_counts_the_refused() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, max_queue=3, overflow=Overflow.REFUSE)
        assert [w.put(i) for i in range(5)] == [True, True, True, False, False]
        assert w.dropped == {"queue_full": 2}
        await w.flush()
        assert rec.items == [0, 1, 2]

    run(go())


def test_put_never_raises_into_the_caller_and_counts_what_it_could_not_take() -> None:
    def bad_size(item: Any) -> int:
        raise ValueError("no size")

    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, size=bad_size)
        assert w.put("x") is False and w.dropped == {"size_error": 1} and w.queued == 0

    run(go())


def test_a_failed_export_is_counted_and_reported_and_the_worker_goes_on() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        seen: list[BaseException] = []
        p = BatchPolicy(max_queue=100, max_batch=2, interval_s=60.0)
        w = BatchWorker("test", rec, p, on_error=seen.append, clock=t.clock, sleep=t.sleep)
        rec.plan = [RuntimeError("boom")]
        w.start()
        for i in range(4):
            w.put(i)
        await settle()
        assert rec.batches == [[2, 3]] and w.failed == 2 and w.sent == 2
        assert [str(e) for e in seen] == ["boom"] and w.last_error == "RuntimeError: boom"
        await w.stop(t.now + 1)

    run(go())


def test_retry_later_puts_the_batch_back_first_and_tries_it_again_after_the_delay() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, max_batch=2)
        rec.plan = [RetryLater(5.0)]
        w.start()
        w.put(0)
        w.put(1)
        await settle()
        assert rec.batches == [] and w.queued == 2 and w.failed == 0
        w.put(2)
        await t.advance(4.0)
        assert rec.batches == [], "not before the delay, even with a full batch waiting"
        await t.advance(1.0)
        assert rec.items == [0, 1, 2]
        await w.stop(t.now + 1)

    run(go())


def test_retry_later_with_a_full_queue_drops_the_oldest_of_the_batch_and_counts_them() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        rec.gate = asyncio.Event()
        rec.plan = [RetryLater(1.0)]
        w = make(t, rec, max_queue=3, max_batch=2)
        w.start()
        w.put(0)
        w.put(1)
        await settle()  # [0, 1] in flight, waiting at the gate
        for i in range(2, 5):
            w.put(i)
        rec.gate.set()
        await settle()
        assert w.queued == 3 and w.dropped == {"queue_full": 2}
        await t.advance(1.0)
        assert rec.items == [2, 3, 4]
        await w.stop(t.now + 1)

    run(go())


def test_stop_exports_what_is_queued_within_the_deadline() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec, max_batch=4)
        w.start()
        for i in range(6):
            w.put(i)
        assert await w.stop(t.now + 10) == []
        assert rec.items == [0, 1, 2, 3, 4, 5] and w.dropped == {}

    run(go())


def test_stop_hands_back_what_it_could_not_export_by_the_deadline_in_flight_batch_first() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        rec.gate = asyncio.Event()  # the destination hangs
        w = make(t, rec, max_batch=2)
        w.start()
        for i in range(5):
            w.put(i)
        await settle()
        assert w.in_flight == 2 and w.queued == 3
        stopping = asyncio.ensure_future(w.stop(t.now + 3))
        await t.advance(2.9)
        assert not stopping.done()
        await t.advance(0.1)
        assert await stopping == [0, 1, 2, 3, 4]
        assert rec.items == [] and w.queued == 0 and w.in_flight == 0

    run(go())


def test_stop_does_not_wait_out_a_retry_that_would_pass_the_deadline() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        rec.plan = [RetryLater(30.0)]
        w = make(t, rec)
        w.start()
        w.put("a")
        assert await w.stop(t.now + 5) == ["a"]

    run(go())


def test_a_put_after_stop_is_refused_and_counted() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(t, rec)
        w.start()
        await w.stop(t.now + 1)
        assert w.put("late") is False and w.dropped == {"after_stop": 1}

    run(go())


def test_the_idle_step_runs_after_the_queue_is_emptied_and_a_failing_one_does_not_stop_the_worker() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        calls: list[int] = []

        async def idle() -> None:
            calls.append(len(rec.items))
            if len(calls) == 1:
                raise OSError("spool unreadable")

        w = make(t, rec, idle=idle, max_batch=2, interval_s=1.0)
        w.start()
        w.put(0)
        w.put(1)
        await settle()
        assert calls == [2]
        w.put(2)
        w.put(3)
        await settle()
        assert calls == [2, 4] and rec.items == [0, 1, 2, 3]
        await w.stop(t.now + 1)

    run(go())


def test_a_policy_without_room_is_refused() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_queue=0, max_batch=1, interval_s=1.0)
    with pytest.raises(ValueError):
        BatchPolicy(max_queue=1, max_batch=1, interval_s=0.0)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), max_size=60),
    max_queue=st.integers(min_value=1, max_value=30),
    max_batch=st.integers(min_value=1, max_value=8),
    max_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=60)),
    refuse=st.booleans(),
)
def test_every_item_is_exported_once_in_order_or_counted_as_dropped(
    sizes: list[int], max_queue: int, max_batch: int, max_bytes: int | None, refuse: bool
) -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        w = make(
            t,
            rec,
            size=lambda item: item[1],
            max_queue=max_queue,
            max_batch=max_batch,
            max_batch_bytes=max_bytes,
            overflow=Overflow.REFUSE if refuse else Overflow.DROP_OLDEST,
        )
        for i, n in enumerate(sizes):
            w.put((i, n))
        await w.flush()
        exported = [i for i, _ in rec.items]
        assert exported == sorted(exported) and len(set(exported)) == len(exported)
        assert len(exported) + w.dropped["queue_full"] == len(sizes)
        assert len(exported) == min(len(sizes), max_queue)
        for b in rec.batches:
            assert 1 <= len(b) <= max_batch
            assert max_bytes is None or len(b) == 1 or sum(n for _, n in b) <= max_bytes

    run(go())


def test_the_idle_step_runs_between_exports_however_fast_items_arrive() -> None:
    async def go() -> None:
        t = ManualTime()
        idles: list[int] = []
        w: BatchWorker[int]

        async def busy_export(batch: list[int]) -> None:
            for _ in range(3):  # every export sees a full batch's worth arrive meanwhile
                w.put(batch[-1] + 1)
            await asyncio.sleep(0)

        async def idle() -> None:
            idles.append(w.sent)

        w = make(t, busy_export, idle=idle, max_batch=3, max_queue=10_000)
        for i in range(3):
            w.put(i)
        w.start()
        await settle()
        assert len(idles) >= 3, "the idle step is not starved by a queue that never empties"
        assert idles == sorted(idles) and idles[0] > 0
        await w.stop(t.now + 1)

    run(go())


def test_an_owner_timer_runs_a_cycle_before_the_interval_even_when_set_while_waiting() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        idles: list[float] = []

        async def idle() -> None:
            idles.append(t.now)

        w = make(t, rec, idle=idle, interval_s=600.0)
        w.start()
        await settle()  # waiting out the interval
        w.put("a")
        w.wake_at(5.0)
        w.wake_at(7.0)  # a later time does not push the earlier one back
        await t.advance(4.9)
        assert idles == [] and rec.items == []
        await t.advance(0.1)
        assert idles == [5.0] and rec.items == ["a"], "a cycle at the timer: exports, then the idle step"
        await t.advance(100.0)
        assert idles == [5.0], "each timer is served once"
        await w.stop(t.now + 1)

    run(go())


def test_ready_says_when_a_full_batch_waits() -> None:
    t, rec = ManualTime(), Recorder()
    w = make(t, rec, max_batch=2)
    w.put(1)
    assert not w.ready
    w.put(2)
    assert w.ready


def test_stop_during_the_idle_step_still_exports_what_arrived_meanwhile() -> None:
    async def go() -> None:
        t, rec = ManualTime(), Recorder()
        in_idle = asyncio.Event()
        release = asyncio.Event()
        w: BatchWorker[str]

        async def idle() -> None:
            if not in_idle.is_set():
                in_idle.set()
                await release.wait()

        w = make(t, rec, idle=idle, max_batch=1)
        w.start()
        w.put("a")
        await in_idle.wait()  # "a" exported; the idle step runs
        w.put("b")  # arrives during the idle step
        stopping = asyncio.ensure_future(w.stop(t.now + 10))
        await settle()
        release.set()
        assert await stopping == [] and rec.items == ["a", "b"]

    run(go())
