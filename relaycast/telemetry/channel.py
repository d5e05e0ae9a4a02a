"""The serving process's end of the channel to the telemetry process (`HostClient`), and the telemetry process's
end (`HostServer`). Frames are in `relaycast.telemetry.frames`.

Handing a record over is O(1) and never blocks: the record is encoded (about 2 µs) and appended to a buffer that
is written every `FLUSH_EVERY_S` (10 ms), or at once past `FLUSH_BYTES`: one write, and one wake-up of the
telemetry process, per batch rather than per record. Whatever the telemetry process does, the serving process
never waits for it: while it is slow or gone, records wait in a bounded backlog (`max_backlog_bytes`, 16 MiB by
default: some 16,000 records, seconds of traffic at saturation where a restart takes about one; the bound is
what a slow telemetry process may add to a worker's memory) and are sent when it is back; past the bound they
are dropped and counted (`backlog_full`). The telemetry process acknowledges the records it has taken into its
queues; when a connection breaks, what was written to it and not acknowledged is counted as `lost_in_flight` (it
may have arrived: the count is an upper bound). Every record handed over is, at any moment, exactly one of: in
the backlog, written and not yet acknowledged (`in_flight`), acknowledged, or counted under a reason. An
acknowledged record is in the telemetry process's queues, not yet stored or sent: if
that process is killed, what its queues held (about a flush interval's worth) is lost without a count here; its
own counters end with it.

The records have a connection of their own. Everything else (queries, limit settlements and leases, gauges; the
answers and the monitors' demotions back) goes on a second, control connection, so that a question never waits
behind records the telemetry process has yet to read: under sustained load those can be seconds of work. A
question that must see the records handed over before it (an admin view: `/metrics`, `/admin/store`) says how
many there were; it is answered once the telemetry process has taken them, or after RECORDS_WAIT_S with what it
has. The two connections are made and lost together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from relaycast.errors import RemoteError, TelemetryUnavailable
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.telemetry.frames import (
    ACK,
    ANSWER,
    CONTROL,
    DEMOTIONS,
    GAUGES,
    HELLO,
    LEASE,
    QUERY,
    RECORD,
    RECORDS,
    SETTLE,
    Codec,
    FrameParser,
    FrameTooLarge,
)

MAX_BACKLOG_BYTES = 16 << 20
MAX_QUERIES = 4096  # queries waiting for an answer, per serving process (limit admissions included)
QUERY_TIMEOUT_S = 10.0
RECORDS_WAIT_S = 0.5  # a question that must see the records waits this long at most for them, then is answered
HELLO_POLL_S = 0.005  # how often such a question looks for its worker's records' connection, not yet greeted
RECONNECT_BASE_S = 0.05  # doubling to RECONNECT_CAP_S while the telemetry process is away
RECONNECT_CAP_S = 1.0
SESSION_HELD_S = 1.0  # a session that lasted this long was not a failure: the next connection is tried at the base
GAUGES_EVERY_S = 1.0
FLUSH_EVERY_S = 0.01  # records are written to the socket in batches: at most this late
FLUSH_BYTES = 256 << 10  # ... or as soon as this much waits
DROP_REASONS = ("backlog_full", "lost_in_flight", "too_large", "unencodable", "shutdown_deadline")


class _Conn(asyncio.Protocol):
    """One connection's reading side: frames go to `on_frame`; `closed` resolves when it ends."""

    def __init__(self, on_frame: Callable[[int, bytes], None]) -> None:
        self._parser = FrameParser()
        self._on_frame = on_frame
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._parser.feed(data)
        except FrameTooLarge:
            if self.transport is not None:
                self.transport.abort()
            return
        for kind, payload in frames:
            self._on_frame(kind, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class HostClient:
    """A serving process's link to the host's telemetry process at the Unix socket `path`."""

    def __init__(
        self,
        path: str,
        worker: int,
        log: EventLog,
        *,
        gauges: Callable[[], list[Any]] | None = None,
        on_demotions: Callable[[dict[tuple[str, str], str]], None] | None = None,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        name: str = "telemetry",
    ) -> None:
        self.path = path
        self.worker = worker
        # Which of the host's processes this links to: `telemetry`, or `state` (`relaycast.server.state_process`,
        # which hands no records): the prefix of the events logged and the subject of the errors raised.
        self.name = name
        self._log = log
        self.gauges = gauges  # this worker's own gauges, sent once a second for the host's /metrics
        self._on_demotions = on_demotions
        self._max_backlog = max_backlog_bytes
        self._codec = Codec()
        self._out: list[bytes] = []  # frames not yet written: records in order, while connected or not
        self._out_bytes = 0
        self._out_records = 0
        self._flush_handle: asyncio.Handle | None = None
        # Control frames (queries, settlements, leases, gauges), written on the control connection at the end of
        # this turn of the event loop: one write for every request of the turn, not one each.
        self._ctl: list[bytes] = []
        self._ctl_handle: asyncio.Handle | None = None
        self._conn: _Conn | None = None  # the records' connection
        self._ctl_conn: _Conn | None = None  # the control connection, made and lost with it
        self._queries: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop  # in start()
        self._closing = False
        self._sent_on_conn = 0  # records written to the current connection
        self._acked_on_conn = 0
        self.handed = 0  # records handed over, all told
        self.acked = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.connects = 0
        self.connected = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        # Kept: on Python 3.11 every asyncio.get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="relaycast-telemetry-link")

    async def _run(self) -> None:
        delay = RECONNECT_BASE_S
        while not self._closing:
            began = time.monotonic()
            try:
                connected = await self._connect_and_serve()
            except Exception as e:  # noqa: BLE001 - the link must outlive any one failure; logged, then retried
                self._log.error(f"{self.name}_link_failed", worker=self.worker, error=type(e).__name__)
                conn = self._conn
                if conn is not None:
                    if conn.transport is not None:
                        conn.transport.abort()
                    self._lost(conn)
                connected = False
            if connected and time.monotonic() - began >= SESSION_HELD_S:
                delay = RECONNECT_BASE_S
            # Never at once: a telemetry process being killed may still take a connection for a moment (and drop
            # it), and one that takes connections and drops them would have every worker reconnect in a loop.
            await asyncio.sleep(delay)
            delay = min(RECONNECT_CAP_S, delay * 2)

    async def _connect_and_serve(self) -> bool:
        """One session (the records' connection and the control connection), until either ends; False when none
        could be made."""
        try:
            _, conn = await self._loop.create_unix_connection(lambda: _Conn(self._frame), self.path)
        except OSError:
            return False
        try:
            _, ctl = await self._loop.create_unix_connection(lambda: _Conn(self._frame), self.path)
        except OSError:
            if conn.transport is not None:
                conn.transport.abort()
            return False
        self._conn, self._ctl_conn = conn, ctl
        self._sent_on_conn = self._acked_on_conn = 0
        self.connects += 1
        assert conn.transport is not None and ctl.transport is not None
        conn.transport.write(self._codec.frame(HELLO, [self.worker, os.getpid(), RECORDS, self.connects]))
        ctl.transport.write(self._codec.frame(HELLO, [self.worker, os.getpid(), CONTROL, self.connects]))
        self.connected.set()
        if self.connects > 1:
            self._log.info(f"{self.name}_reconnected", worker=self.worker, backlog=self._out_records)
        self._flush()
        gauges_at = 0.0
        while not conn.closed.done() and not ctl.closed.done():
            now = time.monotonic()
            if self.gauges is not None and now >= gauges_at:
                gauges_at = now + GAUGES_EVERY_S
                self._write(GAUGES, self.gauges())
            await asyncio.wait([conn.closed, ctl.closed], timeout=GAUGES_EVERY_S, return_when=asyncio.FIRST_COMPLETED)
        self._lost(conn)
        return True

    def _lost(self, conn: _Conn) -> None:
        self.connected.clear()
        if self._conn is conn:
            self._conn = None
            self._ctl.clear()  # its queries are failed below; a settlement means nothing to another process
            ctl, self._ctl_conn = self._ctl_conn, None
            for c in (ctl, conn):  # one goes, both go: a new session makes both again
                t = c.transport if c is not None else None
                if t is not None and not t.is_closing():  # one closed by `close` still sends what it holds
                    t.abort()
        lost = self._sent_on_conn - self._acked_on_conn
        if lost > 0:
            self.dropped["lost_in_flight"] += lost
        self._sent_on_conn = self._acked_on_conn = 0
        for f in self._queries.values():
            if not f.done():
                f.set_exception(TelemetryUnavailable(f"The {self.name} process went away before it answered."))
        self._queries.clear()
        if not self._closing:
            self._log.error(f"{self.name}_link_lost", worker=self.worker, lost_in_flight=max(lost, 0))

    async def close(self, timeout_s: float) -> None:
        """Send the backlog and wait for its acknowledgement for at most `timeout_s`; what is left is counted as
        `shutdown_deadline`, what was written and not acknowledged as `lost_in_flight`."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            conn = self._conn
            if conn is None or conn.closed.done():
                break
            self._flush()
            if not self._out and self._acked_on_conn >= self._sent_on_conn:
                break
            await asyncio.sleep(0.01)
        if self._out_records:
            self.dropped["shutdown_deadline"] += self._out_records
        self._out.clear()
        self._out_bytes = self._out_records = 0
        if self._ctl_handle is not None:  # this turn's settlements and reports go before the connections close
            self._ctl_handle.cancel()
            self._flush_turn()
        conn = self._conn
        if conn is not None and conn.transport is not None:
            conn.transport.close()
            ctl = self._ctl_conn
            if ctl is not None and ctl.transport is not None:
                ctl.transport.close()
            self._lost(conn)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # --- records ------------------------------------------------------------------------------

    def __call__(self, record: RequestRecord) -> None:
        """The record sink: encode and append; written within FLUSH_EVERY_S, or at once past FLUSH_BYTES. Never
        blocks, never raises."""
        self.handed += 1
        try:
            frame = self._codec.frame(RECORD, record)
        except FrameTooLarge:
            self.dropped["too_large"] += 1
            return
        except Exception:  # noqa: BLE001 - a value msgspec cannot encode: counted, never raised into the request
            self.dropped["unencodable"] += 1
            return
        if self._closing or self._backlog() + len(frame) > self._max_backlog:
            self.dropped["backlog_full" if not self._closing else "shutdown_deadline"] += 1
            return
        self._out.append(frame)
        self._out_bytes += len(frame)
        self._out_records += 1
        if self._conn is None:
            return
        if self._out_bytes >= FLUSH_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_later(FLUSH_EVERY_S, self._flush)

    def _backlog(self) -> int:
        conn = self._conn
        buffered = conn.transport.get_write_buffer_size() if conn is not None and conn.transport is not None else 0
        return self._out_bytes + buffered

    @staticmethod
    def _writable(conn: _Conn | None) -> asyncio.Transport | None:
        """The transport of `conn` while it takes writes; None while away or closing."""
        t = conn.transport if conn is not None else None
        return t if t is not None and not t.is_closing() else None

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        t = self._writable(self._conn)
        if t is None:
            return
        if self._out:
            self._sent_on_conn += self._out_records
            t.writelines(self._out)
            self._out = []
            self._out_bytes = self._out_records = 0

    def _flush_turn(self) -> None:
        """The end of a turn that wrote control frames: one write on the control connection."""
        self._ctl_handle = None
        t = self._writable(self._ctl_conn)
        if self._ctl and t is not None:
            t.writelines(self._ctl)
        self._ctl = []

    def _write(self, kind: int, payload: Any) -> bool:
        """A control frame, written with whatever else this turn of the event loop writes."""
        if self._writable(self._ctl_conn) is None:
            return False
        self._ctl.append(self._codec.frame(kind, payload))
        if self._ctl_handle is None:
            self._ctl_handle = self._loop.call_soon(self._flush_turn)
        return True

    # --- queries, settlements -----------------------------------------------------------------

    async def query(
        self, op: str, arg: Any = None, timeout_s: float = QUERY_TIMEOUT_S, after_records: bool = True
    ) -> Any:
        """Ask the telemetry process; TelemetryUnavailable when it is away, busy or silent past `timeout_s`. With
        `after_records` (an admin view), the records handed over before the question are written at once and the
        answer sees them, unless the telemetry process is more than RECORDS_WAIT_S behind on them (it then answers
        with what it has taken). Without (a limit admission, a stored response: they read no records), the
        question is answered as soon as the telemetry process reads it."""
        if len(self._queries) >= MAX_QUERIES:
            raise TelemetryUnavailable(f"Too many questions to the {self.name} process are waiting for an answer.")
        qid = next(self._ids)
        fut: asyncio.Future[Any] = self._loop.create_future()
        question = [qid, op, arg]
        if after_records:
            self._flush()
            question.append(self._sent_on_conn + self._out_records)  # the records it must see first
        if not self._write(QUERY, question):
            raise TelemetryUnavailable(f"The {self.name} process is not connected (it may be restarting).")
        self._queries[qid] = fut
        timer = self._loop.call_later(timeout_s, _expire, fut, timeout_s, self.name)  # cheaper than asyncio.wait_for
        try:
            return await fut
        finally:
            timer.cancel()
            self._queries.pop(qid, None)

    def settle(self, reservation: str, tokens: int, nano: int) -> bool:
        return self._write(SETTLE, [reservation, tokens, nano])

    def give_back(self, report: list[Any]) -> bool:
        """A lease's report to the host's limits (`relaycast.limits.lease`)."""
        return self._write(LEASE, report)

    def _frame(self, kind: int, payload: bytes) -> None:
        if kind == ACK:
            n = int(self._codec.data(payload))
            self.acked += n - self._acked_on_conn
            self._acked_on_conn = n
        elif kind == ANSWER:
            qid, ok, result = self._codec.data(payload)
            fut = self._queries.get(qid)
            if fut is not None and not fut.done():
                if ok:
                    fut.set_result(result)
                else:
                    fut.set_exception(RemoteError(result))
        elif kind == DEMOTIONS and self._on_demotions is not None:
            self._on_demotions({(r, t): why for r, t, why in self._codec.data(payload)})

    # --- what /metrics shows ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "connected": self._conn is not None,
            "handed": self.handed,
            "acknowledged": self.acked,
            "backlog": self._out_records,
            "in_flight": max(0, self._sent_on_conn - self._acked_on_conn),
            "backlog_bytes": self._backlog(),
            "connects": self.connects,
            "dropped": {r: self.dropped.get(r, 0) for r in DROP_REASONS},
        }


# --- the telemetry process's end -------------------------------------------------------------


class Peer(Protocol):
    worker: int  # the worker's number, from its hello (-1 before)
    pid: int  # the worker's process id, from its hello (0 before)
    key: int  # this connection's, unique in the telemetry process


class Handler(Protocol):
    def record(self, record: RequestRecord) -> None: ...

    async def query(self, peer: Peer, op: str, arg: Any) -> Any: ...

    def answer_now(self, peer: Peer, op: str, arg: Any) -> tuple[bool, Any]:
        """(True, the answer) when the question can be answered without an await (or raises its error); (False,
        None), having changed nothing, when `query` must be awaited."""
        ...

    def gauges(self, peer: Peer, families: Any) -> None: ...

    def settle(self, peer: Peer, reservation: str, tokens: int, nano: int) -> None: ...

    def give_back(self, peer: Peer, report: list[Any]) -> None: ...

    def hello(self, peer: Peer) -> None: ...

    def gone(self, peer: Peer) -> None: ...

    def demotions(self) -> list[list[str]]: ...


class _Peer:
    """One serving process's connection, as the telemetry process sees it."""

    def __init__(self, server: HostServer, key: int) -> None:
        self.server = server
        self.key = key
        self.worker = -1
        self.pid = 0
        self.control = False  # a worker's control connection (its hello says so), not its records'
        self.session = (0, 0)  # (pid, the worker's count of its connections): its two connections share it
        self.taken = 0
        self.waiting: list[tuple[int, asyncio.Future[None]]] = []  # questions waiting for `taken` to reach a count
        self.conn = _Conn(self._frame)
        self.sent_demotions: list[list[str]] | None = None
        self.out: list[bytes] = []  # frames for this turn of the event loop

    def _frame(self, kind: int, payload: bytes) -> None:
        s = self.server
        h = s.handler
        if kind == RECORD:
            try:
                rec = s.codec.record(payload)
            except Exception:  # noqa: BLE001 - a frame from another version; counted, never fatal
                s.undecodable += 1
            else:
                h.record(rec)
            self.taken += 1
            s.ack_soon(self)
            if self.waiting:
                self._wake()
        elif kind == QUERY:
            qid, op, arg, *seen = s.codec.data(payload)
            if seen and seen[0] > 0:
                records = s.records.get(self.session)
                if records is None or records.taken < seen[0]:
                    self._spawn(self._answer_after(seen[0], qid, op, arg))
                    return
            self._ask(qid, op, arg)
        elif kind == SETTLE:
            rid, tokens, nano = s.codec.data(payload)
            h.settle(self, rid, tokens, nano)
        elif kind == LEASE:
            h.give_back(self, s.codec.data(payload))
        elif kind == GAUGES:
            h.gauges(self, s.codec.data(payload))
        elif kind == HELLO:
            worker, pid, *more = s.codec.data(payload)
            self.worker, self.pid = int(worker), int(pid)
            self.control = bool(more) and more[0] == CONTROL
            self.session = (self.pid, int(more[1]) if len(more) > 1 else 0)
            h.hello(self)
            if self.control:
                self.push_demotions()
            else:
                s.records[self.session] = self

    def _ask(self, qid: int, op: str, arg: Any) -> None:
        try:
            done, result = self.server.handler.answer_now(self, op, arg)
        except Exception as e:  # noqa: BLE001 - the asker gets the error, the process goes on
            self.write(ANSWER, [qid, False, error_detail(e)])
            return
        if done:  # answered in this turn of the event loop: no task, no turn waited for
            self.write(ANSWER, [qid, True, result])
        else:
            self._spawn(self._answer(qid, op, arg))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _answer_after(self, count: int, qid: int, op: str, arg: Any) -> None:
        """Answer once this worker's records' connection has taken `count` records, or after RECORDS_WAIT_S with
        what it has. (Its hello may come after this connection's: the two are read in no set order.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORDS_WAIT_S
        records = self.server.records.get(self.session)
        while records is None and loop.time() < deadline:
            await asyncio.sleep(HELLO_POLL_S)
            records = self.server.records.get(self.session)
        if records is not None and records.taken < count:
            fut: asyncio.Future[None] = loop.create_future()
            records.waiting.append((count, fut))
            try:
                await asyncio.wait([fut], timeout=max(0.0, deadline - loop.time()))
            finally:
                if not fut.done():
                    records.waiting.remove((count, fut))
        self._ask(qid, op, arg)

    def _wake(self) -> None:
        still = []
        for count, fut in self.waiting:
            if self.taken >= count:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((count, fut))
        self.waiting = still

    async def _answer(self, qid: int, op: str, arg: Any) -> None:
        try:
            result = [qid, True, await self.server.handler.query(self, op, arg)]
        except Exception as e:  # noqa: BLE001 - the asker gets the error, the process goes on
            result = [qid, False, error_detail(e)]
        self.write(ANSWER, result)

    def write(self, kind: int, payload: Any) -> None:
        """A frame to this worker, written at the end of this turn of the event loop with the others."""
        if self.queue(kind, payload):
            self.server.flush_soon(self)

    def queue(self, kind: int, payload: Any) -> bool:
        t = self.conn.transport
        if t is None or t.is_closing():
            return False
        self.out.append(self.server.codec.frame(kind, payload))
        return True

    def flush(self) -> None:
        out, self.out = self.out, []
        t = self.conn.transport
        if out and t is not None and not t.is_closing():
            t.writelines(out)

    def push_demotions(self) -> None:
        now = self.server.handler.demotions()
        if now != self.sent_demotions:
            self.sent_demotions = now
            self.write(DEMOTIONS, now)


def _expire(fut: asyncio.Future[Any], timeout_s: float, name: str) -> None:
    if not fut.done():
        fut.set_exception(TelemetryUnavailable(f"The {name} process did not answer within {timeout_s:g} s."))


def error_detail(e: Exception) -> list[Any]:
    from relaycast.errors import LimitExceeded, RequestTooLarge

    if isinstance(e, RequestTooLarge):
        return ["too_large", str(e)]
    if isinstance(e, LimitExceeded):
        return ["limit", str(e), e.limit, e.retry_after_s]
    return ["error", f"{type(e).__name__}: {str(e)[:200]}"]


class HostServer:
    """The telemetry process's Unix socket: records to the handler, queries answered, acknowledgements sent once
    per event-loop turn, the monitors' demotions pushed to every worker when they change."""

    def __init__(self, path: str, handler: Handler, log: EventLog) -> None:
        self.path = path
        self.handler = handler
        self.codec = Codec()
        self._log = log
        self.peers: set[_Peer] = set()
        self.records: dict[tuple[int, int], _Peer] = {}  # each worker's records' connection, by its session
        self.tasks: set[asyncio.Future[None]] = set()
        self.undecodable = 0
        self._acks: set[_Peer] = set()
        self._writing: set[_Peer] = set()
        self._write_handle: asyncio.Handle | None = None
        self._server: asyncio.AbstractServer | None = None
        self._push: asyncio.Task[None] | None = None
        self._keys = itertools.count(1)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket left by a telemetry process that was killed
        self._server = await loop.create_unix_server(self._peer, self.path)
        os.chmod(self.path, 0o600)
        self._push = asyncio.create_task(self._push_demotions(), name="relaycast-demotions")

    def _peer(self) -> _Conn:
        peer = _Peer(self, next(self._keys))
        self.peers.add(peer)
        peer.conn.closed.add_done_callback(lambda _: self._gone(peer))
        return peer.conn

    def workers(self) -> int:
        """The workers connected (each has two connections)."""
        return sum(1 for p in self.peers if not p.control)

    def _gone(self, peer: _Peer) -> None:
        if self.records.get(peer.session) is peer:
            del self.records[peer.session]
        self.peers.discard(peer)
        self._acks.discard(peer)
        self._writing.discard(peer)
        self.handler.gone(peer)

    def flush_soon(self, peer: _Peer) -> None:
        self._writing.add(peer)
        self._soon()

    def ack_soon(self, peer: _Peer) -> None:
        self._acks.add(peer)
        self._soon()

    def _soon(self) -> None:
        if self._write_handle is None:
            self._write_handle = asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        """The end of a turn of the event loop: each worker's acknowledgement, answers and pushes, one write each."""
        if self._write_handle is not None:
            self._write_handle.cancel()
            self._write_handle = None
        for peer in self._acks:
            if peer.queue(ACK, peer.taken):
                self._writing.add(peer)
        self._acks.clear()
        writing, self._writing = self._writing, set()
        for peer in writing:
            peer.flush()

    async def _push_demotions(self) -> None:
        while True:
            await asyncio.sleep(GAUGES_EVERY_S)
            self.push_demotions()

    def push_demotions(self) -> None:
        """Send the monitors' demotions to every worker that has not seen them (written before any answer that
        follows on the same connection)."""
        for peer in list(self.peers):
            if peer.control:
                peer.push_demotions()

    async def stop_accepting(self) -> None:
        """No new connections; those open stay until `close`, so workers finishing their requests still hand
        over their last records."""
        if self._server is not None:
            self._server.close()

    async def drain(self, control: bool, timeout_s: float) -> int:
        """Stop accepting, then wait up to `timeout_s` for the workers' open connections of one kind (`control`:
        their questions and settlements; else their records) to close; how many were still open then."""
        await self.stop_accepting()
        peers = [p for p in self.peers if p.control == control]
        if not peers:
            return 0
        _, pending = await asyncio.wait([p.conn.closed for p in peers], timeout=timeout_s)
        return len(pending)

    async def close(self) -> None:
        if self._push is not None:
            self._push.cancel()
            await asyncio.gather(self._push, return_exceptions=True)
        self._write_out()  # what this turn queued (answers, acknowledgements) goes before the connections close
        for peer in list(self.peers):
            if peer.conn.transport is not None:
                peer.conn.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for t in list(self.tasks):
            t.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
