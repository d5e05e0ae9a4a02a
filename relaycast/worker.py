"""The out-of-band machine: a bounded queue in front of an async export, on asyncio, shaped like OpenTelemetry's
batch processor.

`put()` is O(1), never blocks and never raises: it appends to a bounded deque and, when the queue is full, drops
the oldest item or refuses the new one (the owner's `Overflow` policy), counting the drop. A worker task exports
a batch when `max_batch` items or `max_batch_bytes` bytes (by the owner's size function) are queued, or when
`interval_s` passes (or an owner's timer, `wake_at`, is due). Each cycle exports what was queued when it began,
then runs the owner's idle step (a spool replay, retention), so the idle step runs however fast items arrive.
What an export means is the owner's: send, spool, write to a database in a thread. An export that raises is counted
as failed, reported once, and never stops the worker; one that raises `RetryLater` puts its batch back at the front
of the queue and is tried again after the delay it names. `stop(deadline)` drains within the deadline and returns
whatever is left (the in-flight batch first, in order), so the owner hands it on (to a spool, to a count of losses)
instead of losing it silently.

Every drop is counted in `dropped` by reason: `queue_full` (a full queue, either policy), `after_stop` (a `put()`
after `stop()`), `size_error` (the size function raised); owners add their own reasons with `drop()`. Time comes
from an injected clock and sleep, so interval and deadline behaviour can be tested without waiting.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]  # seconds, monotonic
Sleep = Callable[[float], Awaitable[None]]

log = logging.getLogger("relaycast.worker")


class Overflow(enum.StrEnum):
    """What `put()` does when the queue is full."""

    DROP_OLDEST = "drop_oldest"  # the new item goes in, the oldest is dropped (telemetry: the newest matters most)
    REFUSE = "refuse"  # the new item is dropped, `put()` returns False


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_queue: int  # items waiting, at most
    max_batch: int  # items per export, at most
    interval_s: float  # export what is queued at least this often
    max_batch_bytes: int | None = None  # bytes per export, at most (by the size function); one larger item goes alone
    overflow: Overflow = Overflow.DROP_OLDEST

    def __post_init__(self) -> None:
        if self.max_queue < 1 or self.max_batch < 1 or self.interval_s <= 0:
            raise ValueError(f"a batch policy needs max_queue, max_batch and interval_s above 0: {self}")
        if self.max_batch_bytes is not None and self.max_batch_bytes < 1:
            raise ValueError(f"max_batch_bytes must be above 0: {self}")


class RetryLater(Exception):
    """Raised by an export: put this batch back at the front of the queue and try again after `after_s`."""

    def __init__(self, after_s: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {after_s:g}s")
        self.after_s = max(0.0, after_s)


class BatchWorker(Generic[T]):
    """A bounded queue of `T` and the task that exports it in batches. See the module docstring."""

    def __init__(
        self,
        name: str,
        export: Callable[[list[T]], Awaitable[None]],
        policy: BatchPolicy,
        *,
        size: Callable[[T], int] | None = None,
        idle: Callable[[], Awaitable[None]] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`size`: an item's bytes, called once in `put()` (keep it O(1)). `idle`: awaited after each cycle that
        emptied the queue, under the same lock as exports (a spool replay, retention). `on_error`: told of every
        export or idle failure (the default logs a new message once)."""
        self.name = name
        self.policy = policy
        self.clock = clock
        self._export = export
        self._size = size
        self._idle = idle
        self._on_error = on_error
        self._sleep = sleep
        self._queue: collections.deque[tuple[T, int]] = collections.deque()
        self._bytes = 0
        self._inflight: list[tuple[T, int]] = []
        self._taken = 0  # items in the last batch taken
        self._wake = asyncio.Event()
        self._stop_asked = asyncio.Event()
        self._rearm = asyncio.Event()  # an owner's timer changed while the worker waits
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._deadline = float("inf")
        self._due = float("inf")  # an owner's timer (`wake_at`), on the worker's clock
        self.sent = 0  # items whose export returned
        self.failed = 0  # items whose export raised
        self.batches = 0  # exports that returned
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None

    # --- the caller's side: O(1), never raises -----------------------------------------------------

    def put(self, item: T) -> bool:
        """Queue an item. False when it was not queued (refused, stopped, unsizable), which is counted."""
        if self._stopping:
            self.dropped["after_stop"] += 1
            return False
        try:
            n = self._size(item) if self._size is not None else 0
        except Exception:  # noqa: BLE001 - the caller never sees an owner's bug
            self.dropped["size_error"] += 1
            return False
        q = self._queue
        if len(q) >= self.policy.max_queue:
            self.dropped["queue_full"] += 1
            if self.policy.overflow is Overflow.REFUSE:
                return False
            self._bytes -= q.popleft()[1]
        q.append((item, n))
        self._bytes += n
        if self._ready():
            self._wake.set()
        return True

    def drop(self, reason: str, n: int = 1) -> None:
        """Count items the owner dropped (in an export, say) under `reason`, beside the worker's own drops."""
        if n > 0:
            self.dropped[reason] += n

    @property
    def queued(self) -> int:
        """Items waiting (not counting a batch being exported)."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def in_flight(self) -> int:
        """Items in the batch being exported now."""
        return len(self._inflight)

    @property
    def ready(self) -> bool:
        """A full batch (by count or bytes) is waiting: an owner's idle step should give way to it."""
        return self._ready()

    def wake_at(self, when: float) -> None:
        """Run a cycle (exports, then the idle step) no later than `when` on the worker's clock, even when the
        interval is longer: for an owner's timer, such as probing a destination that is down. Callable any time:
        the earliest time asked for wins, and each is served once."""
        if when < self._due:
            self._due = when
            self._rearm.set()

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called: an export should not start long retries."""
        return self._stopping

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"worker-{self.name}")

    async def flush(self) -> None:
        """Export everything queued now (not the idle step). Returns early when an export asks to retry later."""
        async with self._lock:
            while self._queue:
                if await self._export_one() is not None:
                    return

    async def stop(self, deadline: float) -> list[T]:
        """Take no more items, export what is queued until `deadline` (on the worker's clock), then cancel what is
        still running and return every item not exported: the in-flight batch first, then the queue, in order."""
        self._stopping = True
        self._deadline = deadline
        self._wake.set()
        self._stop_asked.set()
        task, self._task = self._task, None
        if task is not None and not await self._within(deadline - self.clock(), task):
            task.cancel()
            await asyncio.wait((task,))  # the worker's own cancellation is not ours: a caller's cancel still reaches us
            if not task.cancelled():
                task.exception()  # retrieved: a failure was already counted and reported by the worker
        left = [item for item, _ in self._queue]
        self._queue.clear()
        self._bytes = 0
        return left

    # --- the worker --------------------------------------------------------------------------------

    def _ready(self) -> bool:
        limit = self.policy.max_batch_bytes
        return len(self._queue) >= self.policy.max_batch or (limit is not None and self._bytes >= limit)

    async def _run(self) -> None:
        while True:
            if not self._stopping and not self._ready():
                await self._until_due(self.clock() + self.policy.interval_s)
            self._wake.clear()
            if self.clock() >= self._due:
                self._due = float("inf")
            retry_in = await self._cycle()
            if retry_in is None:
                if self._stopping and not self._queue:  # items that came during the idle step still go out
                    return
                continue
            if self._stopping:
                if self.clock() + retry_in >= self._deadline:
                    return  # the next try would pass the deadline: stop() hands the batch back
                await self._sleep(retry_in)
            else:
                await self._wait(retry_in, self._stop_asked)

    async def _cycle(self) -> float | None:
        """Export what was queued when the cycle began, then the idle step. The delay an export asked for, if one
        did. Items that arrive meanwhile wait for the next cycle (all of them once stopping), so the idle step runs
        however fast items come."""
        async with self._lock:
            left = len(self._queue)
            while self._queue and (left > 0 or self._stopping):
                retry_in = await self._export_one()
                left -= self._taken
                if retry_in is not None:
                    return retry_in
            if self._idle is not None and not self._stopping:
                try:
                    await self._idle()
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - a worker never dies
                    self._report(e)
        return None

    async def _export_one(self) -> float | None:
        batch = self._take()
        self._inflight = batch
        try:
            await self._export([item for item, _ in batch])
        except RetryLater as r:
            self._requeue(batch, bounded=True)
            return r.after_s
        except asyncio.CancelledError:
            self._requeue(batch, bounded=False)  # stop() passed its deadline: the batch goes back to the owner
            raise
        except Exception as e:  # noqa: BLE001 - counted and reported, never raised into the app
            self.failed += len(batch)
            self._report(e)
        else:
            self.sent += len(batch)
            self.batches += 1
        finally:
            self._inflight = []
        return None

    def _take(self) -> list[tuple[T, int]]:
        q = self._queue
        limit = self.policy.max_batch_bytes
        batch: list[tuple[T, int]] = []
        size = 0
        while q and len(batch) < self.policy.max_batch:
            n = q[0][1]
            if limit is not None and batch and size + n > limit:
                break
            batch.append(q.popleft())
            size += n
        self._bytes -= size
        self._taken = len(batch)
        return batch

    def _requeue(self, batch: list[tuple[T, int]], *, bounded: bool) -> None:
        """Put a batch back at the front. Bounded: a queue that filled meanwhile drops the batch's oldest items."""
        if bounded:
            room = self.policy.max_queue - len(self._queue)
            if room < len(batch):
                cut = len(batch) - max(room, 0)
                self.dropped["queue_full"] += cut
                batch = batch[cut:]
        self._queue.extendleft(reversed(batch))
        self._bytes += sum(n for _, n in batch)

    async def _until_due(self, end: float) -> None:
        """Until a batch is ready (`_wake`), `end` passes, or an owner's timer is due; a timer set meanwhile
        (`_rearm`) shortens the wait."""
        while True:
            self._rearm.clear()
            await self._wait(min(end, self._due) - self.clock(), self._wake, self._rearm)
            if not self._rearm.is_set() or self._wake.is_set():
                return

    async def _wait(self, seconds: float, *events: asyncio.Event) -> None:
        """Until one of `events` is set or `seconds` pass (by the injected sleep)."""
        if any(e.is_set() for e in events):
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        sleeper = asyncio.ensure_future(self._sleep(max(0.0, seconds)))
        try:
            await asyncio.wait((*waiters, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            sleeper.cancel()

    async def _within(self, seconds: float, task: asyncio.Task[None]) -> bool:
        """Whether `task` finished within `seconds` (by the injected sleep)."""
        if seconds > 0 and not task.done():
            sleeper = asyncio.ensure_future(self._sleep(seconds))
            try:
                await asyncio.wait((task, sleeper), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
        return task.done()

    def _report(self, e: BaseException) -> None:
        message = f"{type(e).__name__}: {e}"[:300]
        if self._on_error is not None:
            try:
                self._on_error(e)
            except Exception:  # reporting must not kill the worker either
                log.exception("worker_error_report_failed worker=%s", self.name)
        elif message != self.last_error:
            log.warning("worker_export_failed worker=%s error=%s", self.name, message)
        self.last_error = message
