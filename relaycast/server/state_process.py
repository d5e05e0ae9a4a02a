"""The state process of a host of several workers: what they share and wait for while they serve, kept apart from
the telemetry process so that this stays quick while that one yields the CPU.

    the host's limits       when the workers share no Redis (`relaycast.limits.host.HostLimits`)
    routing health          circuits opened and targets demoted, without Redis (`routing.replicas.HealthTable`)
    dashboard logouts       without a store (`server.session_share.RevokedSessions`)
    stored responses        of the Responses API (`server.stored_responses.ResponseStore`, and its store table)

A request may wait for each of these (an admission, a `previous_response_id`, a response stored before its answer
goes out), so this process runs at the workers' priority. It does little per request (an admission, a lease, a
sync every half second), where the telemetry process does the work that grows with the traffic (decoding records,
the store's writes, the exporters' encoding) and runs on the CPU the workers leave (`SCHED_IDLE`): at saturation
it drops records, counted, and never delays a request. Workers reach it over the same channel as the telemetry
process's (`relaycast.telemetry.channel`), on a socket of its own; a worker with a host of its own (`--workers 1`)
keeps all of this itself, or its telemetry process keeps its stored responses.

The supervisor starts it with the telemetry process and restarts it when it dies; meanwhile requests with limits
are refused with 503 (unless a lease covers them), a restarted one starts its limits' windows afresh (budgets
reload from the store), and stored responses are read back from the store. It stops after the workers, having
waited for them to hang up (their last settlements come first), and writes the stored responses it holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

from relaycast.config import Config
from relaycast.limits.admission import build_limiter
from relaycast.limits.host import HostLimits
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.routing.replicas import HealthTable
from relaycast.server.runner import tune_gc
from relaycast.server.session_share import RevokedSessions
from relaycast.server.shutdown import shutdown_step
from relaycast.server.stored_responses import OPS as RESPONSE_OPS
from relaycast.server.stored_responses import ResponseStore
from relaycast.store.reader import StoreReader
from relaycast.store.responses import ResponseTable
from relaycast.store.spend import spend_loader
from relaycast.telemetry.channel import HostServer, Peer

SCHEMA_WAIT_S = 30.0  # the store's schema is migrated by the telemetry process: its socket appears once it is
SCHEMA_POLL_S = 0.05
STOP_STEP_S = 5.0
# What a worker asks the state process rather than the telemetry process (`Services.telemetry`), where there is one.
STATE_OPS = RESPONSE_OPS | {"limits", "responses_status"}


class StateProcess:
    """What the state socket's frames reach (the channel's `Handler`)."""

    def __init__(self, config: Config, socket_path: str, shared_limits: bool) -> None:
        self.config = config
        self.redactor = Redactor(config.secrets())
        self.log = EventLog(self.redactor)
        self.server = HostServer(socket_path, self, self.log)
        self.limits: HostLimits | None = None
        self.health = HealthTable()
        self.sessions = RevokedSessions()
        self.responses = ResponseStore()
        self._shared_limits = shared_limits
        self._spend: StoreReader | None = None
        self.unexpected_records = 0

    async def start(self, telemetry_socket: str) -> None:
        store = self.config.store
        if store is not None:
            await self._schema(telemetry_socket)
            if not store.privacy_mode:
                self.responses.table = ResponseTable(store, self.redactor, self.log)
                self.responses.table.start()
        if self._shared_limits:
            if store is not None:
                self._spend = StoreReader(store, threads=1)
            self.limits = HostLimits(
                build_limiter(self.config.limits, self.log, spend_loader(lambda: self._spend, self.log), time.time),
                workers=self.server.workers,
            )
        await self.server.start()
        self.log.info("state_started", socket=self.server.path, shared_limits=self.limits is not None)

    async def _schema(self, telemetry_socket: str) -> None:
        """Wait for the telemetry process to have migrated the store (it listens once it has); at most
        SCHEMA_WAIT_S, then go on: a write to a table not yet made is retried."""
        deadline = time.monotonic() + SCHEMA_WAIT_S
        while not os.path.exists(telemetry_socket):  # noqa: ASYNC240 - a stat, at start-up, before serving anyone
            if time.monotonic() > deadline:
                self.log.warning("state_store_not_migrated", waited_s=SCHEMA_WAIT_S)
                return
            await asyncio.sleep(SCHEMA_POLL_S)

    # --- the channel's handler ----------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        self.unexpected_records += 1  # records go to the telemetry process; never sent here

    async def query(self, peer: Peer, op: str, arg: Any) -> Any:
        if op == "limit_admit":
            if self.limits is None:
                raise RuntimeError("this host's limits are not kept by the state process")
            return await self.limits.admit(peer.key, arg)
        if op == "limits":
            return self.limits.status() if self.limits else None
        if op == "response_put":  # kept as the records are: with what looks like a secret masked
            return await self.responses.query(op, [arg[0], self.redactor.scrub_bytes(bytes(arg[1]))])
        if op in RESPONSE_OPS:
            return await self.responses.query(op, arg)
        if op == "responses_status":
            return self.responses.status()
        raise ValueError(f"unknown state query {op!r}")

    def answer_now(self, peer: Peer, op: str, arg: Any) -> tuple[bool, Any]:
        # An admission the in-memory limits decide at once (nearly all): answered in the turn of the event loop
        # that read it, where a task would wait for the next turn, behind whatever else that turn runs.
        if op == "limit_admit" and self.limits is not None:
            return self.limits.admit_now(peer.key, arg)
        if op == "limit_lease":
            if self.limits is None:
                raise RuntimeError("this host's limits are not kept by the state process")
            return True, self.limits.lease(peer.key, arg)
        if op == "health_sync":
            return True, self.health.swap(peer.key, arg)
        if op == "session_marker":
            return True, self.sessions.marker()
        if op == "session_load":
            return True, self.sessions.load(arg)
        if op == "session_revoke":
            self.sessions.revoke(arg)
            return True, None
        return False, None

    def gauges(self, peer: Peer, families: Any) -> None:
        pass  # a worker's gauges go to the telemetry process

    def settle(self, peer: Peer, reservation: str, tokens: int, nano: int) -> None:
        if self.limits is not None:
            self.limits.settle(reservation, tokens, nano)

    def give_back(self, peer: Peer, report: list[Any]) -> None:
        if self.limits is not None:
            self.limits.give_back(report)

    def hello(self, peer: Peer) -> None:
        pass

    def gone(self, peer: Peer) -> None:
        if self.limits is not None:
            self.limits.gone(peer.key)
        self.health.gone(peer.key)

    def demotions(self) -> list[list[str]]:
        return []  # the monitors' demotions come from the telemetry process

    # --- shutdown -----------------------------------------------------------------------------

    async def close(self, drain_s: float) -> None:
        began = time.monotonic()
        unfinished = await self.server.drain(control=True, timeout_s=drain_s)  # their last settlements come first
        await self.server.close()
        if self.responses.table is not None:
            await self._bounded("stored_responses", self.responses.table.stop(self.config.server.flush_timeout))
        if self._spend is not None:
            await self._bounded("spend_reader", self._spend.close())
        self.log.info(
            "state_stopped",
            seconds=round(time.monotonic() - began, 3),
            workers_unfinished=unfinished,
            stored_responses=len(self.responses),
            unexpected_records=self.unexpected_records,
        )

    async def _bounded(self, step: str, work: Any) -> None:
        await shutdown_step(self.log, self.redactor, step, work, self.config.server.flush_timeout + STOP_STEP_S)


async def run(config: Config, socket_path: str, telemetry_socket: str, shared_limits: bool, drain_s: float) -> int:
    """Serve until SIGTERM or SIGINT; then wait for the workers to hang up, write what is queued, and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proc = StateProcess(config, socket_path, shared_limits)
    try:
        await proc.start(telemetry_socket)
        tune_gc()
        await stop.wait()
    finally:
        await proc.close(drain_s)
    return 0
