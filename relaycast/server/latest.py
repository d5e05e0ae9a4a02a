"""The latest answer to a question that can be slow, for a view that must answer in time.

`/metrics` and the admin views ask the telemetry process for the host's counters. At saturation that process runs
on what CPU the workers leave (`SCHED_IDLE` by default), and a question to it can wait seconds: longer than a
scrape's timeout, just when the metrics matter most. A worker therefore keeps the last view it was given. When a
fresh one does not come within `wait_s`, it answers with that one and says how old it is, while the question goes
on; what that question brings stands in for the next slow one. One question at a time is asked per view, however
many callers come while it waits. An error is the caller's, kept view or not (the telemetry process restarting
answers 503, as it would without one), and a view older than `max_age_s` is never served: the caller waits for
the fresh one, or its error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestAnswer(Generic[T]):
    __slots__ = ("wait_s", "max_age_s", "_kept", "_pending")

    def __init__(self, wait_s: float, max_age_s: float) -> None:
        self.wait_s = wait_s
        self.max_age_s = max_age_s
        self._kept: tuple[T, float] | None = None  # the last answer and the monotonic time it came
        self._pending: asyncio.Future[T] | None = None

    async def get(self, ask: Callable[[], Awaitable[T]]) -> tuple[T, float]:
        """A fresh answer and 0.0, or, when none comes within `wait_s`, the last one and its age in seconds."""
        pending = self._pending
        if pending is None:
            pending = self._pending = asyncio.ensure_future(ask())
            pending.add_done_callback(self._done)
        kept = self._kept
        if kept is not None and time.monotonic() - kept[1] <= self.max_age_s:
            done, _ = await asyncio.wait({pending}, timeout=self.wait_s)
            if not done:
                return kept[0], time.monotonic() - kept[1]
        # A caller that leaves (its client went away) does not cancel the question the next caller waits for.
        return await asyncio.shield(pending), 0.0

    def _done(self, fut: asyncio.Future[T]) -> None:
        if self._pending is fut:
            self._pending = None
        if fut.cancelled() or fut.exception() is not None:  # the exception is read: it is its waiters' to raise
            return
        self._kept = (fut.result(), time.monotonic())
