"""The store as a telemetry sink: records queue in memory and are written in batches, off the request path.

Calling the writer is O(1) and never raises: it puts the record on a `BatchWorker` (a full queue drops the oldest
record and counts it). The worker hands each batch to the store's one writer thread, which builds the rows and
commits them with the rollups in one transaction, within `store.write_timeout_s` (past it the write is abandoned,
its connection aborted, and the batch retried). A database that is down, hung or unreachable (Postgres
restarting, a black-holed proxy, a locked SQLite file) keeps the batch queued and is retried with jittered
backoff; nothing is lost unless the queue overflows, and that is counted. Row encoding is total (`rows`), so the
database refusing a batch should not happen; if it does, the batch is written record by record, and a record
refused even alone is written as a minimal row (ids, status, tokens, cost and its rollups) and counted as
`minimal`; one refused even so is counted as `rejected`. Retention deletes old rows hourly (and per-minute
rollups past `MINUTE_RETENTION_S`).

On shutdown the queue is written until the deadline, and a write that fails is not tried again (another try could
cost a whole timeout); what the database did not take is counted as `shutdown_deadline` and logged. The writer
thread is a daemon and its connection is aborted at the end, so a hung store never holds up the exit.
"""

from __future__ import annotations

import collections
import math
import random
import time
from collections.abc import Callable
from typing import Any

from relaycast import retry
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.store import rows as rows_mod
from relaycast.store.db import Connection, StoreThreads, is_db_error, is_transient
from relaycast.store.schema import (
    ATTEMPT_COLUMNS,
    ATTEMPT_KEYS,
    LATENCY_KEYS,
    MINUTE_RETENTION_S,
    REQUEST_COLUMNS,
    USAGE_DIMS,
    USAGE_KEYS,
    USAGE_SUMS,
    minute_keys,
    upsert_sql,
)
from relaycast.store.settings import StoreConfig
from relaycast.worker import BatchPolicy, BatchWorker, RetryLater

RETENTION_EVERY_S = 3600.0
BUILD_SLICE = 16  # records per slice of row building (about 0.3 ms of Python) before the GIL is offered back
BACKOFF_BASE_S = 0.5  # a database that is down: retried after 0.5 s doubling, jittered, at most 30 s
MAX_BACKOFF_S = 30.0
RETENTION_TIMEOUT_FACTOR = 10  # retention's deletes may take this many write timeouts (server and client side)
CLOSE_S = 1.0  # at shutdown, after the deadline: the writer thread's time to close its connection

_UPSERT_USAGE = upsert_sql("usage_hourly", USAGE_KEYS, USAGE_SUMS)
_UPSERT_OUTCOME = upsert_sql("attempts_hourly", ATTEMPT_KEYS, ("n",))
_UPSERT_LATENCY = upsert_sql("latency_hourly", LATENCY_KEYS, ("n",))
_UPSERT_USAGE_MINUTE = upsert_sql("usage_minute", minute_keys(USAGE_KEYS), USAGE_SUMS)
_UPSERT_OUTCOME_MINUTE = upsert_sql("attempts_minute", minute_keys(ATTEMPT_KEYS), ("n",))
_UPSERT_LATENCY_MINUTE = upsert_sql("latency_minute", minute_keys(LATENCY_KEYS), ("n",))


def write_batch(conn: Connection, batch: rows_mod.Batch) -> None:
    with conn.transaction():
        conn.insert("requests", REQUEST_COLUMNS, batch.requests)
        conn.insert("attempts", ATTEMPT_COLUMNS, batch.attempts)
        conn.executemany(_UPSERT_USAGE, batch.usage_rows())
        conn.executemany(_UPSERT_USAGE_MINUTE, batch.usage_minute_rows())
        if batch.outcomes:
            conn.executemany(_UPSERT_OUTCOME, batch.outcome_rows())
            conn.executemany(_UPSERT_OUTCOME_MINUTE, batch.outcome_minute_rows())
        if batch.latency:
            conn.executemany(_UPSERT_LATENCY, batch.latency_rows())
            conn.executemany(_UPSERT_LATENCY_MINUTE, batch.latency_minute_rows())


def delete_older_than(
    conn: Connection, cutoff_ms: int, statement_timeout_s: float | None = None, now_ms: int | None = None
) -> int:
    """Delete rows older than `cutoff_ms`, and per-minute rollups older than MINUTE_RETENTION_S before `now_ms`
    (default: the cutoff's). Returns the number of requests deleted."""
    hour = cutoff_ms // 3_600_000 * 3600
    minute = max(cutoff_ms // 1000, (now_ms if now_ms is not None else cutoff_ms) // 1000 - MINUTE_RETENTION_S)
    with conn.transaction(statement_timeout_s):
        n = conn.execute("DELETE FROM requests WHERE ts_ms < ?", (cutoff_ms,))
        conn.execute("DELETE FROM attempts WHERE ts_ms < ?", (cutoff_ms,))
        conn.execute("DELETE FROM stored_responses WHERE ts_ms < ?", (cutoff_ms,))
        for table in ("attempts_hourly", "latency_hourly"):
            conn.execute(f"DELETE FROM {table} WHERE hour < ?", (hour,))
        for table in ("attempts_minute", "latency_minute"):
            conn.execute(f"DELETE FROM {table} WHERE minute < ?", (minute,))
        # The usage rollups' keys begin with the dimension: one dimension at a time, each delete is a range of the
        # primary key instead of a scan of the table.
        for dim in USAGE_DIMS:
            conn.execute("DELETE FROM usage_hourly WHERE dim = ? AND hour < ?", (dim, hour))
            conn.execute("DELETE FROM usage_minute WHERE dim = ? AND minute < ?", (dim, minute))
    return max(n, 0)


class StoreWriter:
    def __init__(
        self,
        cfg: StoreConfig,
        redactor: Redactor,
        log: EventLog,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self._redactor = redactor
        self._log = log
        self._clock = clock
        self._rng = rng or random.Random()
        self._worker: BatchWorker[RequestRecord] = BatchWorker(
            "store",
            self._export,
            BatchPolicy(max_queue=cfg.queue_size, max_batch=cfg.batch_size, interval_s=cfg.flush_interval_s),
            idle=self._retention,
            on_error=self._failed,
        )
        self._thread = StoreThreads(
            "write", 1, lambda: Connection(cfg, cfg.write_timeout_s), max_waiting=4, setup=self._migrate
        )
        self._failed_writes = 0  # in a row: the backoff's attempt number
        self._next_retention = 0.0
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.deleted = 0
        self.minimal = 0  # records written as a minimal row: the database refused the whole one
        self.dropped: collections.Counter[str] = self._worker.dropped  # queue_full, rejected, shutdown_deadline
        self.last_error: str | None = None
        self.schema_version: int | None = None

    # --- the request side ---------------------------------------------------------------------

    def __call__(self, record: RequestRecord) -> None:
        self._worker.put(record)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and apply migrations. A database that is down is retried by the worker, not fatal."""
        try:
            await self._call(_opened)
        except Exception as e:
            if not is_db_error(e):
                raise
            self._failed(e)
        self._worker.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is queued until `timeout_s` from now, then give up: what is left is counted as
        `shutdown_deadline`, and the writer thread gets CLOSE_S more to close its connection (a daemon, it never
        holds up the exit)."""
        began = time.monotonic()
        written = self.written
        left = await self._worker.stop(self._worker.clock() + timeout_s)
        if left:
            self._worker.drop("shutdown_deadline", len(left))
        stuck = await self._thread.close(CLOSE_S)
        fields: dict[str, Any] = {
            "written": self.written - written,
            "dropped": len(left),
            "reason": "shutdown_deadline" if left else None,
            "error": (self.last_error or "still writing at the deadline") if left else None,
            "thread_left_running": stuck or None,
            "seconds": round(time.monotonic() - began, 3),
        }
        if left:
            self._log.warning("store_stopped", **fields)
        else:
            self._log.info("store_stopped", **fields)

    def status(self) -> dict[str, Any]:
        return {
            "store": self.cfg.display(),
            "schema_version": self.schema_version,
            "written": self.written,
            "batches": self.batches,
            "queued": self._worker.queued,
            "failures": self.failures,
            "minimal": self.minimal,
            "dropped": dict(self.dropped),
            "deleted_by_retention": self.deleted,
            "last_error": self.last_error,
        }

    async def flush(self) -> None:
        """Write everything queued now (tests, the report command, shutdown)."""
        await self._worker.flush()

    # --- the worker's export and idle step ------------------------------------------------------

    async def _export(self, records: list[RequestRecord]) -> None:
        try:
            try:
                await self._call(self._write, records)
            except Exception as e:
                if is_transient(e):
                    raise
                # The database refused some record (not a transient failure): write them one by one, each one it
                # refuses again as a minimal row, and count what even that could not save.
                written, minimal, rejected = await self._write_each(records)
                self.written += written
                self.minimal += minimal
                if rejected:
                    self._worker.drop("rejected", rejected)
                self._log.error(
                    "store_rejected_records",
                    minimal=minimal,
                    rejected=rejected,
                    error=type(e).__name__,
                    message=self._redactor.scrub(str(e))[:200],  # scrubbed whole: a cut secret would not match
                )
                return
        except Exception as e:
            if not is_transient(e):
                raise
            self._failed(e)
            self._failed_writes += 1
            if self._worker.stopping:
                raise RetryLater(math.inf) from e  # shutting down: not tried again, stop() counts what is left
            raise RetryLater(retry.backoff(self._failed_writes, BACKOFF_BASE_S, MAX_BACKOFF_S, self._rng)) from e
        self._failed_writes = 0
        self.written += len(records)
        self.batches += 1

    async def _retention(self) -> None:
        now = self._clock()
        if now < self._next_retention:
            return
        self._next_retention = now + RETENTION_EVERY_S
        cutoff_ms = int((now - self.cfg.retention_days * 86400) * 1000)
        timeout_s = self.cfg.write_timeout_s * RETENTION_TIMEOUT_FACTOR
        try:
            self.deleted += await self._call(
                delete_older_than, cutoff_ms, timeout_s, int(now * 1000), timeout_s=timeout_s
            )
        except Exception as e:
            if not is_db_error(e):
                raise
            self._failed(e)
            self._next_retention = now + 60

    def _failed(self, e: BaseException) -> None:
        self.failures += 1
        msg = self._redactor.scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:300]
        if msg != self.last_error:
            self._log.error("store_unavailable", store=self.cfg.display(), error=msg)
        self.last_error = msg

    async def _call(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        return await self._thread.call(fn, *args, timeout_s=timeout_s or self.cfg.write_timeout_s)

    async def _write_each(self, records: list[RequestRecord]) -> tuple[int, int, int]:
        """(written, of them written as a minimal row, rejected): each record in its own call and transaction."""
        ok = minimal = bad = 0
        for rec in records:
            for least in (False, True):
                try:
                    await self._call(self._write, [rec], least)
                except Exception as e:
                    if is_transient(e):
                        raise
                    continue
                ok += 1
                minimal += least
                break
            else:
                bad += 1
        return ok, minimal, bad

    # --- on the writer thread -----------------------------------------------------------------

    def _migrate(self, conn: Connection) -> None:
        self.schema_version = conn.migrate()
        self.last_error = None

    def _write(self, conn: Connection, records: list[RequestRecord], minimal: bool = False) -> None:
        # Rows are built in slices, giving the GIL back between them: this thread must never hold the event loop
        # up for more than a fraction of a millisecond (a whole batch at once stalled requests for milliseconds).
        batch = rows_mod.Batch()
        randbits = self._rng.getrandbits
        for i in range(0, len(records), BUILD_SLICE):
            for rec in records[i : i + BUILD_SLICE]:
                rows_mod.add(batch, rec, self._redactor, self.cfg.privacy_mode, minimal, randbits)
            time.sleep(0)
        write_batch(conn, batch)


def _opened(conn: Connection) -> None:
    """Nothing: the writer thread opens its connection (and migrates) before running a call."""
