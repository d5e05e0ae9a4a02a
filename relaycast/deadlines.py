"""Deadlines on the request path without an event-loop timer each: `asyncio.timeout_at`'s behaviour, cheaper.

A request's attempt runs under several deadlines at once (its total deadline, the first-token budget, reading the
answer), and each `asyncio.timeout` makes and cancels a timer handle in the loop's heap: under load that costs more
than all of this module. `Deadlines` keeps the deadlines of one event loop in buckets `RESOLUTION_S` wide, with one
loop timer for the earliest bucket that still holds a deadline. Entering and leaving a deadline is a dict insert
and delete; the timer is set again only when a bucket earlier than the one it waits for appears (a shorter
deadline than any pending), and when it fires. Deadlines of the same length arrive in time order, so under a
steady stream of requests the timer fires about once per deadline length, not once per request.

A deadline expires at most RESOLUTION_S after its time, never before: the task is cancelled, and the block raises
TimeoutError, exactly as `asyncio.timeout_at` does (a cancellation from elsewhere stays a cancellation).

    deadlines = Deadlines()          # one per owner (the executor, each provider adapter); bound to a loop on use
    with deadlines.after(5.0):       # or deadlines.at(loop_time)
        await something()
"""

from __future__ import annotations

import asyncio
import heapq
from types import TracebackType
from typing import Any

RESOLUTION_S = 0.005


class Deadline:
    """One `with` block's deadline (made by `Deadlines.at` / `Deadlines.after`); not reusable."""

    __slots__ = ("_owner", "when", "_tick", "_task", "_cancelling", "_expired")

    def __init__(self, owner: Deadlines, when: float) -> None:
        self._owner = owner
        self.when = when  # loop time
        self._tick = 0
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0
        self._expired = False

    def __enter__(self) -> Deadline:
        task = asyncio.current_task(self._owner._loop)
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._owner._add(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._expired:
            self._owner._remove(self)
            return
        assert self._task is not None
        if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc

    @property
    def expired(self) -> bool:
        return self._expired

    def _expire(self) -> None:
        self._expired = True
        assert self._task is not None
        self._task.cancel()


class Deadlines:
    """The pending deadlines of one event loop (the first loop it is used in; a new loop starts afresh)."""

    __slots__ = ("_loop", "_buckets", "_ticks", "_handle", "_armed")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buckets: dict[int, dict[Deadline, None]] = {}  # tick -> the deadlines due in it
        self._ticks: list[int] = []  # heap of bucket ticks, some of them for buckets emptied since
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0  # the tick the loop timer is set for

    def at(self, when: float) -> Deadline:
        """A deadline at loop time `when`."""
        self.loop()
        return Deadline(self, when)

    def after(self, delay_s: float) -> Deadline:
        """A deadline `delay_s` seconds from now."""
        return Deadline(self, self.loop().time() + delay_s)

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, as bound. Asked of asyncio only when none is bound or it closed: on Python 3.11 each
        `asyncio.get_running_loop()` (and `current_task()`, `create_task()` without a loop) is a getpid() system
        call, about a tenth of a request's CPU in a loaded gateway. An owner serves one loop at a time."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
            self._bind(loop)
        return loop

    def pending(self) -> int:
        """Deadlines entered and neither left nor expired."""
        return sum(map(len, self._buckets.values()))

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._loop, self._buckets, self._ticks, self._handle, self._armed = loop, {}, [], None, 0

    def _add(self, d: Deadline) -> None:
        tick = int(d.when / RESOLUTION_S) + 1  # the first bucket boundary after `when`: never early
        d._tick = tick
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            heapq.heappush(self._ticks, tick)
            if self._handle is None or tick < self._armed:
                self._arm(tick)
        bucket[d] = None

    def _remove(self, d: Deadline) -> None:
        bucket = self._buckets.get(d._tick)
        if bucket is not None:
            bucket.pop(d, None)
            if not bucket:
                del self._buckets[d._tick]
                if len(self._ticks) > 2 * len(self._buckets) + 64:
                    # The heap keeps the ticks of emptied buckets until the timer passes them: with long deadlines
                    # (a 600 s total) and short requests that is minutes of ticks. Rebuilt from the live buckets
                    # (a sorted list is a heap) whenever half of it is dead: amortised O(1) per deadline.
                    self._ticks = sorted(self._buckets)

    def _arm(self, tick: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        assert self._loop is not None
        self._armed = tick
        self._handle = self._loop.call_at(tick * RESOLUTION_S, self._fire)

    def _fire(self) -> None:
        self._handle = None
        assert self._loop is not None
        now = self._loop.time()
        ticks, buckets = self._ticks, self._buckets
        while ticks:
            tick = ticks[0]
            bucket = buckets.get(tick)
            if bucket is None:
                heapq.heappop(ticks)  # emptied before it was due
                continue
            if tick * RESOLUTION_S > now:
                self._arm(tick)
                return
            heapq.heappop(ticks)
            del buckets[tick]
            for d in bucket:
                d._expire()
