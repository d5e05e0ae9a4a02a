"""The out-of-band broadcast pipeline: one `BatchWorker` per destination, shaped like OpenTelemetry's batch span
processor.

`Broadcaster` is a record sink: calling it is O(1) per destination, never blocks and never raises. Each
destination has its own bounded queue and its own worker, so a slow or dead destination delays neither the
request nor another destination. A worker encodes a batch (at most `max_batch_records` records, split into request
bodies of at most the exporter's `max_batch_bytes`) when it is full or when the flush interval passes; retries only
what can succeed (`relaycast.retry`: 408, 429, 5xx, connection errors; OTLP narrows it) with jittered exponential
backoff honouring Retry-After; and spools what still fails to disk. A destination that failed is marked down: its
batches go straight to the spool, and a timer probes it with the oldest spooled batch. The spool is replayed oldest
first after each cycle of live exports, at least one batch and then while no full live batch waits, for at most
half a flush interval: live records keep flowing and the backlog drains under any load.

One overflow policy per destination (`overflow`) rules both the queue and the spool: `drop_oldest` (the default)
or `drop_newest`. Every record offered is, at any moment, exactly one of: queued, being exported, sent, on disk
in the spool, or counted in `dropped` under a reason. Counts are in records whatever the destination's wire
format (a Datadog record is several spans).

Shutdown (`stop`): no more records are taken; a destination known to be down is not tried again (its batches go
straight to the spool); retries and replays stop at once; the queue is sent until the deadline, and then the
batch in flight (cancelled) and everything left are spooled in one go. One log line per destination says what the
shutdown delivered, spooled and dropped.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import logging
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiohttp

from relaycast import retry
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import Exporter, ExportError, TestResult
from relaycast.telemetry.settings import BroadcastConfig, DestinationConfig
from relaycast.telemetry.spool import Put, Spool, SpoolEntry
from relaycast.worker import BatchPolicy, BatchWorker, Overflow, Sleep
from relaycast.worker import Clock as Timer

Clock = Callable[[], int]  # unix ns

RETRY_BASE_S = 0.2  # a batch's retries: 0.2 s doubling, jittered, at most 10 s (or what Retry-After asks, <= 60 s)
RETRY_CAP_S = 10.0
PROBE_BASE_S = 1.0  # a destination that is down is probed 1 s after, doubling to 30 s
PROBE_CAP_S = 30.0
REPLAY_PER_WAKE = 100  # spooled batches replayed per cycle, at most
REPLAY_SHARE = 0.5  # of a flush interval: replay gives way to live records after this long in one cycle
# A batch of a thousand records encodes for ~20 ms; everything else the telemetry process does (a worker's
# admission query, /metrics) would wait for it. The event loop gets a turn once ENCODE_TURN_S of encoding has passed
# (looked at every ENCODE_CHECK records). A turn per few dozen records instead cost ~15 µs more per record, the
# workers' records being read in small pieces between them.
ENCODE_TURN_S = 0.002
ENCODE_CHECK = 16
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Every reason a destination counts, for /metrics to show at 0 before the first drop.
DROP_REASONS = (
    "queue_full",
    "spool_full",
    "disk_full",
    "spool_error",
    "rejected",
    "too_old",
    "too_large",
    "encode_error",
    "export_failed",
    "shutdown_deadline",
    "after_stop",
    "internal_error",
)


@dataclass(frozen=True, slots=True)
class _Chunk:
    """One request body's worth of a batch: its items, its oldest record's unix ns, the records of the batch it
    consumed (`taken`, dropped ones included) and the records its items carry (`kept`)."""

    items: list[bytes]
    oldest: int
    taken: int
    kept: int
    building: bool = False  # a body still being encoded (see Destination._chunks)

    def finished(self) -> _Chunk:
        return _Chunk(list(self.items), self.oldest, self.taken, self.kept)


class _Stopped(Exception):
    """A replay gave way to stop()."""


class HeapTrim:
    """Hands freed heap back to the OS, at most every `every_s`, in a thread. glibc keeps the pages of large freed
    buffers (request bodies of up to a few MiB, built per batch) for reuse, and under a long outage at a high rate
    they pile up: RSS creeps though nothing is held. `malloc_trim(0)` returns them. Linux glibc only; elsewhere (musl,
    macOS) calling it does nothing."""

    def __init__(self, every_s: float = 60.0, timer: Timer = time.monotonic) -> None:
        self._trim = _malloc_trim()
        self._every_s = every_s
        self._timer = timer
        self._next = timer() + every_s

    async def __call__(self) -> None:
        if self._trim is None or self._timer() < self._next:
            return
        self._next = self._timer() + self._every_s
        await asyncio.to_thread(self._trim, 0)


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own C library
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return cast("Callable[[int], int]", fn)


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
        timer: Timer = time.monotonic,
        trim: HeapTrim | None = None,
    ) -> None:
        """`clock`: unix ns, for record ages. `timer` and `sleep`: the worker's monotonic time (tests inject both).
        `trim`: run after each cycle (one is shared by a Broadcaster's destinations)."""
        self.cfg = cfg
        self.exporter = exporter
        self.spool = spool
        self._redactor = redactor
        self._log = log
        self._clock = clock
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._trim = trim
        self._drop_oldest = cfg.overflow == "drop_oldest"
        self.worker: BatchWorker[RequestRecord] = BatchWorker(
            f"broadcast-{cfg.name}",
            self._export,
            BatchPolicy(
                max_queue=cfg.queue_size,
                max_batch=cfg.max_batch_records,
                interval_s=cfg.flush_interval_s,
                overflow=Overflow.DROP_OLDEST if self._drop_oldest else Overflow.REFUSE,
            ),
            idle=self._idle,
            on_error=lambda e: self._error(f"internal: {type(e).__name__}: {e}"),
            clock=timer,
            sleep=sleep,
        )
        self.dropped = self.worker.dropped  # one counter by reason: the worker's (queue_full) and ours
        self._healthy = True
        self._next_probe = 0.0  # on the worker's clock
        self._failed_probes = 0
        self._stop_asked = asyncio.Event()
        self._handled = 0  # records of the batch being exported that were sent, spooled or dropped
        self._settled = False  # the body being delivered was sent, spooled or dropped
        self._spool_failing = False  # the last spool write failed (a full disk): logged once until one succeeds
        self._cut_short: int | None = None  # _handled when stop() cancelled an export
        self._pending: _Chunk | None = None  # the body stop() cancelled mid-delivery: spooled first
        self._include = frozenset(cfg.include_keys)
        self._exclude = frozenset(cfg.exclude_keys)
        self.sent = 0  # records delivered, replayed ones included
        self.replayed = 0  # records delivered from the spool
        self.spooled = 0  # records written to the spool
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
        """Stop taking records, send what is queued until `deadline` (on the worker's clock), spool the rest, and log
        what the shutdown delivered, spooled and dropped."""
        self._stop_asked.set()  # replays and retry waits give way now
        before = (self.sent, self.spooled, sum(self.dropped.values()))
        left = await self.worker.stop(deadline)
        pending, self._pending = self._pending, None
        if self._cut_short is not None:  # the in-flight batch comes back first; its first records were handled
            left = left[self._cut_short :]
            self._cut_short = None
        try:
            await self._spool_left(pending, left)
        finally:
            self._stopped(before)
        await self.exporter.close()

    async def _spool_left(self, pending: _Chunk | None, left: list[RequestRecord]) -> None:
        """Spool what the worker handed back, all at once. Cancelled (the gateway's own shutdown bound passed),
        what is not on disk yet is counted as `shutdown_deadline`."""
        current = pending
        unread = len(left)  # records of `left` not yet encoded into a body
        try:
            if pending is not None and pending.items:
                self._settled = False
                await self._to_spool(pending, without_spool="shutdown_deadline")
            for chunk in self._chunks(left):
                current = chunk
                unread -= chunk.taken
                self._settled = False
                if chunk.items:
                    await self._to_spool(chunk, without_spool="shutdown_deadline")
        except asyncio.CancelledError:
            lost = unread + (current.kept if current is not None and not self._settled else 0)
            self.worker.drop("shutdown_deadline", lost)
            raise

    def _stopped(self, before: tuple[int, int, int]) -> None:
        self._log.event(
            logging.INFO if sum(self.dropped.values()) == before[2] else logging.WARNING,
            "broadcast_stopped",
            destination=self.cfg.name,
            healthy=self._healthy,
            delivered=self.sent - before[0],
            spooled=self.spooled - before[1],
            dropped=sum(self.dropped.values()) - before[2],
            spool_batches=self.spool.batches if self.spool else 0,
        )

    async def flush(self) -> None:
        """Send everything queued now (tests, Test Connection, shutdown)."""
        await self.worker.flush()

    # --- the worker's export and idle step ----------------------------------------------------------

    async def _export(self, records: list[RequestRecord]) -> None:
        self._handled = 0
        self._cut_short = None
        self._pending = None
        for chunk in self._chunks(records, ENCODE_CHECK, ENCODE_TURN_S):
            if chunk.building:  # a slice of records encoded: the event loop's turn
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    # stop() passed its deadline: what is encoded goes to the spool as one body, the rest after it
                    partial = chunk.finished()
                    self._settled = False
                    self._pending = partial
                    self._cut_short = self._handled + partial.taken
                    raise
                continue
            self._settled = False
            try:
                if chunk.items:
                    await self._deliver(chunk)
            except asyncio.CancelledError:
                # stop() passed its deadline: this body goes to the spool as it is, the rest of the batch after it
                if not self._settled:
                    self._pending = chunk
                self._cut_short = self._handled + chunk.taken
                raise
            except Exception as e:  # noqa: BLE001 - a bug here must not lose records uncounted
                if not self._settled:
                    self.worker.drop("internal_error", chunk.kept)
                self._error(f"internal: {type(e).__name__}: {e}")
            self._handled += chunk.taken

    def _chunks(self, records: Iterable[RequestRecord], check_every: int = 0, turn_s: float = 0.0) -> Iterator[_Chunk]:
        """The records encoded as request bodies (at most the exporter's max_batch_bytes each). Too old,
        unencodable and oversized records are counted and left out. With `check_every`, also, once `turn_s` of
        encoding has passed (looked at every that many records), the body so far, marked `building` (its records
        are encoded: the caller may give the event loop a turn)."""
        exp = self.exporter
        encode, scrub = exp.encode, self._redactor.scrub_known  # per record: looked up once per batch instead
        privacy, tags = self.cfg.privacy_mode, self.cfg.tags
        limit = exp.max_batch_bytes
        max_age_ns = int(exp.max_age_s * 1e9) if exp.max_age_s else None
        now = self._clock()
        items: list[bytes] = []
        size = oldest = taken = kept = 0
        since = time.perf_counter()
        for n, rec in enumerate(records, 1):
            if check_every and n % check_every == 0 and taken and time.perf_counter() - since >= turn_s:
                yield _Chunk(items, oldest, taken, kept, building=True)
                since = time.perf_counter()
            taken += 1
            started = rec.started_unix_ns
            if max_age_ns is not None and now - started > max_age_ns:
                self.worker.drop("too_old")
                continue
            try:
                encoded = [scrub(it) for it in encode(rec, privacy, tags)]
            except Exception as e:  # noqa: BLE001 - one bad record must not stop the destination
                self.worker.drop("encode_error")
                self._error(f"encode failed: {type(e).__name__}")
                continue
            rsize = biggest = 0
            for it in encoded:
                k = len(it)
                rsize += k
                if k > biggest:
                    biggest = k
            if biggest > limit:
                self.worker.drop("too_large")  # the whole record: never half a trace
                continue
            if items and size + rsize > limit:
                yield _Chunk(items, oldest, taken - 1, kept)  # this record starts the next body
                items, size, oldest, taken, kept = [], 0, 0, 1, 0
            items += encoded
            size += rsize
            kept += 1
            if not oldest or started < oldest:
                oldest = started
        if taken:
            yield _Chunk(items, oldest, taken, kept)

    async def _deliver(self, chunk: _Chunk) -> None:
        stopping = self.worker.stopping
        probe = False
        if not self._healthy:
            # Known down: no retries, and none at all during shutdown. The timer probes with the oldest spooled
            # batch; with nothing spooled to probe with (no spool, a full disk), this batch is the probe once due.
            spooled = self.spool is not None and self.spool.batches > 0
            if spooled or stopping or self.worker.clock() < self._next_probe:
                await self._to_spool(chunk)
                return
            probe = True
        max_retries = 0 if probe or stopping else self.cfg.max_retries
        attempt = 0
        while True:
            try:
                await self.exporter.send(chunk.items)
            except ExportError as e:
                will_retry = e.retryable and attempt < max_retries and not self._stop_asked.is_set()
                self._error(e.message, status=e.status, will_retry=will_retry)
                if not e.retryable:
                    self.worker.drop("rejected", chunk.kept)
                    self._settled = True
                    return
                if not will_retry:
                    self._mark_down()
                    await self._to_spool(chunk)
                    return
                attempt += 1
                self.retries += 1
                delay = retry.retry_delay(attempt, RETRY_BASE_S, RETRY_CAP_S, self._rng, e.retry_after)
                if not await self._pause(delay):  # stop() was asked meanwhile: no more tries
                    self._mark_down()
                    await self._to_spool(chunk)
                    return
            else:
                self._success(chunk.kept)
                self._settled = True
                return

    async def _idle(self) -> None:
        await self._replay()
        if self._trim is not None:
            await self._trim()

    async def _replay(self) -> None:
        """The idle step, after every cycle of live exports: send spooled batches, oldest first. At least one, then
        more while no full live batch waits, for at most REPLAY_SHARE of a flush interval. A destination that is
        down is probed with the oldest batch when its timer is due (the worker wakes for it)."""
        spool = self.spool
        if spool is None or spool.batches == 0 or self._stop_asked.is_set():
            return
        if not self._healthy and self.worker.clock() < self._next_probe:
            self.worker.wake_at(self._next_probe)
            return
        started = self.worker.clock()
        for i in range(REPLAY_PER_WAKE):
            entry = spool.oldest()
            if entry is None or self._stop_asked.is_set():
                return
            if i and (self.worker.ready or self.worker.clock() - started >= REPLAY_SHARE * self.cfg.flush_interval_s):
                self.worker.wake_at(self.worker.clock())  # more to replay: come back soon
                return
            if not await self._replay_one(entry):
                return
        if spool.batches:
            self.worker.wake_at(self.worker.clock())

    async def _replay_one(self, entry: SpoolEntry) -> bool:
        """Send one spooled batch. Whether the replay may go on."""
        spool = self.spool
        assert spool is not None
        max_age_ns = int(self.exporter.max_age_s * 1e9) if self.exporter.max_age_s else None
        if max_age_ns is not None and self._clock() - entry.oldest_unix_ns > max_age_ns:
            self.worker.drop("too_old", entry.records)
            await asyncio.to_thread(spool.remove, entry)
            self._log.warning("spool_discarded", destination=self.cfg.name, records=entry.records, reason="too_old")
            return True
        try:
            items = await asyncio.to_thread(spool.read, entry)
        except OSError as e:
            self.worker.drop("spool_error", entry.records)
            await asyncio.to_thread(spool.remove, entry)
            self._error(f"cannot read the spool: {e.strerror or type(e).__name__}")
            return True
        try:
            await self._send_unless_stopped(items)
        except _Stopped:
            return False  # the batch stays spooled
        except ExportError as e:
            self._error(e.message, status=e.status, will_retry=e.retryable)
            if not e.retryable:
                self.worker.drop("rejected", entry.records)
                await asyncio.to_thread(spool.remove, entry)
                return True
            self._mark_down()
            return False
        await asyncio.to_thread(spool.remove, entry)
        self.replayed += entry.records
        self._success(entry.records)
        return True

    async def _send_unless_stopped(self, items: list[bytes]) -> None:
        """Send, but give way the moment stop() is asked (a spooled batch is safe where it is): raises _Stopped."""
        send = asyncio.ensure_future(self.exporter.send(items))
        stop = asyncio.ensure_future(self._stop_asked.wait())
        try:
            await asyncio.wait((send, stop), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            send.cancel()
            stop.cancel()
            raise
        stop.cancel()
        if not send.done():
            send.cancel()
            await asyncio.wait((send,))  # let the cancelled send close its connection
            raise _Stopped
        send.result()

    async def _pause(self, seconds: float) -> bool:
        """Sleep `seconds` (the injected sleep), or less when stop() is asked. False when it was."""
        if self._stop_asked.is_set():
            return False
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        stop = asyncio.ensure_future(self._stop_asked.wait())
        try:
            await asyncio.wait((sleeper, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stop.cancel()
        return not self._stop_asked.is_set()

    async def _to_spool(self, chunk: _Chunk, without_spool: str = "export_failed") -> None:
        """Spool a body that was not delivered, or count its records as dropped; either way it is settled."""
        spool = self.spool
        if spool is None:
            self.worker.drop(without_spool, chunk.kept)
            self._settled = True
            return
        size = spool.size_of(chunk.items)
        if size > spool.max_bytes or (not self._drop_oldest and not spool.fits(size)):
            self.worker.drop("spool_full", chunk.kept)  # known full: no thread, no disk
            self._settled = True
            return
        put = asyncio.ensure_future(
            asyncio.to_thread(spool.put, chunk.items, chunk.oldest, chunk.kept, evict=self._drop_oldest)
        )
        try:
            await asyncio.wait((put,))  # never cancels the write, never raises its error (counted below)
        except asyncio.CancelledError:
            # stop() passed its deadline during a local write: let it finish, so the body is stored (or counted)
            # exactly once, then give way. A second cancellation must not cut this wait short either: the body
            # would be spooled again from _pending while this write completes.
            while not put.done():
                try:
                    await asyncio.wait((put,))
                except asyncio.CancelledError:
                    continue
            self._count_put(put, chunk.kept)
            raise
        self._count_put(put, chunk.kept)

    def _count_put(self, put: asyncio.Future[Put], records: int) -> None:
        self._settled = True
        try:
            result = put.result()
        except OSError as e:
            # A full disk (or a read-only one): counted, and the next batch simply tries again. Logged once a spell.
            self.worker.drop("disk_full" if e.errno in DISK_FULL else "spool_error", records)
            self._error(f"cannot spool: {e.strerror or type(e).__name__}", quiet=self._spool_failing)
            self._spool_failing = True
            return
        if self._spool_failing:
            self._spool_failing = False
            self._log.info("spool_writable", destination=self.cfg.name)
        if result.evicted:
            self.worker.drop("spool_full", result.evicted)  # drop_oldest: older batches made room
        if result.stored:
            self.spooled += records
        else:
            self.worker.drop("spool_full", records)

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
        self.worker.wake_at(self._next_probe)

    def _error(self, message: str, quiet: bool = False, **fields: Any) -> None:
        self.last_error = self._redactor.scrub(message)
        self.last_error_at = time.time()
        if quiet:
            return
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
            "source": self.cfg.source,
            "healthy": self._healthy,
            "overflow": self.cfg.overflow,
            "queued": self.worker.queued,
            "in_flight": self.worker.in_flight,
            "sent": self.sent,
            "replayed": self.replayed,
            "batches_sent": self.batches_sent,
            "retries": self.retries,
            "spooled_batches": self.spool.batches if self.spool else 0,
            "spooled_records": self.spool.records if self.spool else 0,
            "spool_bytes": self.spool.bytes if self.spool else 0,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "sampled_out": self.sampled_out,
            "filtered_out": self.filtered_out,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
        }


class Broadcaster:
    """The record sink for every destination: the config's (fixed for the process's life) and the ones saved from
    the dashboard (`apply`, which adds, replaces and removes those while records flow)."""

    def __init__(
        self,
        config: BroadcastConfig,
        session: aiohttp.ClientSession,
        redactor: Redactor,
        log: EventLog,
        clock: Clock = time.time_ns,
        servers: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        """`servers`: each configured provider's host and port (`ProviderConfig.server`)."""
        self.destinations: dict[str, Destination] = {}
        self._spool_dir = config.spool_dir
        self._session = session
        self._redactor = redactor
        self._clock = clock
        self._servers = servers
        self._trim = HeapTrim()
        self._started = False
        self.saved: set[str] = set()  # the names `apply` manages
        self._retiring: set[asyncio.Future[Any]] = set()  # destinations `apply` is stopping
        self._log = log
        for d in config.destinations:
            if d.enabled:
                self.destinations[d.name] = self._build(d, f"{config.spool_dir}/{d.name}")

    def _build(self, d: DestinationConfig, spool_dir: str) -> Destination:
        spool = Spool(spool_dir, d.spool_max_bytes) if d.spool_max_bytes else None
        exporter = build(d, self._session, self._servers)
        return Destination(d, exporter, spool, self._redactor, self._log, self._clock, trim=self._trim)

    async def apply(
        self, wanted: Iterable[DestinationConfig], timeout_s: float = 5.0
    ) -> tuple[list[str], dict[str, str]]:
        """Make the saved destinations these (disabled ones left out): a new one starts; a changed one is replaced
        (the new one takes records at once, the old one sends what it holds within `timeout_s`); a removed one
        stops. A replaced or removed destination's spool is deleted once it stopped (its batches were made for
        settings that no longer exist), the records it held counted in the log. The config's destinations are never
        touched. Returns what changed, for the log, and the destinations that could not be built, with why."""
        want = {d.name: d for d in wanted if d.enabled and (d.name not in self.destinations or d.name in self.saved)}
        changes: list[str] = []
        failed: dict[str, str] = {}
        retired: list[Destination] = []
        for name in sorted(self.saved):
            d = self.destinations[name]
            if want.get(name) != d.cfg:
                del self.destinations[name]
                self.saved.discard(name)
                retired.append(d)
                changes.append(f"-{name}")
        for name, cfg in want.items():
            if name in self.destinations:
                continue
            # Its own spool per kind and settings: a batch spooled for one backend is never replayed to another.
            digest = hashlib.blake2b(repr(cfg).encode() + repr(cfg.secrets()).encode(), digest_size=6).hexdigest()
            try:
                dest = self._build(cfg, f"{self._spool_dir}/saved-{name}-{cfg.kind}-{digest}")
            except Exception as e:  # noqa: BLE001 - one destination that cannot be built leaves the others
                failed[name] = f"cannot be started: {type(e).__name__}: {str(e)[:200]}"
                continue
            self.destinations[name] = dest
            self.saved.add(name)
            if self._started:
                dest.start()
            changes.append(f"+{name}")
        if retired:
            # Stopped together, and to the end even if the caller is cancelled (stop() waits for them too).
            work = asyncio.ensure_future(asyncio.gather(*(self._retire(d, timeout_s) for d in retired)))
            self._retiring.add(work)
            work.add_done_callback(self._retiring.discard)
            await asyncio.shield(work)
        return changes, failed

    async def _retire(self, d: Destination, timeout_s: float) -> None:
        await d.stop(d.worker.clock() + timeout_s)
        if d.spool is not None:
            held = d.spool.records
            await asyncio.to_thread(shutil.rmtree, d.spool.directory, True)
            if held:
                self._log.warning("broadcast_destination_spool_discarded", destination=d.cfg.name, records=held)

    def __call__(self, record: RequestRecord) -> None:
        for d in self.destinations.values():
            d.offer(record)

    def start(self) -> None:
        self._started = True
        for d in self.destinations.values():
            d.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Send what is queued within `timeout_s` (all destinations at once), spool the rest, close."""
        await asyncio.gather(*(d.stop(d.worker.clock() + timeout_s) for d in self.destinations.values()))
        if self._retiring:  # destinations `apply` was replacing or removing
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

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
