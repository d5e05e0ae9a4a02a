"""bench/load.py's results: one measured run, the medians over rounds, the ratios to the bare forwarder, the goals
of issue #14 (met or not), and the Markdown tables for bench/README.md."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from load_targets import TITLES

NOISY_CORES = 0.1  # flag a run when other processes used this much CPU during it
SERVING = "worker"  # the role of the processes that serve requests

# Goals for the production features, as ratios to the bare forwarder (issue #14) and to relaycast with nothing on.
GOAL_RPS = 0.6
GOAL_CPU_TOTAL = 1.7
GOAL_CPU_SERVING = 1.3
GOAL_ADDED_LATENCY = 1.5
GOAL_ON_OFF_RPS = 0.95
GOAL_ON_OFF_P99 = 1.10
GOAL_RSS_MB = 100.0


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    stream: bool
    latency_ms: int


SCENARIOS = (
    Load("json", "JSON, instant upstream", False, 0),
    Load("sse", "SSE (22 chunks), instant upstream", True, 0),
    Load("json-50ms", "JSON, 50 ms upstream", False, 50),
)
SCENARIO_TITLES = {s.key: s.title for s in SCENARIOS}


@dataclass
class RunResult:
    round: int
    scenario: str
    target: str
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    bytes_per_request: float
    errors: dict[str, int]
    cpu_us: dict[str, float] = field(default_factory=dict)  # role -> CPU µs per request
    processes: dict[str, int] = field(default_factory=dict)  # role -> how many
    hwm_mb: dict[str, float] = field(default_factory=dict)  # role -> largest peak RSS among its processes
    rss_mb: dict[str, float] = field(default_factory=dict)
    added_p50_ms: float | None = None  # against direct, same round and scenario
    added_p99_ms: float | None = None
    upstream_cpu_us: float | None = None
    wrk_cpu_us: float | None = None
    settle_s: float = 0.0  # how long the target took to go idle after the run (counted in its CPU)
    other_cpu_cores: float = 0.0  # CPU used meanwhile by processes that are not part of the benchmark
    other_on_target_cores: float | None = None  # of which on the target's own cores (when pinned apart)
    diagnosis: dict[str, Any] = field(default_factory=dict)
    # records the production target's telemetry dropped during this run (its hand-off, store, each destination)
    telemetry_dropped: dict[str, int] | None = None

    @property
    def cpu_total_us(self) -> float:
        return sum(self.cpu_us.values())

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


def _median(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None and v == v]
    return statistics.median(vs) if vs else None


def summarize(runs: list[RunResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> scenario -> medians over rounds (peak RSS: the largest; errors: the sum)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for target in dict.fromkeys(r.target for r in runs):
        for sc in dict.fromkeys(r.scenario for r in runs):
            rs = [r for r in runs if r.target == target and r.scenario == sc]
            if not rs:
                continue
            roles = sorted({role for r in rs for role in r.cpu_us})
            errors: dict[str, int] = {}
            for r in rs:
                for k, v in r.errors.items():
                    errors[k] = errors.get(k, 0) + v
            out.setdefault(target, {})[sc] = {
                "rounds": len(rs),
                "rps": _median(r.rps for r in rs),
                "p50_ms": _median(r.p50_ms for r in rs),
                "p99_ms": _median(r.p99_ms for r in rs),
                "added_p50_ms": _median(r.added_p50_ms for r in rs),
                "added_p99_ms": _median(r.added_p99_ms for r in rs),
                "cpu_total_us": _median(r.cpu_total_us for r in rs),
                "cpu_us": {role: _median(r.cpu_us.get(role, 0.0) for r in rs) for role in roles},
                "serving_cpu_us": _median(r.cpu_us.get(SERVING, 0.0) for r in rs),
                "processes": max((r.processes for r in rs), key=lambda p: sum(p.values())),
                "peak_rss_mb": {role: max(r.hwm_mb.get(role, 0.0) for r in rs) for role in roles},
                "upstream_cpu_us": _median(r.upstream_cpu_us for r in rs),
                "errors": errors,
                "telemetry_dropped": _summed([r.telemetry_dropped for r in rs]),
                "rps_by_round": [r.rps for r in rs],
                # per round, for the ratios to the forwarder's run of the same round (`ratios`' ranges)
                "by_round": {
                    str(r.round): {"rps": r.rps, "cpu_total": r.cpu_total_us, "cpu_serving": r.cpu_us.get(SERVING, 0.0)}
                    for r in rs
                },
            }
    return out


def _summed(counts: list[dict[str, int] | None]) -> dict[str, int] | None:
    """Counts by name summed over rounds; None when no round counted any."""
    if all(c is None for c in counts):
        return None
    out: dict[str, int] = {}
    for c in counts:
        for k, v in (c or {}).items():
            out[k] = out.get(k, 0) + v
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def ratios(summ: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """target -> scenario -> ratios to the bare forwarder in the same run (medians over medians), and for
    throughput and CPU the lowest and highest of the ratios to the forwarder's run of the same round (`*_rounds`)."""
    fwd = summ.get("forwarder", {})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for target, by_sc in summ.items():
        if target in ("direct",):
            continue
        for sc, s in by_sc.items():
            f = fwd.get(sc, {})
            out.setdefault(target, {})[sc] = {
                "rps": _ratio(s["rps"], f.get("rps")),
                "cpu_total": _ratio(s["cpu_total_us"], f.get("cpu_total_us")),
                "cpu_serving": _ratio(s["serving_cpu_us"], f.get("serving_cpu_us")),
                "added_p50": _ratio(s["added_p50_ms"], f.get("added_p50_ms")),
                "added_p99": _ratio(s["added_p99_ms"], f.get("added_p99_ms")),
                **{f"{k}_rounds": _round_range(target, s, f, k) for k in ROUND_RATIOS},
            }
    return out


ROUND_RATIOS = ("rps", "cpu_total", "cpu_serving")


def _round_range(target: str, mine: dict[str, Any], fwd: dict[str, Any], key: str) -> list[float] | None:
    """[lowest, highest] of a target's ratio to the forwarder, round by round; None with fewer than two rounds, and
    for the forwarder itself (1 in every round)."""
    if target == "forwarder":
        return None
    rounds, fwd_rounds = mine.get("by_round", {}), fwd.get("by_round", {})
    each = [_ratio(rounds[r][key], fwd_rounds[r][key]) for r in rounds if r in fwd_rounds]
    vs = [v for v in each if v is not None]
    return [min(vs), max(vs)] if len(vs) > 1 else None


def _goal(target: str, value: float | None, limit: float, at_least: bool, shown: str) -> dict[str, Any]:
    met = value is not None and (value >= limit if at_least else value <= limit)
    return {"goal": target, "value": shown if value is not None else "not measured", "met": met}


def goals(summ: dict[str, dict[str, dict[str, Any]]], rat: dict[str, Any]) -> list[dict[str, Any]]:
    prod, bare = summ.get("relaycast-prod", {}), summ.get("relaycast-bare", {})
    rp = rat.get("relaycast-prod", {})
    out: list[dict[str, Any]] = []
    if not prod or "forwarder" not in summ:
        return out

    def x(v: float | None) -> str:
        return f"{v:.2f}x" if v is not None else "–"

    for sc in ("json", "sse"):
        v = rp.get(sc, {}).get("rps")
        out.append(
            _goal(
                f"production features throughput ≥ {GOAL_RPS}x the forwarder ({SCENARIO_TITLES[sc]})",
                v,
                GOAL_RPS,
                True,
                x(v),
            )
        )
    for sc in ("json", "sse", "json-50ms"):
        r = rp.get(sc, {})
        if not r:
            continue
        v = r.get("cpu_total")
        out.append(
            _goal(
                f"CPU per request, all processes, ≤ {GOAL_CPU_TOTAL}x the forwarder's ({SCENARIO_TITLES[sc]})",
                v,
                GOAL_CPU_TOTAL,
                False,
                x(v),
            )
        )
        v = r.get("cpu_serving")
        out.append(
            _goal(
                f"CPU per request, serving process, ≤ {GOAL_CPU_SERVING}x the forwarder's ({SCENARIO_TITLES[sc]})",
                v,
                GOAL_CPU_SERVING,
                False,
                x(v),
            )
        )
    r = rp.get("json-50ms", {})
    if r:
        for pct in ("p50", "p99"):
            v = r.get(f"added_{pct}")
            added = prod["json-50ms"][f"added_{pct}_ms"]
            fwd_added = summ["forwarder"]["json-50ms"][f"added_{pct}_ms"]
            shown = f"{x(v)} (+{added:.1f} ms against +{fwd_added:.1f} ms)" if v is not None else "–"
            out.append(
                _goal(
                    f"added {pct} at 50 connections, 50 ms upstream, ≤ {GOAL_ADDED_LATENCY}x the forwarder's",
                    v,
                    GOAL_ADDED_LATENCY,
                    False,
                    shown,
                )
            )
    # On against off: the production features with and without the store and broadcast (`relaycast-off`); when it
    # did not run, against nothing on at all (which also leaves out the key and its limits).
    off, off_name = (
        (summ["relaycast-off"], "store-and-broadcast-off") if "relaycast-off" in summ else (bare, "nothing-on")
    )
    for sc, s in prod.items():
        b = off.get(sc)
        if not b:
            continue
        v = _ratio(s["rps"], b["rps"])
        out.append(
            _goal(
                f"broadcast and store on vs off: throughput within 5% ({SCENARIO_TITLES[sc]})",
                v,
                GOAL_ON_OFF_RPS,
                True,
                f"{x(v)} of {off_name}",
            )
        )
        v = _ratio(s["p99_ms"], b["p99_ms"])
        out.append(
            _goal(
                f"broadcast and store on vs off: p99 within 10% ({SCENARIO_TITLES[sc]})",
                v,
                GOAL_ON_OFF_P99,
                False,
                f"{x(v)} of {off_name} ({s['p99_ms']:.1f} ms against {b['p99_ms']:.1f} ms)",
            )
        )
    peak = max((s["peak_rss_mb"].get(SERVING, 0.0) for s in prod.values()), default=None)
    out.append(
        _goal(
            f"peak RSS of a serving process ≤ {GOAL_RSS_MB:.0f} MB (production features)",
            peak,
            GOAL_RSS_MB,
            False,
            f"{peak:.0f} MB" if peak is not None else "–",
        )
    )
    return out


# --- Markdown -------------------------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 1, signed: bool = False) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:+,.{digits}f}" if signed else f"{v:,.{digits}f}"


def _spread(values: list[float]) -> str:
    return f" ({min(values):,.0f}–{max(values):,.0f})" if len(values) > 1 else ""


def _by_round(span: list[float] | None, unit: str = "x") -> str:
    """`; by round 0.92–1.39x`: the range of a ratio taken round by round, when there were rounds to compare."""
    return f"; by round {span[0]:.2f}–{span[1]:.2f}{unit}" if span else ""


def _roles(cpu: dict[str, float | None]) -> str:
    order = ["worker", "state", "telemetry", "supervisor"]
    keys = sorted(cpu, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{k} {_f(cpu[k], 0)}" for k in keys)


def markdown(result: dict[str, Any]) -> str:
    info, s = result["machine"], result["settings"]
    summ, rat = result["summary"], result["ratios"]
    targets = [t for t in TITLES if t in summ]
    comp = [t for t in ("forwarder", "relaycast-bare", "relaycast-off", "relaycast-prod") if t in summ]
    workers = s["workers"]
    lines = [
        f"{info['date'][:10]}. Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['wrk']}; "
        f"relaycast {info['git'] or '?'}. `{s['command']}`",
        "",
        f"{s['rounds']} interleaved round(s) (each round: every scenario; in each, direct, then the other targets in an order rotating by round), wrk -t1 "
        f"-c{s['conns']}, {s['duration_s']} s per run after a {s['warmup_s']} s warm-up; medians over rounds. "
        f"{workers} worker(s) per target (relaycast `serve{' --workers ' + str(workers) if workers > 1 else ''}`, "
        f"the forwarder `--workers {workers}`); relaycast's `server.telemetry_priority`: "
        f"{s.get('telemetry_priority', 'auto')}. Layout: {s['layout']}. Every answer has 20 output tokens. "
        "CPU per request: user+system time of the target's processes (all of them, found again at the start and "
        "end of each run) from the start of the run until the target is idle again, divided by the requests wrk "
        'completed. Ratios are of the medians; "by round": the lowest and highest of a target\'s ratio to the '
        "forwarder's run in the same round.",
        "",
    ]
    if comp:
        head = "| | " + " | ".join(TITLES[t] for t in comp) + " | goal for production features |"
        lines += [head, "|---|" + "---:|" * len(comp) + "---|"]

        def row(name: str, cells: list[str], goal: str) -> None:
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {goal} |")

        for sc, label in (("json", "JSON req/s, instant upstream"), ("sse", "SSE req/s (22 chunks), instant upstream")):
            if all(sc in summ[t] for t in comp):
                row(
                    label,
                    [
                        f"{_f(rat.get(t, {}).get(sc, {}).get('rps'), 2)} ({_f(summ[t][sc]['rps'], 0)}"
                        f"{_by_round(rat.get(t, {}).get(sc, {}).get('rps_rounds'), '')})"
                        for t in comp
                    ],
                    f"≥ {GOAL_RPS}",
                )
        for sc in ("json", "sse", "json-50ms"):
            if all(sc in summ[t] for t in comp):
                row(
                    f"CPU per request, all processes ({SCENARIO_TITLES[sc]})",
                    [
                        f"{_f(rat[t][sc]['cpu_total'], 2)}x ({_f(summ[t][sc]['cpu_total_us'], 0)} µs"
                        f"{_by_round(rat[t][sc].get('cpu_total_rounds'))})"
                        for t in comp
                    ],
                    f"≤ {GOAL_CPU_TOTAL}x",
                )
                row(
                    f"CPU per request, serving process(es) ({SCENARIO_TITLES[sc]})",
                    [
                        f"{_f(rat[t][sc]['cpu_serving'], 2)}x ({_f(summ[t][sc]['serving_cpu_us'], 0)} µs"
                        f"{_by_round(rat[t][sc].get('cpu_serving_rounds'))})"
                        for t in comp
                    ],
                    f"≤ {GOAL_CPU_SERVING}x",
                )
        if all("json-50ms" in summ[t] for t in comp):
            cells = []
            for t in comp:
                m = summ[t]["json-50ms"]
                r = rat[t]["json-50ms"]
                cells.append(
                    f"{_f(m['added_p50_ms'], 1, True)} / {_f(m['added_p99_ms'], 1, True)} ms "
                    f"({_f(r['added_p50'], 2)}x / {_f(r['added_p99'], 2)}x)"
                )
            row(f"added p50 / p99 at c{s['conns']}, 50 ms upstream", cells, f"≤ {GOAL_ADDED_LATENCY}x")
        lines.append("")
    if result["goals"]:
        lines += ["Goals (issue #14):", ""]
        lines += [f"- {'✅ met' if g['met'] else '❌ not met'}: {g['goal']} — {g['value']}" for g in result["goals"]]
        lines.append("")
    lines += [
        f"Every target and scenario (medians of {s['rounds']} round(s); added latency against direct in the same "
        "round; req/s with its range over rounds; CPU µs per request in total and by process role; peak RSS: the largest "
        "VmHWM of a serving process; telemetry dropped: records the production target's hand-off, store or "
        "destinations dropped during the runs, summed over rounds, by where):",
        "",
        "| scenario | target | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | CPU µs/req | by process | "
        "peak RSS MB | errors | telemetry dropped |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for ld in SCENARIOS:
        for t in targets:
            m = summ[t].get(ld.key)
            if m is None:
                continue
            err = "–"
            if sum(m["errors"].values()):
                err = "**" + ", ".join(f"{k} {v}" for k, v in m["errors"].items()) + "**"
            procs = ", ".join(f"{n} {k}" for k, n in sorted(m["processes"].items()))
            lost = m.get("telemetry_dropped")
            drops = (
                "–" if lost is None else "**" + ", ".join(f"{k} {v:,}" for k, v in lost.items()) + "**" if lost else "0"
            )
            lines.append(
                f"| {ld.title} | {TITLES[t]} | {_f(m['rps'], 0)}{_spread(m['rps_by_round'])} | {_f(m['p50_ms'], 2)} | "
                f"{_f(m['p99_ms'], 2)} | "
                f"{_f(m['added_p50_ms'], 2, True)} | {_f(m['added_p99_ms'], 2, True)} | {_f(m['cpu_total_us'], 0)} | "
                f"{_roles(m['cpu_us']) if t != 'direct' else 'the fake upstream'} ({procs}) | "
                f"{_f(m['peak_rss_mb'].get(SERVING), 0)} | {err} | {drops} |"
            )
    lines.append("")
    tel = result.get("telemetry")
    if tel:
        lines += [telemetry_line(tel, result.get("requests_sent", {}).get("relaycast-prod")), ""]
    runs = result["runs"]
    noisy = [r["other_cpu_cores"] for r in runs if (r["other_cpu_cores"] or 0) >= NOISY_CORES]
    if noisy:
        on_target = [r["other_on_target_cores"] for r in runs if r.get("other_on_target_cores") is not None]
        where = (
            f"; on the target's own core: median {statistics.median(on_target):.2f}, at most {max(on_target):.2f}"
            if on_target
            else ""
        )
        lines += [
            f"Other processes on the machine used CPU during {len(noisy)} of {len(runs)} runs (median "
            f"{statistics.median(noisy):.2f} cores, at most {max(noisy):.2f}{where}; every run's figures are in the "
            "JSON): throughput and latency are noisier than on a quiet machine; CPU per request is the least affected.",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def telemetry_line(tel: dict[str, Any], sent: int | None) -> str:
    """What the production target's store and destinations did with the requests it answered."""
    parts = []
    link = tel.get("link") or {}
    if "handed" in link:
        lost = {r: n for r, n in (link.get("dropped") or {}).items() if n}
        why = ", ".join(f"{n:,} {r}" for r, n in lost.items())
        parts.append(f"the workers handed {link['handed']:,} records to the telemetry process ({why or '0'} dropped)")
    store = (tel.get("store") or {}).get("store") or {}
    if "written" in store:
        dropped = sum((store.get("dropped") or {}).values())
        parts.append(f"store wrote {store['written']:,} records ({dropped:,} dropped, {store.get('queued', 0)} queued)")
    for d in (tel.get("broadcast") or {}).get("destinations") or []:
        parts.append(
            f"{d.get('name')} sent {d.get('sent', 0):,} ({d.get('dropped_total', 0):,} dropped, "
            f"{d.get('queued', 0)} queued, {d.get('spooled_records', 0)} spooled)"
        )
    about = f" of about {sent:,} requests answered" if sent else ""
    return "Production features at the end" + about + ": " + ("; ".join(parts) or "no status") + "."
