"""Minimal records and a manual clock, for tests of the broadcast pipeline and the batch worker."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from relaycast.records import Attribution, RequestRecord


def sample_record(i: int, output_text: str | None = None, **attribution: str | None) -> RequestRecord:
    """A finished chat request `req-<i>`, attributed as given (user "u" when nothing is)."""
    return RequestRecord(
        request_id=f"req-{i}",
        endpoint="chat.completions",
        model_requested="m",
        stream=False,
        started_unix_ns=time.time_ns(),
        duration_ns=1000,
        status_code=200,
        attribution=Attribution(**attribution) if attribution else Attribution(user="u"),  # type: ignore[arg-type]
        output_text=output_text,
    )


class ManualTime:
    """A clock and a sleep that move only when the test says so (`move`, or `advance` to also let every task
    that can run, run); exports and spool I/O still run for real."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._seq), fut))
        await fut

    @property
    def parked(self) -> bool:
        """Something waits on this clock (a worker, between cycles)."""
        return any(not f.done() for _, _, f in self._sleepers)

    def move(self, seconds: float) -> None:
        """Move the clock and wake every sleeper now due."""
        self.now += seconds
        while self._sleepers and self._sleepers[0][0] <= self.now:
            fut = heapq.heappop(self._sleepers)[2]
            if not fut.done():
                fut.set_result(None)

    async def advance(self, seconds: float) -> None:
        self.move(seconds)
        await settle()


async def settle() -> None:
    """Let every task that can run, run."""
    for _ in range(50):
        await asyncio.sleep(0)
