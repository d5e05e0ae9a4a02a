"""Stored responses of the Responses API in the store (`stored_responses`), behind the host's memory of them
(`relaycast.server.stored_responses.ResponseStore`): written and deleted in batches off the request path, on a
thread and connection of their own; read when the memory does not hold an id (after a restart, or once the memory
let it go). Kept as long as requests are (`store.retention_days`); never with `store.privacy_mode`.
"""

from __future__ import annotations

import collections
import random
from typing import Any

from relaycast import retry
from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.store.db import Connection, StoreThreads, is_db_error
from relaycast.store.settings import StoreConfig
from relaycast.worker import BatchPolicy, BatchWorker, RetryLater

QUEUE = 1024  # writes waiting, at most (the oldest is dropped beyond, counted)
QUEUE_BYTES = 64 * 1024 * 1024  # their bytes, at most (a write beyond is dropped, counted)
BATCH = 64
BATCH_BYTES = 8 * 1024 * 1024
INTERVAL_S = 0.2
MAX_TRIES = 8  # a batch the store keeps refusing is dropped after this many (counted)
READ_TIMEOUT_S = 2.0

Op = tuple[str, int, bytes | None]  # (id, ts_ms, the entry as JSON; None: delete)


def _size(op: Op) -> int:
    return 64 + (len(op[2]) if op[2] is not None else 0)


def _write(conn: Connection, ops: list[Op]) -> None:
    with conn.transaction():
        for rid, ts_ms, body in ops:
            conn.execute("DELETE FROM stored_responses WHERE id = ?", (rid,))
            if body is not None:
                conn.execute(
                    "INSERT INTO stored_responses (id, ts_ms, body) VALUES (?, ?, ?)", (rid, ts_ms, body.decode())
                )


def _read(conn: Connection, rid: str) -> bytes | None:
    found = conn.query("SELECT body FROM stored_responses WHERE id = ?", (rid,))
    return str(found[0][0]).encode() if found else None


class ResponseTable:
    def __init__(self, cfg: StoreConfig, redactor: Redactor, log: EventLog) -> None:
        self._redactor = redactor
        self._log = log
        self._cfg = cfg
        # Two threads: a read waits behind at most one batch being written.
        self._thread = StoreThreads("responses", 2, lambda: Connection(cfg, cfg.write_timeout_s), max_waiting=8)
        policy = BatchPolicy(max_queue=QUEUE, max_batch=BATCH, interval_s=INTERVAL_S, max_batch_bytes=BATCH_BYTES)
        self._worker: BatchWorker[Op] = BatchWorker("responses", self._export, policy, size=_size)
        self._tries = 0
        self._rng = random.Random()
        self.written = 0
        self.dropped: collections.Counter[str] = self._worker.dropped  # queue_full, refused, shutdown_deadline
        self.last_error: str | None = None

    def start(self) -> None:
        self._worker.start()

    async def stop(self, timeout_s: float) -> None:
        left = await self._worker.stop(self._worker.clock() + timeout_s)
        if left:
            self._worker.drop("shutdown_deadline", len(left))
        await self._thread.close(1.0)

    def put(self, rid: str, ts_ms: int, body: bytes) -> None:
        if self._worker.queued_bytes + len(body) > QUEUE_BYTES:
            self._worker.drop("queue_full")
            return
        self._worker.put((rid, ts_ms, body))

    def delete(self, rid: str, ts_ms: int) -> None:
        self._worker.put((rid, ts_ms, None))

    async def get(self, rid: str) -> bytes | None:
        """The stored entry, or None (also when the store cannot be read now: logged, never raised)."""
        try:
            found: bytes | None = await self._thread.call(_read, rid, timeout_s=READ_TIMEOUT_S)
        except Exception as e:
            if not is_db_error(e):
                raise
            self._error(e)
            return None
        return found

    def status(self) -> dict[str, Any]:
        return {"written": self.written, "queued": self._worker.queued, "dropped": dict(self.dropped)}

    async def _export(self, ops: list[Op]) -> None:
        try:
            await self._thread.call(_write, ops, timeout_s=self._cfg.write_timeout_s)
        except Exception as e:
            if not is_db_error(e):
                raise
            self._error(e)
            self._tries += 1
            if self._tries >= MAX_TRIES or self._worker.stopping:
                self._tries = 0
                self._worker.drop("refused", len(ops))
                return
            raise RetryLater(retry.backoff(self._tries, 0.2, 5.0, self._rng)) from e
        self._tries = 0
        self.written += len(ops)

    def _error(self, e: BaseException) -> None:
        msg = self._redactor.scrub(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:300]
        if msg != self.last_error:
            self._log.error("stored_responses_unavailable", error=msg)
        self.last_error = msg
