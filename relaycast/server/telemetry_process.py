"""The telemetry process of a host: one `TelemetryHub` (metrics, store writes, broadcast, spool, monitors) fed by
every worker over a Unix socket. With several workers, what they share and wait for (limits, routing health,
dashboard logouts, stored responses) is kept by the host's state process (`relaycast.server.state_process`)
instead, so that nothing a request waits for is left to this one, which runs on the CPU the workers leave.

It stops on SIGTERM or SIGINT: it first waits for the workers to hang up (they hand over their last records as
they finish their requests; at most `drain_s`), then flushes its queues as the in-process gateway does (broadcast
spools what it could not send, the store counts what it could not write), logs `telemetry_stopped` (the records
received, the workers still connected at the deadline, and what each destination and the store delivered, spooled
and dropped) and exits.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from relaycast.config import Config
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.server.runner import tune_gc
from relaycast.server.shutdown import shutdown_step
from relaycast.server.telemetry_hub import Demotions, TelemetryHub
from relaycast.telemetry.channel import HostServer, Peer

CLOSE_GRACE_S = 2.0
IDLE_FALLBACK_NICE = 19  # where SCHED_IDLE is not to be had (not Linux)
FULL_COLLECTION_S = 60.0


class FullCollections:
    """A full garbage collection every `every_s` seconds, on the event loop.

    `tune_gc` makes the collector's older generations rare: they are collected after so many allocations, and this
    process allocates little between records at a modest rate. A destination that refuses connections leaves
    reference cycles behind every failed attempt (its client's exceptions, tracebacks and frames): with a
    destination refusing connections for 8 minutes at 300 requests a second, this process grew by 1.6 MB a minute
    and no full collection came; collected by the clock, it stayed within 3 MB (`bench/broadcast.py`). What
    start-up made is frozen out of these passes: one takes about 16 ms with 50,000 decoded records held."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every_s: float = FULL_COLLECTION_S) -> None:
        self._loop = loop
        self._every_s = every_s
        self.runs = 0
        self._handle = loop.call_later(every_s, self._collect)

    def _collect(self) -> None:
        gc.collect()
        self.runs += 1
        self._handle = self._loop.call_later(self._every_s, self._collect)

    def stop(self) -> None:
        self._handle.cancel()


class TelemetryProcess:
    """What the socket's frames reach in the telemetry process."""

    def __init__(self, config: Config, socket_path: str, keeps_responses: bool = True) -> None:
        self.config = config
        self.redactor = Redactor(config.secrets())
        self.log = EventLog(self.redactor)
        self.alerts = Demotions()
        self.hub = TelemetryHub(config, self.redactor, self.log, self.alerts, keeps_responses=keeps_responses)
        self.server = HostServer(socket_path, self, self.log)
        self.received = 0

    async def start(self) -> None:
        await self.hub.start()
        await self.server.start()

    def started(self, priority: str) -> None:
        """Listening, at `priority` (what `lower_priority` set) from now on."""
        self.log.info("telemetry_started", socket=self.server.path, priority=priority)

    # --- the channel's handler ----------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        self.received += 1
        self.hub.sink(record)

    async def query(self, peer: Peer, op: str, arg: Any) -> Any:
        if op == "metrics":
            return await self.hub.query("metrics", (peer.worker, arg))
        if op == "telemetry":
            return self.status()
        result = await self.hub.query(op, arg)
        if op == "monitors_evaluate":
            # Its demotions reach the workers before its answer does: the next request is routed by them.
            self.server.push_demotions()
        return result

    def answer_now(self, peer: Peer, op: str, arg: Any) -> tuple[bool, Any]:
        return False, None  # every question here reads the telemetry parts: `query`

    def gauges(self, peer: Peer, families: Any) -> None:
        self.hub.workers[peer.worker] = families

    def settle(self, peer: Peer, reservation: str, tokens: int, nano: int) -> None:
        pass  # a host's limits are kept by a worker alone, or by the state process

    def give_back(self, peer: Peer, report: list[Any]) -> None:
        pass

    def hello(self, peer: Peer) -> None:
        self.hub.returned(peer.pid)

    def gone(self, peer: Peer) -> None:
        if not any(p.worker == peer.worker for p in self.server.peers):
            self.hub.retire(peer.worker, peer.pid)

    def demotions(self) -> list[list[str]]:
        return sorted([r, t, why] for (r, t), why in self.alerts.monitor_alerts.items())

    def status(self) -> dict[str, Any]:
        return {"received": self.received, "undecodable": self.server.undecodable, "workers": self.server.workers()}

    # --- shutdown -----------------------------------------------------------------------------

    async def close(self, drain_s: float) -> None:
        began = time.monotonic()
        # The workers' last records come on their records' connections; one still open at the deadline may miss some.
        unfinished = await self.server.drain(control=False, timeout_s=drain_s)
        deadline = time.monotonic() + self.config.server.flush_timeout

        def grace() -> float:
            return max(0.2, deadline + CLOSE_GRACE_S - time.monotonic())

        await self.server.close()
        await self.hub.close(deadline, grace, self._bounded)
        self.log.info(
            "telemetry_stopped",
            seconds=round(time.monotonic() - began, 3),
            received=self.received,
            workers_unfinished=unfinished,
            **self.hub.stopped_fields(),
        )

    async def _bounded(self, step: str, work: Awaitable[object], timeout_s: float) -> None:
        await shutdown_step(self.log, self.redactor, step, work, timeout_s)


def lower_priority(setting: str | int) -> str:
    """Give the workers (the requests) the CPU first, by `server.telemetry_priority`; what was set, as text. Every
    thread of the process is lowered (the store writer's and the encoders' too: Linux keeps a policy and a nice
    value per thread), and the threads made later inherit it.

    `idle` is Linux's SCHED_IDLE: the telemetry process runs on the CPU no worker wants, and a worker that wakes
    takes its core at once. At a nice increment, a waking worker may wait for the rest of the telemetry process's
    time slice, and the telemetry process takes much more than its weight of a busy core: with a nice 10 CPU hog on
    a worker's core, a streaming load's throughput fell by a third, and by 5% with the same hog at SCHED_IDLE.
    `auto` (the default) is `idle`: no request waits for this process (what they wait for, with several workers,
    is the state process's, at the workers' priority). Under a load that keeps every core busy the telemetry
    queues grow and drop what overflows (counted); they drain when it eases."""
    if setting in ("auto", "idle"):
        try:
            _each_thread(lambda t: os.sched_setscheduler(t, os.SCHED_IDLE, os.sched_param(0)))
            return "idle"
        except (AttributeError, OSError):
            setting = IDLE_FALLBACK_NICE
    try:
        _each_thread(lambda t: os.setpriority(os.PRIO_PROCESS, t, os.getpriority(os.PRIO_PROCESS, t) + int(setting)))
    except (AttributeError, OSError):
        return "unchanged"
    return f"nice +{int(setting)}"


def _each_thread(apply: Callable[[int], object]) -> None:
    """`apply` to each of this process's threads (by id): the calling one, then the others /proc lists, skipping
    one that ended since."""
    me = threading.get_native_id()
    apply(me)
    try:
        others = [int(t) for t in os.listdir("/proc/self/task") if int(t) != me]
    except OSError:
        others = []
    for tid in others:
        try:
            apply(tid)
        except ProcessLookupError:
            pass


async def run(config: Config, socket_path: str, keeps_responses: bool, drain_s: float) -> int:
    """Serve until SIGTERM or SIGINT; then drain, flush and return.

    The process starts at the priority it was given and lowers it once it listens: the workers wait for its socket
    before they serve (`services.LINK_WAIT_S`), and a busy host must not hold them up for it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proc = TelemetryProcess(config, socket_path, keeps_responses)
    collections: FullCollections | None = None
    try:
        await proc.start()
        proc.started(lower_priority(config.server.telemetry_priority))
        tune_gc()  # what start-up made is frozen out of the collector's full passes
        collections = FullCollections(loop)
        await stop.wait()
    finally:
        if collections is not None:
            collections.stop()
        await proc.close(drain_s)
    return 0
