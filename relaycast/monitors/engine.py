"""The monitor engine: evaluates every rule on an interval (or on demand), moves each (rule, scope) between OK
and ALERT, opens and resolves incidents in the store, notifies once per incident and once on resolution, and
tells the routing health board which targets its latency and error-rate alerts cover, so the monitors and the
router agree on what is healthy.

Evaluation reads the store after flushing this replica's queued records into it, on the store's reader threads:
the event loop never waits on a query. `evaluate` fetches the rows a rule needs (`relaycast.store.monitor_queries`)
and hands them to the rule's pure function (`relaycast.monitors.rules`). A rule that fails to evaluate is logged
and skipped; the others go on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from relaycast.log import EventLog
from relaycast.monitors import rules
from relaycast.monitors.notify import Notifier
from relaycast.monitors.rules import Finding
from relaycast.monitors.settings import MonitorsConfig, Rule
from relaycast.store import incidents
from relaycast.store import monitor_queries as q
from relaycast.store.db import Connection, is_db_error
from relaycast.store.reader import StoreReader
from relaycast.store.writer import StoreWriter


class Alerts(Protocol):
    """Where the monitors put the (route, target) pairs their alerts demote, with the rule's name: the routing
    health board, or, in a host's telemetry process, a holder the workers read."""

    monitor_alerts: dict[tuple[str, str], str]


class MonitorEngine:
    def __init__(
        self,
        cfg: MonitorsConfig,
        reader: StoreReader,
        writer: StoreWriter | None,
        board: Alerts,
        notifier: Notifier,
        log: EventLog,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._reader = reader
        self._writer = writer
        self._board = board
        self._notifier = notifier
        self._log = log
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.last: dict[str, list[dict[str, Any]]] = {}  # rule -> its findings at the last evaluation
        self.last_at: float | None = None
        self.evaluations = 0
        self.errors = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relaycast-monitors")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval_s)
            try:
                await self.evaluate()
            except Exception as e:  # noqa: BLE001 - the loop goes on; the next interval tries again
                self.errors += 1
                self._log.error("monitor_evaluation_failed", error=type(e).__name__, message=str(e)[:200])

    async def evaluate(self) -> list[dict[str, Any]]:
        """Evaluate every rule now; returns the notifications it sent (alerts and resolutions)."""
        async with self._lock:
            if self._writer is not None:
                await self._writer.flush()
            now = self._clock()
            events, demotions = await self._reader.run(self._evaluate_all, now)
            for rule, event in events:
                self._notifier.send(event, rule.notify)
            self._board.monitor_alerts = demotions
            self.last_at = now
            self.evaluations += 1
            return [e for _, e in events]

    # --- on a reader thread -------------------------------------------------------------------

    def _evaluate_all(
        self, conn: Connection, now: float
    ) -> tuple[list[tuple[Rule, dict[str, Any]]], dict[tuple[str, str], str]]:
        now_ms = int(now * 1000)
        events: list[tuple[Rule, dict[str, Any]]] = []
        demotions: dict[tuple[str, str], str] = {}
        open_now = incidents.open_map(conn)
        for rule in self.cfg.rules:
            try:
                findings = evaluate(conn, rule, now)
            except Exception as e:
                if not is_db_error(e):
                    raise
                self.errors += 1
                self._log.error("monitor_rule_failed", rule=rule.name, error=str(e).splitlines()[0][:200])
                continue
            self.last[rule.name] = [_finding_doc(f) for f in findings]
            seen = set()
            for f in findings:
                seen.add(f.scope)
                key = (rule.name, f.scope)
                if f.firing and key not in open_now:
                    new = incidents.NewIncident(
                        rule.name, rule.kind, f.scope, f.value, f.threshold, f.message, f.details
                    )
                    inc = incidents.open_incident(conn, new, now_ms)
                    if inc is not None:
                        open_now[key] = inc["id"]
                        events.append((rule, _event("alert", rule, f, inc, now_ms)))
                    else:
                        open_now[key] = "(another replica)"
                elif not f.firing and key in open_now:
                    inc = incidents.resolve_incident(conn, rule.name, f.scope, f.message, now_ms)
                    open_now.pop(key, None)
                    if inc is not None:
                        events.append((rule, _event("resolved", rule, f, inc, now_ms)))
                if f.firing and f.demote is not None:
                    demotions[f.demote] = f"monitor {rule.name}: {f.message}"
            for rname, scope in [k for k in open_now if k[0] == rule.name and k[1] not in seen]:
                # The scope has no data in the window any more (no traffic): the condition no longer holds.
                msg = f"no data for {scope or 'the rule'} in the window"
                inc = incidents.resolve_incident(conn, rule.name, scope, msg, now_ms)
                open_now.pop((rname, scope), None)
                if inc is not None:
                    events.append((rule, _event("resolved", rule, Finding(scope, False, None, 0, msg), inc, now_ms)))
        return events, demotions

    def status(self) -> dict[str, Any]:
        return {
            "interval_s": self.cfg.interval_s,
            "evaluations": self.evaluations,
            "errors": self.errors,
            "last_evaluated_at": self.last_at,
            "rules": [{"name": r.name, "kind": r.kind, "findings": self.last.get(r.name, [])} for r in self.cfg.rules],
            "notify": self._notifier.status(),
        }


def evaluate(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    """The rule's findings at `now`: the rows it judges, read from the store, then judged."""
    if rule.kind == "spend_spike":
        return _spend_spike(conn, rule, now)
    if rule.kind == "latency_sla":
        since, until = rules.span_ms(rule, now)
        samples = q.attempt_latencies(
            conn, since, until, route=rule.route, model=rule.model, provider=rule.provider, target=rule.target
        )
        return rules.latency_sla(rule, samples)
    if rule.kind == "error_rate":
        assert rule.provider is not None
        return rules.error_rate(rule, q.attempt_outcomes(conn, rule.provider, *rules.span_ms(rule, now)))
    assert rule.scope is not None
    return rules.budget(rule, now, q.usage_total(conn, *rule.scope, *rules.budget_span(rule, now)))


def _spend_spike(conn: Connection, rule: Rule, now: float) -> list[Finding]:
    windows = rules.spend_windows(rule, now)
    first = q.first_request_ms(conn)
    findings = rules.spend_spike(rule, now, first, q.spend_by_window(conn, windows, rule.by, rule.where))
    usable = rules.usable_windows(rule, now, first)
    out = []
    for f in findings:
        if f.firing:
            where = rules.contributor_where(rule, f)
            by_dim = {d: q.spend_by_window(conn, windows, d, where) for d in rules.contributor_dims(rule)}
            f = rules.with_contributors(f, rules.contributors(usable, by_dim))
        out.append(f)
    return out


def _finding_doc(f: Finding) -> dict[str, Any]:
    return {
        "scope": f.scope,
        "state": "ALERT" if f.firing else "OK",
        "value": f.value,
        "threshold": f.threshold,
        "message": f.message,
    }


def _event(kind: str, rule: Rule, f: Finding, inc: dict[str, Any], now_ms: int) -> dict[str, Any]:
    return {
        "event": kind,
        "incident_id": inc["id"],
        "rule": rule.name,
        "kind": rule.kind,
        "scope": f.scope,
        "state": "ALERT" if kind == "alert" else "OK",
        "value": f.value,
        "threshold": f.threshold,
        "message": f.message,
        "details": f.details,
        "opened_at_ms": inc["opened_ms"],
        "resolved_at_ms": now_ms if kind == "resolved" else None,
        "source": "relaycast",
    }
