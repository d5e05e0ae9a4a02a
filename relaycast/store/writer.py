"""The store as a telemetry sink: records queue in memory and are written in batches, off the request path.

Calling the writer is O(1) and never raises: it puts the record on a `BatchWorker` (a full queue drops the oldest
record and counts it). The worker hands each batch to the store's one writer thread, which builds the rows and
commits them with the rollups in one transaction. A database that is down (Postgres restarting, a locked SQLite
file) keeps the batch queued and is retried with jittered backoff; nothing is lost unless the queue overflows,
and that is counted. Row encoding is total (`rows`), so the database refusing a batch should not happen; if it
does, the batch is written record by record, and a record refused even alone is written as a minimal row (ids,
status, tokens, cost and its rollups) and counted as `minimal`; one refused even so is counted as `rejected`.
Retention deletes old rows hourly. On shutdown the queue is flushed within the deadline; what the database did not
take by then is counted as `shutdown` and logged.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from relaycast import retry
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.store import rows as rows_mod
from relaycast.store.db import Connection, is_db_error, is_transient
from relaycast.store.schema import (
    ATTEMPT_COLUMNS,
    ATTEMPT_KEYS,
    LATENCY_KEYS,
    REQUEST_COLUMNS,
    USAGE_KEYS,
    USAGE_SUMS,
    upsert_sql,
)
from relaycast.store.settings import StoreConfig
from relaycast.worker import BatchPolicy, BatchWorker, RetryLater

RETENTION_EVERY_S = 3600.0
BUILD_SLICE = 16  # records per slice of row building (about 0.3 ms of Python) before the GIL is offered back
BACKOFF_BASE_S = 0.5  # a database that is down: retried after 0.5 s doubling, jittered, at most 30 s
MAX_BACKOFF_S = 30.0

_UPSERT_USAGE = upsert_sql("usage_hourly", USAGE_KEYS, USAGE_SUMS)
_UPSERT_OUTCOME = upsert_sql("attempts_hourly", ATTEMPT_KEYS, ("n",))
_UPSERT_LATENCY = upsert_sql("latency_hourly", LATENCY_KEYS, ("n",))


def write_batch(conn: Connection, batch: rows_mod.Batch) -> None:
    with conn.transaction():
        conn.insert("requests", REQUEST_COLUMNS, batch.requests)
        conn.insert("attempts", ATTEMPT_COLUMNS, batch.attempts)
        conn.executemany(_UPSERT_USAGE, batch.usage_rows())
        if batch.outcomes:
            conn.executemany(_UPSERT_OUTCOME, batch.outcome_rows())
        if batch.latency:
            conn.executemany(_UPSERT_LATENCY, batch.latency_rows())


def delete_older_than(conn: Connection, cutoff_ms: int) -> int:
    hour = cutoff_ms // 3_600_000 * 3600
    with conn.transaction():
        n = conn.execute("DELETE FROM requests WHERE ts_ms < ?", (cutoff_ms,))
        conn.execute("DELETE FROM attempts WHERE ts_ms < ?", (cutoff_ms,))
        for table in ("usage_hourly", "attempts_hourly", "latency_hourly"):
            conn.execute(f"DELETE FROM {table} WHERE hour < ?", (hour,))
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
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="relaycast-store-write")
        self._conn: Connection | None = None  # touched only on the writer thread
        self._failed_writes = 0  # in a row: the backoff's attempt number
        self._next_retention = 0.0
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.deleted = 0
        self.minimal = 0  # records written as a minimal row: the database refused the whole one
        self.dropped: collections.Counter[str] = self._worker.dropped  # queue_full, rejected, shutdown
        self.last_error: str | None = None
        self.schema_version: int | None = None

    # --- the request side ---------------------------------------------------------------------

    def __call__(self, record: RequestRecord) -> None:
        self._worker.put(record)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and apply migrations. A database that is down is retried by the worker, not fatal."""
        try:
            await self._in_thread(self._ensure_open)
        except Exception as e:
            if not is_db_error(e):
                raise
            self._failed(e)
        self._worker.start()

    async def stop(self, timeout_s: float = 10.0) -> None:
        left = await self._worker.stop(self._worker.clock() + timeout_s)
        if left:
            self._worker.drop("shutdown", len(left))
            self._log.warning("store_records_lost_at_shutdown", count=len(left), error=self.last_error or "-")
        await self._in_thread(self._close)
        self._pool.shutdown(wait=True)

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
                await self._in_thread(self._write, records)
            except Exception as e:
                if is_transient(e):
                    raise
                # The database refused some record (not a transient failure): write them one by one, each one it
                # refuses again as a minimal row, and count what even that could not save.
                written, minimal, rejected = await self._in_thread(self._write_each, records)
                self.written += written
                self.minimal += minimal
                if rejected:
                    self._worker.drop("rejected", rejected)
                self._log.error(
                    "store_rejected_records",
                    minimal=minimal,
                    rejected=rejected,
                    error=type(e).__name__,
                    message=self._redactor.scrub(str(e)[:200]),
                )
                return
        except Exception as e:
            if not is_transient(e):
                raise
            self._failed(e)
            self._failed_writes += 1
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
        try:
            self.deleted += await self._in_thread(lambda: delete_older_than(self._ensure_open(), cutoff_ms))
        except Exception as e:
            if not is_db_error(e):
                raise
            self._failed(e)
            self._next_retention = now + 60

    def _failed(self, e: BaseException) -> None:
        self.failures += 1
        msg = self._redactor.scrub(str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__)
        if msg != self.last_error:
            self._log.error("store_unavailable", store=self.cfg.display(), error=msg)
        self.last_error = msg

    # --- on the writer thread -----------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _ensure_open(self) -> Connection:
        if self._conn is None:
            conn = Connection(self.cfg)
            try:
                self.schema_version = conn.migrate()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self.last_error = None
        return self._conn

    def _write(self, records: list[RequestRecord], minimal: bool = False) -> None:
        # Rows are built in slices, giving the GIL back between them: this thread must never hold the event loop
        # up for more than a fraction of a millisecond (a whole batch at once stalled requests for milliseconds).
        batch = rows_mod.Batch()
        for i in range(0, len(records), BUILD_SLICE):
            for rec in records[i : i + BUILD_SLICE]:
                rows_mod.add(batch, rec, self._redactor, self.cfg.privacy_mode, minimal)
            time.sleep(0)
        conn = self._ensure_open()
        try:
            write_batch(conn, batch)
        except BaseException:
            self._close()  # reconnect next time: the connection may be broken
            raise

    def _write_each(self, records: list[RequestRecord]) -> tuple[int, int, int]:
        """(written, of them written as a minimal row, rejected)."""
        ok = minimal = bad = 0
        for rec in records:
            for least in (False, True):
                try:
                    self._write([rec], least)
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

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
