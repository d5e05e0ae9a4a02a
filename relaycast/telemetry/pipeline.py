"""The out-of-band broadcast pipeline, built like OpenTelemetry's batch span processor, on asyncio.

`Broadcaster` is a record sink: calling it is O(1) per destination, never blocks and never raises. Each
destination has its own bounded queue (full: the oldest record is dropped and counted) and its own worker,
so a slow or dead destination delays neither the request nor another destination. A worker sends a batch
when it is full (records or bytes) or when the flush interval passes; retries only what can succeed
(408, 429, 5xx, connection errors) with jittered exponential backoff honouring Retry-After; and spools what
still fails to disk, to be replayed when the destination answers again or after a restart. Every drop is
counted by reason.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import Exporter, ExportError, TestResult
from relaycast.telemetry.settings import BroadcastConfig, DestinationConfig
from relaycast.telemetry.spool import Spool

Clock = Callable[[], int]  # unix ns


class Destination:
    """One destination's queue, worker, counters and spool."""

    def __init__(
        self,
        cfg: DestinationConfig,
        exporter: Exporter,
        spool: Spool | None,
        redactor: Redactor,
        log: EventLog,
        clock: Clock,
    ) -> None:
        self.cfg = cfg
        self.exporter = exporter
        self.spool = spool
        self._redactor = redactor
        self._log = log
        self._clock = clock
        self._queue: collections.deque[RequestRecord] = collections.deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self._next_probe = 0.0
        self._probe_delay = 1.0
        self._include = frozenset(cfg.include_keys)
        self._exclude = frozenset(cfg.exclude_keys)
        self.sent = 0
        self.batches_sent = 0
        self.retries = 0
        self.sampled_out = 0
        self.filtered_out = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None

    # --- the request side: O(1), never raises ----------------------------------------------------

    def offer(self, record: RequestRecord) -> None:
        key = record.attribution.key_name
        if (self._include and key not in self._include) or (key is not None and key in self._exclude):
            self.filtered_out += 1
            return
        if self.cfg.sample_rate < 1.0 and not _sampled(record, self.cfg.sample_rate):
            self.sampled_out += 1
            return
        if len(self._queue) >= self.cfg.queue_size:
            self._queue.popleft()
            self.dropped["queue_full"] += 1
        self._queue.append(record)
        if len(self._queue) >= self.cfg.max_batch_records:
            self._wake.set()

    # --- the worker ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"broadcast-{self.cfg.name}")

    async def stop(self, deadline: float) -> None:
        """Stop taking records, send what is queued until `deadline` (loop time), spool the rest."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), max(0.0, deadline - asyncio.get_running_loop().time())
                )
            except TimeoutError:
                self._task.cancel()
                try:
                    await self._task
                except asyncio.CancelledError:
                    pass
        await self._spool_rest()
        await self.exporter.close()

    async def _run(self) -> None:
        while True:
            if not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.cfg.flush_interval_s)
                except TimeoutError:
                    pass
            self._wake.clear()
            try:
                await self._drain()
                if not self._stopping:
                    await self._replay()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - a worker never dies
                self._error(f"internal: {type(e).__name__}: {e}")
            if self._stopping:
                return

    async def flush(self) -> None:
        """Send everything queued now (tests, Test Connection, shutdown)."""
        await self._drain()

    async def _drain(self) -> None:
        while self._queue:
            items, oldest, n_records = self._next_batch()
            if items:
                await self._deliver(items, oldest)
            elif not n_records:
                return

    def _next_batch(self) -> tuple[list[bytes], int, int]:
        exp = self.exporter
        limit = exp.max_batch_bytes
        max_age_ns = int(exp.max_age_s * 1e9) if exp.max_age_s else None
        now = self._clock()
        items: list[bytes] = []
        size = 0
        oldest = 0
        taken = 0
        q = self._queue
        while q and taken < self.cfg.max_batch_records:
            rec = q[0]
            if max_age_ns is not None and now - rec.started_unix_ns > max_age_ns:
                q.popleft()
                self.dropped["too_old"] += 1
                continue
            try:
                encoded = [
                    self._redactor.scrub_known(it) for it in exp.encode(rec, self.cfg.privacy_mode, self.cfg.tags)
                ]
            except Exception as e:  # noqa: BLE001 - one bad record must not stop the destination
                q.popleft()
                self.dropped["encode_error"] += 1
                self._error(f"encode failed: {type(e).__name__}")
                continue
            rsize = sum(len(it) for it in encoded)
            if items and size + rsize > limit:
                break  # this record starts the next batch
            q.popleft()
            taken += 1
            for it in encoded:
                if len(it) > limit:
                    self.dropped["too_large"] += 1
                    continue
                items.append(it)
                size += len(it)
            oldest = rec.started_unix_ns if not oldest else min(oldest, rec.started_unix_ns)
        return items, oldest, taken

    async def _deliver(self, items: list[bytes], oldest: int) -> None:
        if not self._healthy and not self._stopping:
            await self._to_spool(items, oldest)  # known down: no retries; the spool replay probes for recovery
            return
        attempt = 0
        while True:
            try:
                await self.exporter.send(items)
            except ExportError as e:
                self._error(e.message, status=e.status, will_retry=e.retryable and attempt < self.cfg.max_retries)
                if not e.retryable:
                    self.dropped["rejected"] += len(items)
                    return
                if attempt >= self.cfg.max_retries or self._stopping:
                    self._mark_down()
                    await self._to_spool(items, oldest)
                    return
                attempt += 1
                self.retries += 1
                await asyncio.sleep(_backoff(attempt, e.retry_after))
            else:
                self._success(len(items))
                return

    async def _replay(self) -> None:
        """Send spooled batches, oldest first, while the destination answers; probe it when it was down."""
        spool = self.spool
        if spool is None or spool.batches == 0:
            return
        loop = asyncio.get_running_loop()
        if not self._healthy and loop.time() < self._next_probe:
            return
        max_age_ns = int(self.exporter.max_age_s * 1e9) if self.exporter.max_age_s else None
        for _ in range(100):  # bounded work per wake-up
            entry = await asyncio.to_thread(spool.oldest)
            if entry is None or self._stopping or self._queue:
                return
            items = await asyncio.to_thread(spool.read, entry)
            if max_age_ns is not None and self._clock() - entry.oldest_unix_ns > max_age_ns:
                self.dropped["too_old"] += len(items)
                await asyncio.to_thread(spool.remove, entry)
                self._log.warning("spool_discarded", destination=self.cfg.name, events=len(items), reason="too_old")
                continue
            try:
                await self.exporter.send(items)
            except ExportError as e:
                self._error(e.message, status=e.status, will_retry=e.retryable)
                if not e.retryable:
                    self.dropped["rejected"] += len(items)
                    await asyncio.to_thread(spool.remove, entry)
                    continue
                self._mark_down()
                return
            await asyncio.to_thread(spool.remove, entry)
            self._success(len(items))

    async def _to_spool(self, items: list[bytes], oldest: int) -> None:
        if self.spool is None:
            self.dropped["export_failed"] += len(items)
            return
        if self.spool.bytes + sum(4 + len(it) for it in items) > self.spool.max_bytes:
            self.dropped["spool_full"] += len(items)  # known full: no thread, no disk
            return
        ok = await asyncio.to_thread(self.spool.put, items, oldest)
        if not ok:
            self.dropped["spool_full"] += len(items)

    async def _spool_rest(self) -> None:
        while self._queue:
            items, oldest, taken = self._next_batch()
            if items:
                await self._to_spool(items, oldest)
            elif not taken:
                break

    def _success(self, n: int) -> None:
        self.sent += n
        self.batches_sent += 1
        self.last_success_at = time.time()
        if not self._healthy:
            self._log.info("destination_recovered", destination=self.cfg.name)
        self._healthy = True
        self._probe_delay = 1.0

    def _mark_down(self) -> None:
        loop = asyncio.get_running_loop()
        if self._healthy:
            self._log.warning("destination_down", destination=self.cfg.name, error=self.last_error)
        self._healthy = False
        self._next_probe = loop.time() + self._probe_delay * (0.5 + random.random())
        self._probe_delay = min(self._probe_delay * 2, 30.0)

    def _error(self, message: str, **fields: Any) -> None:
        self.last_error = self._redactor.scrub(message)
        self.last_error_at = time.time()
        self._log.event(
            logging.DEBUG if fields.get("will_retry") else logging.WARNING,
            "export_failed",
            destination=self.cfg.name,
            error=self.last_error,
            **fields,
        )

    def status(self) -> dict[str, Any]:
        return {
            "name": self.cfg.name,
            "kind": self.cfg.kind,
            "healthy": self._healthy,
            "queued": len(self._queue),
            "sent": self.sent,
            "batches_sent": self.batches_sent,
            "retries": self.retries,
            "spooled_batches": self.spool.batches if self.spool else 0,
            "spool_bytes": self.spool.bytes if self.spool else 0,
            "dropped": dict(self.dropped),
            "sampled_out": self.sampled_out,
            "filtered_out": self.filtered_out,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
        }


class Broadcaster:
    """The record sink for every configured destination."""

    def __init__(
        self,
        config: BroadcastConfig,
        session: aiohttp.ClientSession,
        redactor: Redactor,
        log: EventLog,
        clock: Clock = time.time_ns,
    ) -> None:
        self.destinations: dict[str, Destination] = {}
        for d in config.destinations:
            if not d.enabled:
                continue
            spool = Spool(f"{config.spool_dir}/{d.name}", d.spool_max_bytes) if d.spool_max_bytes else None
            self.destinations[d.name] = Destination(d, build(d, session), spool, redactor, log, clock)
        self._log = log

    def __call__(self, record: RequestRecord) -> None:
        for d in self.destinations.values():
            d.offer(record)

    def start(self) -> None:
        for d in self.destinations.values():
            d.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        await asyncio.gather(*(d.stop(deadline) for d in self.destinations.values()))

    async def flush(self) -> None:
        await asyncio.gather(*(d.flush() for d in self.destinations.values()))

    def status(self) -> list[dict[str, Any]]:
        return [d.status() for d in self.destinations.values()]

    async def test(self, name: str | None = None) -> dict[str, TestResult]:
        chosen = [d for n, d in self.destinations.items() if name is None or n == name]
        results = await asyncio.gather(*(_safe_test(d) for d in chosen))
        return {d.cfg.name: r for d, r in zip(chosen, results, strict=False)}


async def _safe_test(d: Destination) -> TestResult:
    try:
        return await d.exporter.test()
    except Exception as e:  # noqa: BLE001 - a test reports, it does not crash
        return TestResult(False, f"test failed: {type(e).__name__}")


def _sampled(record: RequestRecord, rate: float) -> bool:
    """Deterministic per session (or per request without one): a session is kept or dropped whole."""
    key = record.attribution.session_id or record.request_id
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < rate


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, 60.0)
    base = min(0.2 * 2 ** (attempt - 1), 10.0)
    return base * (0.5 + random.random() / 2)
