"""The telemetry parts of one host: the metrics every record feeds, the store writer, the broadcast pipeline, and
the monitors with their notifier. Built from the config and closed in one place.

A hub runs where the records go: inside the serving process (the embedded layout: `relaycast demo`, tests,
`relaycast serve --single-process`), or in the telemetry process that `relaycast serve` starts beside its workers
(`relaycast.server.telemetry_process`), which hand it their records over a Unix socket
(`relaycast.telemetry.channel`). Either way the admin endpoints and `/metrics` read it through `query`, whose
answers are plain data, so the same code serves both.

With several workers, each worker's own gauges (routing health, connections) reach the hub with every `/metrics`
query and once a second in between; `/metrics` shows one view of the host: counters and counts summed over the
workers, and a target's state as every state some worker has it in.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp

from relaycast.config import Config
from relaycast.log import EventLog
from relaycast.monitors.engine import Alerts, MonitorEngine
from relaycast.monitors.notify import Notifier
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.sealed import load_sealer
from relaycast.server.metrics_gauges import Family, merge_families, telemetry_gauges
from relaycast.server.stored_responses import OPS as RESPONSE_OPS
from relaycast.server.stored_responses import ResponseStore
from relaycast.store.reader import StoreReader
from relaycast.store.responses import ResponseTable
from relaycast.store.writer import StoreWriter
from relaycast.telemetry.exporters.base import http_session
from relaycast.telemetry.metrics import Metrics
from relaycast.telemetry.pipeline import Broadcaster
from relaycast.telemetry.saved import SavedSync

Sink = Callable[[RequestRecord], None]
STEP_S = 2.0  # at shutdown: stopping the monitors (their own calls have shorter timeouts)
MAX_RETIRED = 64


class Demotions:
    """The monitors' demotions in the telemetry process, for the workers to read."""

    def __init__(self) -> None:
        self.monitor_alerts: dict[tuple[str, str], str] = {}


class TelemetryHub:
    """Build with `await TelemetryHub.start(...)`; hand records to `sink`; `await close(deadline)`."""

    def __init__(
        self,
        config: Config,
        redactor: Redactor,
        log: EventLog,
        alerts: Alerts,
        clock: Callable[[], float] = time.time,
        reader: StoreReader | None = None,
        keeps_responses: bool = True,
    ) -> None:
        self.config = config
        # False where a host's state process keeps the stored responses (`relaycast.server.state_process`).
        self.keeps_responses = keeps_responses
        self.redactor = redactor
        self.log = log
        self.alerts = alerts
        self.clock = clock
        self.metrics = Metrics(config.metrics)
        self.store: StoreWriter | None = None
        self.reader = reader  # the monitors' (the serving process's own, when the hub runs in it)
        self._own_reader = False
        self.broadcaster: Broadcaster | None = None
        self.saved: SavedSync | None = None  # the destinations saved from the dashboard (with a store)
        self.monitors: MonitorEngine | None = None
        self.notifier: Notifier | None = None
        self.sinks: tuple[Sink, ...] = (self.metrics,)
        self.workers: dict[int, list[Family]] = {}  # each worker's gauges, as it last sent them
        self.responses = ResponseStore(clock=clock)  # the host's stored responses (`server.stored_responses`)
        # The counters of workers that went away, by pid: kept in the sums so they never go backwards.
        self.retired: dict[int, list[Family]] = {}
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        config = self.config
        if config.store is not None:
            # Retention runs on the same clock as the records.
            self.store = StoreWriter(config.store, self.redactor, self.log, self.clock)
            await self.store.start()
            self.sinks = (*self.sinks, self.store)
            if not config.store.privacy_mode and self.keeps_responses:
                self.responses.table = ResponseTable(config.store, self.redactor, self.log)
                self.responses.table.start()
            mon = config.monitors
            if mon is not None and mon.rules:
                if self.reader is None:
                    self.reader, self._own_reader = StoreReader(config.store), True
                self.notifier = Notifier(mon.notify, self._session(), self.log, self.redactor)
                self.notifier.start()
                self.monitors = MonitorEngine(
                    mon, self.reader, self.store, self.alerts, self.notifier, self.log, self.clock
                )
                self.monitors.start()
        # With a store, destinations can be saved from the dashboard: the broadcaster exists to take them.
        if config.broadcast and (config.broadcast.destinations or config.store is not None):
            servers = {p.name: p.server for p in config.providers.values() if p.server is not None}
            self.broadcaster = Broadcaster(config.broadcast, self._session(), self.redactor, self.log, servers=servers)
            self.broadcaster.start()
            self.sinks = (*self.sinks, self.broadcaster)
            if config.store is not None:
                self._start_saved(config, self.broadcaster)

    def _start_saved(self, config: Config, broadcaster: Broadcaster) -> None:
        """Apply the destinations saved in the store, now and whenever they change."""
        assert config.store is not None
        base = Path(config.source).parent if config.source else Path(".")
        if self.reader is None:
            self.reader, self._own_reader = StoreReader(config.store, threads=1), True
        sealer = partial(load_sealer, dict(os.environ), base)
        self.saved = SavedSync(self.reader, sealer, broadcaster, self.redactor, self.log, base)
        self.saved.start()

    def _session(self) -> aiohttp.ClientSession:
        """The exporters' and notifiers' own HTTP client: it never shares a pool (or a slowdown) with providers'."""
        if self._http is None:
            self._http = http_session()  # exporters pass allow_redirects=False; this refuses one a call site forgot
        return self._http

    def sink(self, record: RequestRecord) -> None:
        """Hand a finished record to every part. Never raises."""
        for s in self.sinks:
            try:
                s(record)
            except Exception as e:  # noqa: BLE001
                self.log.error("sink_failed", sink=type(s).__name__, error=type(e).__name__)

    # --- what the admin endpoints and /metrics read -----------------------------------------

    async def query(self, op: str, arg: Any = None) -> Any:
        """Plain data for one admin view: `broadcast`, `broadcast_test` (arg: a destination's name or None; None
        when no such destination), `store`, `monitors`, `monitors_evaluate`, `stats`, `metrics` (arg: the asking
        worker's id and gauges; the exposition text)."""
        if op == "broadcast":
            return self.broadcaster.status() if self.broadcaster else []
        if op == "broadcast_saved":  # the saved destinations' sync: None without a store
            return self.saved.status() if self.saved else None
        if op == "broadcast_sync":  # apply the saved destinations now (after a change made on this replica)
            if self.saved is not None:
                await self.saved.sync(force=True)
            return self.saved.status() if self.saved else None
        if op == "broadcast_test":
            b = self.broadcaster
            if b is None or (arg and arg not in b.destinations):
                return None
            results = await b.test(arg or None)
            return {n: {"ok": t.ok, "message": t.message} for n, t in results.items()}
        if op == "store":
            if self.store is None:
                return None
            return {
                **self.store.status(),
                "stored_responses": self.responses.status() if self.keeps_responses else None,
            }
        if op == "monitors":
            return self.monitors.status() if self.monitors else None
        if op == "monitors_evaluate":
            if self.monitors is None:
                return None
            events = await self.monitors.evaluate()
            return {"notifications": events, "monitors": self.monitors.status()}
        if op == "stats":
            return self.metrics.stats_snapshot()
        if op == "metrics":
            worker, gauges = arg
            self.workers[worker] = gauges
            return self.render_metrics()
        if op in RESPONSE_OPS:
            if op == "response_put":  # kept like a record: with what looks like a secret masked
                arg = [arg[0], self.redactor.scrub_bytes(bytes(arg[1]))]
            return await self.responses.query(op, arg)
        raise ValueError(f"unknown telemetry query {op!r}")

    def retire(self, worker: int, pid: int) -> None:
        """A worker's connection ended: its counters stay in the host's sums (its gauges go), until the same
        process connects again (`returned`). At most MAX_RETIRED are kept apart; older ones are summed into one."""
        families = self.workers.pop(worker, None)
        if families is None:
            return
        counters = [f for f in families if f[1] == "counter"]
        self.retired[pid] = counters
        if len(self.retired) > MAX_RETIRED:
            self.retired = {0: merge_families(self.retired.values())}

    def returned(self, pid: int) -> None:
        self.retired.pop(pid, None)

    def render_metrics(self) -> bytes:
        merged = merge_families([*(self.workers[w] for w in sorted(self.workers)), *self.retired.values()])
        return self.metrics.render([*merged, *telemetry_gauges(self.broadcaster, self.store, self.monitors)])

    # --- shutdown -----------------------------------------------------------------------------

    async def close(self, deadline: float, grace: Callable[[], float], bounded: Bounded) -> None:
        """Stop the monitors, then flush the broadcast, notification and store queues all at once until
        `deadline` (time.monotonic()): broadcast spools what it could not send, the store counts what it could not
        write. `grace()` is each step's time past the deadline to hand back what is left; `bounded` runs a step
        within a time and logs it if it overruns or fails."""

        def left(cap: float) -> float:
            return max(0.0, min(cap, deadline - time.monotonic()))

        if self.saved is not None:
            await bounded("broadcast_saved", self.saved.stop(), left(STEP_S))
            self.saved = None
        if self.monitors is not None:
            await bounded("monitors", self.monitors.stop(), left(STEP_S))
            self.monitors = None
        flushes = []
        if self.broadcaster is not None:
            flushes.append(bounded("broadcast", self.broadcaster.stop(left(float("inf"))), grace()))
        if self.notifier is not None:
            flushes.append(bounded("notifier", self.notifier.stop(left(5.0)), grace()))
        if self.store is not None:
            flushes.append(bounded("store", self.store.stop(left(float("inf"))), grace()))
        if self.responses.table is not None:
            flushes.append(bounded("stored_responses", self.responses.table.stop(left(float("inf"))), grace()))
        await asyncio.gather(*flushes)
        self.responses.table = None
        self.notifier = None
        if self._own_reader and self.reader is not None:
            await bounded("reader", self.reader.close(), grace())
            self.reader = None
        if self._http is not None:
            await bounded("telemetry_http", self._http.close(), grace())
            self._http = None

    def stopped_fields(self) -> dict[str, object]:
        """What the shutdown delivered, spooled and dropped, for the last log line."""
        fields: dict[str, object] = {}
        if self.broadcaster is not None:
            for d in self.broadcaster.status():
                dropped = ",".join(f"{r}:{n}" for r, n in sorted(d.get("dropped", {}).items()))
                fields[f"broadcast_{d.get('name')}"] = (
                    f"sent={d.get('sent', 0)} spooled_batches={d.get('spooled_batches', 0)} dropped={dropped or 0}"
                )
        if self.store is not None:
            st = self.store.status()
            dropped = ",".join(f"{r}:{n}" for r, n in sorted(st["dropped"].items()))
            fields["store"] = f"written={st['written']} queued={st['queued']} dropped={dropped or 0}"
        return fields


Bounded = Callable[[str, Awaitable[object], float], Awaitable[None]]
