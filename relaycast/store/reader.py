"""Reads for the analytics API, on a small pool of threads with one connection each, so a slow query never
blocks the event loop and never waits behind the writer (SQLite in WAL mode reads while it writes)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from relaycast.store.db import Connection, is_transient
from relaycast.store.settings import StoreConfig

T = TypeVar("T")


class StoreReader:
    def __init__(self, cfg: StoreConfig, threads: int = 2) -> None:
        self.cfg = cfg
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="relaycast-store-read")
        self._local = threading.local()
        self._conns: list[Connection] = []
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, fn, args)

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = Connection(self.cfg)
            with self._lock:
                self._conns.append(conn)
        try:
            return fn(conn, *args)
        except Exception as e:
            if is_transient(e):  # a broken connection: open a new one next time
                conn.close()
                self._local.conn = None
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
