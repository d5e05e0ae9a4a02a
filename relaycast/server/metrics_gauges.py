"""The gauges and counters `/metrics` reads at scrape time: a worker's own (routing health, client connections, the
hand-off to the telemetry process) and the telemetry parts' (the broadcast pipeline, the store writer, the
monitors), and the merge of several workers' gauges into one view of the host."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from relaycast.routing.health import configured_targets

if TYPE_CHECKING:
    from relaycast.monitors.engine import MonitorEngine
    from relaycast.server.services import Services
    from relaycast.store.writer import StoreWriter
    from relaycast.telemetry.pipeline import Broadcaster


Samples = list[tuple[tuple[str, ...], float]]
Family = tuple[str, str, str, tuple[str, ...], Samples]  # name, type, help, label names, samples
# Gauges whose samples are 0 or 1 per state: merged by max (a target shows every state some worker has it in).
MAX_MERGED = frozenset({"relaycast_target_state", "relaycast_target_demoted"})


def merge_families(workers: Iterable[Iterable[Any]]) -> list[Family]:
    """One view of several workers' families (as sent over the channel: lists for tuples): samples with the same
    labels summed, or for the 0-or-1 state gauges, the largest. Families keep their first worker's order."""
    merged: dict[str, tuple[str, str, tuple[str, ...], dict[tuple[str, ...], float]]] = {}
    for families in workers:
        for name, kind, help_, labels, samples in families:
            fam = merged.get(name)
            if fam is None:
                fam = merged[name] = (kind, help_, tuple(labels), {})
            acc = fam[3]
            for values, v in samples:
                k = tuple(values)
                if k not in acc:
                    acc[k] = v
                elif name in MAX_MERGED:
                    acc[k] = max(acc[k], v)
                else:
                    acc[k] += v
    return [(n, kind, help_, labels, list(acc.items())) for n, (kind, help_, labels, acc) in merged.items()]


def telemetry_gauges(
    broadcaster: Broadcaster | None, store: StoreWriter | None, monitors: MonitorEngine | None
) -> list[Family]:
    out: list[Family] = []
    if broadcaster is not None:
        from relaycast.telemetry.pipeline import DROP_REASONS  # loaded with the broadcaster: not in a worker

        dests: list[dict[str, Any]] = broadcaster.status()
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
    if store is not None:
        s = store.status()
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
    if monitors is not None:
        firing: list[tuple[tuple[str, ...], float]] = [
            ((r["name"], f["scope"]), 1.0 if f["state"] == "ALERT" else 0.0)
            for r in monitors.status()["rules"]
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


STATES = ("ok", "cooling", "open", "half_open", "probing")


def worker_gauges(services: Services) -> list[Family]:
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
    if services.host is not None:
        out.extend(link_gauges(services.host.status()))
    return out


def link_gauges(st: dict[str, object]) -> list[Family]:
    """A worker's hand-off to the telemetry process (summed over the workers in the host's view)."""
    dropped = st["dropped"]
    assert isinstance(dropped, dict)
    return [
        (
            "relaycast_telemetry_handed_total",
            "counter",
            "Records the workers handed to the telemetry process.",
            (),
            [((), float(st["handed"]))],  # type: ignore[arg-type]
        ),
        (
            "relaycast_telemetry_acknowledged_total",
            "counter",
            "Records the telemetry process acknowledged (taken into its queues).",
            (),
            [((), float(st["acknowledged"]))],  # type: ignore[arg-type]
        ),
        (
            "relaycast_telemetry_dropped_total",
            "counter",
            "Records lost between a worker and the telemetry process, by reason.",
            ("reason",),
            [((r,), float(n)) for r, n in dropped.items()],
        ),
        (
            "relaycast_telemetry_backlog",
            "gauge",
            "Records waiting in the workers for the telemetry process.",
            (),
            [((), float(st["backlog"]))],  # type: ignore[arg-type]
        ),
        (
            "relaycast_telemetry_in_flight",
            "gauge",
            "Records written to the telemetry process and not yet acknowledged.",
            (),
            [((), float(st["in_flight"]))],  # type: ignore[arg-type]
        ),
        (
            "relaycast_telemetry_connected",
            "gauge",
            "Workers connected to the telemetry process.",
            (),
            [((), 1.0 if st["connected"] else 0.0)],
        ),
    ]


def view_age(age_s: float) -> bytes:
    """The family that says how old the host's view in a `/metrics` answer is (`Services.view`)."""
    return (
        "# HELP relaycast_metrics_view_age_seconds Seconds since the telemetry process made the view served: 0 when "
        "it answered in time, else the age of the last view it gave this worker (it was busy, as at saturation).\n"
        "# TYPE relaycast_metrics_view_age_seconds gauge\n"
        f"relaycast_metrics_view_age_seconds {age_s:.3f}\n"
    ).encode()
