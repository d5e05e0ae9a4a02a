"""The out-of-band broadcast pipeline: one `BatchWorker` per destination, shaped like OpenTelemetry's batch span
processor.

`Broadcaster` is a record sink: calling it is O(1) per destination, never blocks and never raises. Each
destination has its own bounded queue (full: the oldest record is dropped and counted) and its own worker,
so a slow or dead destination delays neither the request nor another destination. A worker encodes a batch
(at most `max_batch_records` records, split into request bodies of at most the exporter's `max_batch_bytes`)
when it is full or when the flush interval passes; retries only what can succeed (`relaycast.retry`: 408, 429,
5xx, connection errors; OTLP narrows it) with jittered exponential backoff honouring Retry-After; and spools what
still fails to disk, to be replayed when the destination answers again or after a restart. Every drop is
counted by reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import aiohttp

from relaycast import retry
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import Exporter, ExportError, TestResult
from relaycast.telemetry.settings import BroadcastConfig, DestinationConfig
from relaycast.telemetry.spool import Spool
from relaycast.worker import BatchPolicy, BatchWorker, Sleep

Clock = Callable[[], int]  # unix ns

RETRY_BASE_S = 0.2  # a batch's retries: 0.2 s doubling, jittered, at most 10 s (or what Retry-After asks, <= 60 s)
RETRY_CAP_S = 10.0
PROBE_BASE_S = 1.0  # a destination that is down is probed 1 s after, doubling to 30 s
PROBE_CAP_S = 30.0
REPLAY_PER_WAKE = 100  # spooled batches replayed per wake-up, at most


class Destination:
    """One destination's worker, counters and spool."""

    def __init__(
        self,
        cfg: DestinationConfig,
        exporter: Exporter,
        spool: Spool | None,
        redactor: Redactor,
        log: EventLog,
        clock: Clock,
        *,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.exporter = exporter
        self.spool = spool
        self._redactor = redactor
        self._log = log
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self.worker: BatchWorker[RequestRecord] = BatchWorker(
            f"broadcast-{cfg.name}",
            self._export,
            BatchPolicy(max_queue=cfg.queue_size, max_batch=cfg.max_batch_records, interval_s=cfg.flush_interval_s),
            idle=self._replay,
            on_error=lambda e: self._error(f"internal: {type(e).__name__}: {e}"),
            sleep=sleep,
        )
        self.dropped = self.worker.dropped  # one counter by reason: the worker's (queue_full) and ours
        self._healthy = True
        self._next_probe = 0.0  # on the worker's clock
        self._failed_probes = 0
        self._handled = 0  # records of the batch being exported that were sent, spooled or dropped
        self._cut_short: int | None = None  # _handled when stop() cancelled an export
        self._include = frozenset(cfg.include_keys)
        self._exclude = frozenset(cfg.exclude_keys)
        self.sent = 0
        self.batches_sent = 0
        self.retries = 0
        self.sampled_out = 0
        self.filtered_out = 0
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
        self.worker.put(record)

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.worker.start()

    async def stop(self, deadline: float) -> None:
        """Stop taking records, send what is queued until `deadline` (on the worker's clock), spool the rest."""
        left = await self.worker.stop(deadline)
        if self._cut_short is not None:  # the in-flight batch comes back first; its first records were handled
            left = left[self._cut_short :]
            self._cut_short = None
        for items, oldest, _ in self._chunks(left):
            if items:
                await self._to_spool(items, oldest)
        await self.exporter.close()

    async def flush(self) -> None:
        """Send everything queued now (tests, Test Connection, shutdown)."""
        await self.worker.flush()

    # --- the worker's export and idle step ----------------------------------------------------------

    async def _export(self, records: list[RequestRecord]) -> None:
        self._handled = 0
        self._cut_short = None
        try:
            for items, oldest, n in self._chunks(records):
                if items:
                    await self._deliver(items, oldest)
                self._handled += n
        except asyncio.CancelledError:
            self._cut_short = self._handled
            raise

    def _chunks(self, records: Iterable[RequestRecord]) -> Iterator[tuple[list[bytes], int, int]]:
        """The records encoded as request bodies' worth of items (at most the exporter's max_batch_bytes each):
        (items, oldest record's unix ns, records consumed). Too old, unencodable and oversized ones are counted."""
        exp = self.exporter
        limit = exp.max_batch_bytes
        max_age_ns = int(exp.max_age_s * 1e9) if exp.max_age_s else None
        now = self._clock()
        items: list[bytes] = []
        size = oldest = taken = 0
        for rec in records:
            taken += 1
            if max_age_ns is not None and now - rec.started_unix_ns > max_age_ns:
                self.worker.drop("too_old")
                continue
            try:
                encoded = [
                    self._redactor.scrub_known(it) for it in exp.encode(rec, self.cfg.privacy_mode, self.cfg.tags)
                ]
            except Exception as e:  # noqa: BLE001 - one bad record must not stop the destination
                self.worker.drop("encode_error")
                self._error(f"encode failed: {type(e).__name__}")
                continue
            rsize = sum(len(it) for it in encoded)
            if items and size + rsize > limit:
                yield items, oldest, taken - 1  # this record starts the next body
                items, size, oldest, taken = [], 0, 0, 1
            for it in encoded:
                if len(it) > limit:
                    self.worker.drop("too_large")
                    continue
                items.append(it)
                size += len(it)
            oldest = rec.started_unix_ns if not oldest else min(oldest, rec.started_unix_ns)
        if taken:
            yield items, oldest, taken

    async def _deliver(self, items: list[bytes], oldest: int) -> None:
        probe = False
        if not self._healthy and not self.worker.stopping:
            # Known down: no retries. The spool's replay probes for recovery; with nothing spooled to probe with
            # (no spool, or one too small for a batch), this batch is the probe once one is due.
            spooled = self.spool is not None and self.spool.batches > 0
            if spooled or self.worker.clock() < self._next_probe:
                await self._to_spool(items, oldest)
                return
            probe = True
        max_retries = 0 if probe else self.cfg.max_retries
        attempt = 0
        while True:
            try:
                await self.exporter.send(items)
            except ExportError as e:
                self._error(e.message, status=e.status, will_retry=e.retryable and attempt < max_retries)
                if not e.retryable:
                    self.worker.drop("rejected", len(items))
                    return
                if attempt >= max_retries or self.worker.stopping:
                    self._mark_down()
                    await self._to_spool(items, oldest)
                    return
                attempt += 1
                self.retries += 1
                await self._sleep(retry.retry_delay(attempt, RETRY_BASE_S, RETRY_CAP_S, self._rng, e.retry_after))
            else:
                self._success(len(items))
                return

    async def _replay(self) -> None:
        """Send spooled batches, oldest first, while the destination answers; probe it when it was down."""
        spool = self.spool
        if spool is None or spool.batches == 0:
            return
        if not self._healthy and self.worker.clock() < self._next_probe:
            return
        max_age_ns = int(self.exporter.max_age_s * 1e9) if self.exporter.max_age_s else None
        for _ in range(REPLAY_PER_WAKE):  # bounded work per wake-up
            entry = await asyncio.to_thread(spool.oldest)
            if entry is None or self.worker.stopping or self.worker.queued:
                return
            # Views into one buffer, not copies; Exporter.send promises bytes-like use only (join, len, concat).
            items = cast("list[bytes]", await asyncio.to_thread(spool.read, entry))
            if max_age_ns is not None and self._clock() - entry.oldest_unix_ns > max_age_ns:
                self.worker.drop("too_old", len(items))
                await asyncio.to_thread(spool.remove, entry)
                self._log.warning("spool_discarded", destination=self.cfg.name, events=len(items), reason="too_old")
                continue
            try:
                await self.exporter.send(items)
            except ExportError as e:
                self._error(e.message, status=e.status, will_retry=e.retryable)
                if not e.retryable:
                    self.worker.drop("rejected", len(items))
                    await asyncio.to_thread(spool.remove, entry)
                    continue
                self._mark_down()
                return
            await asyncio.to_thread(spool.remove, entry)
            self._success(len(items))

    async def _to_spool(self, items: list[bytes], oldest: int) -> None:
        if self.spool is None:
            self.worker.drop("export_failed", len(items))
            return
        if self.spool.bytes + sum(4 + len(it) for it in items) > self.spool.max_bytes:
            self.worker.drop("spool_full", len(items))  # known full: no thread, no disk
            return
        ok = await asyncio.to_thread(self.spool.put, items, oldest)
        if not ok:
            self.worker.drop("spool_full", len(items))

    # --- health and counters -----------------------------------------------------------------------

    def _success(self, n: int) -> None:
        self.sent += n
        self.batches_sent += 1
        self.last_success_at = time.time()
        if not self._healthy:
            self._log.info("destination_recovered", destination=self.cfg.name)
        self._healthy = True
        self._failed_probes = 0

    def _mark_down(self) -> None:
        if self._healthy:
            self._log.warning("destination_down", destination=self.cfg.name, error=self.last_error)
        self._healthy = False
        self._failed_probes += 1
        wait = retry.backoff(self._failed_probes, PROBE_BASE_S, PROBE_CAP_S, self._rng)
        self._next_probe = self.worker.clock() + wait

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
            "queued": self.worker.queued,
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
        """Send what is queued within `timeout_s` (all destinations at once), spool the rest, close."""
        await asyncio.gather(*(d.stop(d.worker.clock() + timeout_s) for d in self.destinations.values()))

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
