"""Reads for the analytics API, the keys API, monitors and budgets, on a small pool of the store's own threads
with one connection each, so a slow query never blocks the event loop and never waits behind the writer (SQLite
in WAL mode reads while it writes).

Each read waits at most `store.read_timeout_s`, queueing included, which is also the server's statement timeout
on these connections: a store that hangs makes reads fail with `StoreTimeout` (503 `store_unavailable` in the
APIs), never hang."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from relaycast.store.db import Connection, StoreThreads
from relaycast.store.settings import StoreConfig

T = TypeVar("T")
MAX_WAITING = 64  # reads queued behind busy threads; more are refused at once


class StoreReader:
    def __init__(self, cfg: StoreConfig, threads: int = 2) -> None:
        self.cfg = cfg
        self._threads = StoreThreads("read", threads, lambda: Connection(cfg, cfg.read_timeout_s), MAX_WAITING)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(conn, *args)` on a reader thread, within `store.read_timeout_s`."""
        return await self._threads.call(fn, *args, timeout_s=self.cfg.read_timeout_s)

    async def close(self, timeout_s: float = 1.0) -> None:
        """Fail what waits, abort what runs, and close the connections within `timeout_s`."""
        await self._threads.close(timeout_s)
