"""A Postgres store that hangs never holds the gateway: SIGTERM completes within its deadline, saying what the
store did not take, and the analytics and keys APIs answer 503 within their read timeout instead of hanging.

Two kinds of hang, on this machine's Postgres (a database of its own per test):
- the network path: the store is reached through a TCP proxy on loopback that, stalled, forwards nothing either
  way while it keeps every socket open (a black-holed path: no reset, no keepalive failure, only silence);
- the server: another session holds `LOCK TABLE ... ACCESS EXCLUSIVE`, or a statement runs past its time, and the
  server's `lock_timeout` / `statement_timeout` end the wait.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.store import queries
from relaycast.store.db import Connection
from relaycast.store.reader import StoreReader
from relaycast.store.settings import StoreConfig
from relaycast.store.writer import StoreWriter
from tests.conftest import UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import admin_get, postgres_database
from tests.unit.test_store_units import _record

SHUTDOWN_DEADLINE_S = 3.0  # the gateway's flush deadline on SIGTERM (`server.flush_timeout`; 10 s by default)
MARGIN_S = 5.0  # its grace to close connections, and this machine's slowness


class StallProxy:
    """TCP on loopback to `target_port`: forwards both ways until `stall()`; stalled, it reads and sends nothing
    (new connections are accepted and left waiting too) and keeps every socket open until `close()`."""

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="stall-proxy", daemon=True).start()

    def stall(self) -> None:
        self._flowing.clear()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._listener.close()
        with self._lock:
            for s in self._socks:
                s.close()

    def _keep(self, s: socket.socket) -> None:
        with self._lock:
            self._socks.append(s)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._open, args=(client,), daemon=True).start()

    def _open(self, client: socket.socket) -> None:
        if not self._wait_flowing():
            return
        try:
            upstream = socket.create_connection(self._target)
        except OSError:
            client.close()
            return
        self._keep(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _wait_flowing(self) -> bool:
        while not self._flowing.wait(0.1):
            if self._closed.is_set():
                return False
        return not self._closed.is_set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while self._wait_flowing():
                data = src.recv(65536)
                if not data or not self._wait_flowing():
                    break
                dst.sendall(data)
        except OSError:
            pass
        if self._flowing.is_set():  # a peer closed while flowing: pass the close on
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def pg_url() -> Iterator[str]:
    gen = postgres_database()
    yield next(gen)
    gen.close()


class Load:
    """Chat completions from a few threads until `stop()`; answers counted, failures (a stopping gateway) too."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.answered = 0
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        body = orjson.dumps({"model": "fakeai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        while not self._stop.is_set():
            req = urllib.request.Request(
                self.url + "/v1/chat/completions",
                data=body,
                headers={"Content-Type": "application/json", "Authorization": "Bearer unused"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
                self.answered += 1
            except (OSError, urllib.error.HTTPError):
                self.failed += 1
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)


def _timed_get(url: str, path: str) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    status, body = admin_get(url, path)
    return status, body, time.monotonic() - t0


def test_sigterm_and_analytics_with_a_store_behind_a_stalled_network(fake, pg_url):
    proxy = StallProxy(5432)
    via_proxy = re.sub(r"@127\.0\.0\.1:5432/", f"@127.0.0.1:{proxy.port}/", pg_url)
    store = f"store: {{url: '{via_proxy}', read_timeout_s: 2, write_timeout_s: 3, connect_timeout_s: 2}}\n"
    store += f"server: {{flush_timeout: {SHUTDOWN_DEADLINE_S}}}"
    gw = GatewayProcess(standard_config(fake.url, store), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    load: Load | None = None
    try:
        gw.wait_ready()
        load = Load(gw.url)
        deadline = time.monotonic() + 15
        while True:  # the store works through the proxy
            status, body = admin_get(gw.url, "/admin/analytics/spend")
            if status == 200 and body["totals"]["requests"] > 0:
                break
            assert time.monotonic() < deadline, (status, body)
            time.sleep(0.2)

        proxy.stall()
        time.sleep(1.0)  # requests keep coming: their records wait in the writer's queue
        answered = load.answered
        views = ["/admin/analytics/spend", "/admin/analytics/requests?limit=5", "/admin/keys"]
        results: list[tuple[int, dict, float]] = []
        readers = [threading.Thread(target=lambda p=p: results.append(_timed_get(gw.url, p))) for p in views * 2]
        for t in readers:
            t.start()
        for t in readers:
            t.join(30)
        assert len(results) == len(views) * 2
        for status, body, seconds in results:
            assert status == 503 and body["error"]["code"] == "store_unavailable", body
            assert seconds < 8, seconds  # read_timeout_s is 2: never the hang it was
        assert load.answered > answered  # the gateway kept serving while its store hung

        answered = load.answered
        gw.proc.terminate()
        try:
            gw.proc.wait(SHUTDOWN_DEADLINE_S + MARGIN_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"no exit within {SHUTDOWN_DEADLINE_S + MARGIN_S} s of SIGTERM:\n{gw.log()[-3000:]}"
            ) from None
        log = gw.log()
        stopped = re.search(r"store_stopped written=\d+ dropped=(\d+) reason=shutdown_deadline", log)
        assert stopped and int(stopped.group(1)) > 0, log[-3000:]
        # The telemetry process's last line (`relaycast serve` keeps the store there).
        summary = re.search(r'telemetry_stopped .*store="written=(\d+) queued=0 dropped=shutdown_deadline:(\d+)"', log)
        assert summary, log[-3000:]
        written, dropped = int(summary.group(1)), int(summary.group(2))
        with psycopg.connect(pg_url) as c:  # straight to Postgres, not through the stalled proxy
            stored = c.execute("SELECT count(*) FROM requests").fetchone()
        # Every record is written or counted: nothing counted as written is missing, nothing vanished unsaid.
        assert stored is not None and stored[0] == written
        assert written + dropped >= answered, (written, dropped, answered)
    finally:
        if load is not None:
            load.stop()
        gw.stop()
        proxy.close()


def _hold_lock(url: str, table: str) -> psycopg.Connection:
    holder = psycopg.connect(url, autocommit=False)
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    return holder


def test_a_lock_held_on_the_server_is_cut_by_lock_timeout(pg_url):
    """The server ends the wait (lock_timeout), well before the callers' own deadlines; the writer keeps its batch
    and writes it once the lock is gone."""
    cfg = StoreConfig(url=pg_url, lock_timeout_s=0.5, read_timeout_s=20, write_timeout_s=20, flush_interval_s=0.05)

    async def run() -> None:
        red = Redactor(())
        writer = StoreWriter(cfg, red, EventLog(red))
        reader = StoreReader(cfg)
        await writer.start()
        holder = _hold_lock(pg_url, "requests")
        try:
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.LockNotAvailable, match="lock timeout"):
                await reader.run(queries.requests, {})
            assert time.monotonic() - t0 < 10
            writer(_record("locked-out", time.time()))
            await writer.flush()  # fails at the lock; the record stays queued
            status = writer.status()
            assert status["written"] == 0 and status["queued"] == 1 and "lock timeout" in status["last_error"]
        finally:
            holder.close()
        deadline = time.monotonic() + 15
        while writer.status()["written"] < 1:  # retried with backoff once the lock is gone
            assert time.monotonic() < deadline, writer.status()
            await asyncio.sleep(0.1)
        assert (await reader.run(queries.requests, {}))["requests"][0]["request_id"] == "locked-out"
        await writer.stop(5)
        await reader.close()

    asyncio.run(run())


def test_a_statement_past_its_time_is_cut_by_the_server(pg_url):
    conn = Connection(StoreConfig(url=pg_url), statement_timeout_s=0.5)
    try:
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.query("SELECT pg_sleep(30)")
        assert time.monotonic() - t0 < 10
        assert conn.query("SELECT 1") == [(1,)]  # the connection stays usable
    finally:
        conn.close()


def test_the_store_timeouts_are_set_on_the_session_and_the_socket(pg_url):
    cfg = dataclasses.replace(StoreConfig(url=pg_url), lock_timeout_s=1.5, keepalive_idle_s=11)
    conn = Connection(cfg, statement_timeout_s=7)
    try:
        got = conn.query(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
            " current_setting('idle_in_transaction_session_timeout')"
        )
        assert got == [("7s", "1500ms", "7s")]
        sock = conn._sock  # the client's end: keepalives on, probing after 11 s idle, every 5 s, 3 times
        assert sock is not None and sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 11
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    finally:
        conn.close()
