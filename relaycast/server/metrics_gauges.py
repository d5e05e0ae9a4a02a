"""The gauges and counters `/metrics` reads at scrape time from the parts that keep their own state: routing
health, the broadcast pipeline, the store writer and the monitors."""

from __future__ import annotations

from typing import Any

from relaycast.routing.health import configured_targets
from relaycast.server.services import Services
from relaycast.telemetry.pipeline import DROP_REASONS

STATES = ("ok", "cooling", "open", "half_open", "probing")
Family = tuple[str, str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]


def scrape_gauges(services: Services) -> list[Family]:
    out: list[Family] = []
    board = services.board
    states: list[tuple[tuple[str, ...], float]] = []
    demoted: list[tuple[tuple[str, ...], float]] = []
    configured = configured_targets(services.config.models, services.config.providers)
    for name in list(board.targets()):
        st = board.state(name)
        if st == "ok" and name not in configured:
            continue  # a pass-through target (`provider/any-model`) shows only while something is wrong with it
        states.extend(((name, s), 1.0 if s == st else 0.0) for s in STATES)
    for route, target in board.demoted:
        demoted.append(((route, target), 1.0))
    out.append(
        (
            "relaycast_target_state",
            "gauge",
            "Routing state of each target (1 for its current state).",
            ("target", "state"),
            states,
        )
    )
    out.append(
        (
            "relaycast_target_demoted",
            "gauge",
            "Targets demoted in a route (SLA or error rate).",
            ("route", "target"),
            demoted,
        )
    )
    out.append(
        (
            "relaycast_pass_through_targets",
            "gauge",
            "Targets the config does not define that routing keeps health for (bounded; least recently used go).",
            (),
            [((), float(board.pass_through_count()))],
        )
    )
    out.append(
        (
            "relaycast_pass_through_targets_evicted_total",
            "counter",
            "Pass-through targets whose health was forgotten to make room for others.",
            (),
            [((), float(board.evicted))],
        )
    )
    if services.broadcaster is not None:
        dests: list[dict[str, Any]] = services.broadcaster.status()
        out.append(
            (
                "relaycast_broadcast_sent_total",
                "counter",
                "Records delivered to each broadcast destination.",
                ("destination",),
                [((d["name"],), d["sent"]) for d in dests],
            )
        )
        out.append(
            (
                "relaycast_broadcast_retries_total",
                "counter",
                "Batch retries per destination.",
                ("destination",),
                [((d["name"],), d["retries"]) for d in dests],
            )
        )
        out.append(
            (
                "relaycast_broadcast_replayed_total",
                "counter",
                "Records delivered from the spool per destination (counted in sent too).",
                ("destination",),
                [((d["name"],), d["replayed"]) for d in dests],
            )
        )
        out.append(
            (
                "relaycast_broadcast_dropped_total",
                "counter",
                "Records dropped per destination, by reason (every known reason, 0 until the first drop).",
                ("destination", "reason"),
                [
                    ((d["name"], r), d["dropped"].get(r, 0))
                    for d in dests
                    for r in (*DROP_REASONS, *sorted(set(d["dropped"]) - set(DROP_REASONS)))
                ],
            )
        )
        out.append(
            (
                "relaycast_broadcast_healthy",
                "gauge",
                "1 while a destination answers, 0 while it is down (its records go to the spool).",
                ("destination",),
                [((d["name"],), 1.0 if d["healthy"] else 0.0) for d in dests],
            )
        )
        out.append(
            (
                "relaycast_broadcast_queued",
                "gauge",
                "Records waiting per destination.",
                ("destination",),
                [((d["name"],), d["queued"]) for d in dests],
            )
        )
        out.append(
            (
                "relaycast_broadcast_spool_bytes",
                "gauge",
                "Bytes spooled to disk per destination.",
                ("destination",),
                [((d["name"],), d["spool_bytes"]) for d in dests],
            )
        )
        out.append(
            (
                "relaycast_broadcast_spooled_records",
                "gauge",
                "Records waiting in the spool per destination.",
                ("destination",),
                [((d["name"],), d["spooled_records"]) for d in dests],
            )
        )
    if services.store is not None:
        s = services.store.status()
        out.append(
            ("relaycast_store_written_total", "counter", "Requests written to the store.", (), [((), s["written"])])
        )
        out.append(
            (
                "relaycast_store_dropped_total",
                "counter",
                "Requests the store lost, by reason.",
                ("reason",),
                [((r,), n) for r, n in s["dropped"].items()],
            )
        )
        out.append(
            ("relaycast_store_queued", "gauge", "Requests waiting to be written to the store.", (), [((), s["queued"])])
        )
        out.append(
            (
                "relaycast_store_minimal_total",
                "counter",
                "Requests the store could not take whole, written as a minimal row (ids, status, cost).",
                (),
                [((), s["minimal"])],
            )
        )
    if services.connections is not None:
        counts = services.connections()
        out.append(
            ("relaycast_connections_open", "gauge", "Client connections open.", (), [((), float(counts["open"]))])
        )
        out.append(
            (
                "relaycast_connections_refused_total",
                "counter",
                "Client connections answered and closed by a guard: header or body deadline, header size, the cap.",
                ("reason",),
                [((k,), float(v)) for k, v in counts.items() if k != "open"],
            )
        )
    if services.monitors is not None:
        firing: list[tuple[tuple[str, ...], float]] = [
            ((r["name"], f["scope"]), 1.0 if f["state"] == "ALERT" else 0.0)
            for r in services.monitors.status()["rules"]
            for f in r["findings"]
        ]
        out.append(
            (
                "relaycast_monitor_alerting",
                "gauge",
                "1 while a monitor rule fires for a scope.",
                ("rule", "scope"),
                firing,
            )
        )
    return out
