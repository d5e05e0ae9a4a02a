"""Steady open-loop traffic against a gateway that may restart: `rate` chat completions a second whatever the
answers' latency, each answered request remembered by the gateway's id (`x-relaycast-request-id`) with the time of
its answer. Used by the outage test and bench/broadcast.py.

The gateway's URL can change while it runs (a restarted gateway listens on another port) or be None (no gateway:
nothing is sent, and the requests not sent are counted as `skipped`). A request without an answer (connection
refused or reset, a timeout) is counted in `failed`; it never reached a record, or if it did, its record is one
the client cannot name.
"""

from __future__ import annotations

import asyncio
import collections
import time

import aiohttp
import orjson


class Traffic:
    def __init__(
        self,
        rate: float,
        model: str = "fakeai/gpt-4o-mini",
        prompt: str = "hello",
        max_in_flight: int = 400,
        timeout_s: float = 30.0,
    ) -> None:
        self.rate = rate
        self.url: str | None = None  # the gateway's base URL (http://127.0.0.1:PORT)
        self.answered: dict[str, float] = {}  # x-relaycast-request-id -> time.monotonic() of the answer
        self.statuses: collections.Counter[int] = collections.Counter()
        self.failed = 0  # sent, never answered
        self.skipped = 0  # due but not sent: no gateway, or max_in_flight requests already waiting
        self.no_id = 0  # answered without an x-relaycast-request-id
        self.latencies: list[float] = []  # seconds, of answered requests (the owner may clear it)
        self._body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]})
        self._max_in_flight = max_in_flight
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._stop = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    def answered_between(self, start: float, end: float) -> int:
        return sum(1 for t in self.answered.values() if start <= t <= end)

    async def run(self) -> None:
        """Send until `stop()`, then wait for the answers still due."""
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=self._max_in_flight, force_close=False)
        async with aiohttp.ClientSession(connector=connector, timeout=self._timeout) as session:
            started = loop.time()
            due_sent = 0
            while not self._stop.is_set():
                due = int((loop.time() - started) * self.rate)
                for _ in range(due - due_sent):
                    url = self.url
                    if url is None or len(self._inflight) >= self._max_in_flight:
                        self.skipped += 1
                        continue
                    task = loop.create_task(self._one(session, url))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
                due_sent = due
                try:
                    await asyncio.wait_for(self._stop.wait(), 0.005)
                except TimeoutError:
                    pass
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def stop(self) -> None:
        self._stop.set()

    async def _one(self, session: aiohttp.ClientSession, url: str) -> None:
        t0 = time.monotonic()
        headers = {"content-type": "application/json", "authorization": "Bearer x"}
        try:
            async with session.post(url + "/v1/chat/completions", data=self._body, headers=headers) as r:
                await r.read()
                rid = r.headers.get("x-relaycast-request-id")
        except (aiohttp.ClientError, OSError, TimeoutError):
            self.failed += 1
            return
        now = time.monotonic()
        self.statuses[r.status] += 1
        self.latencies.append(now - t0)
        if rid is None:
            self.no_id += 1
        else:
            self.answered[rid] = now
