"""Load benchmark: relaycast against a bare Python forwarder at equal CPU, in one interleaved run.

    python bench/load.py                  # 3 rounds, 8 s runs after a 2 s warm-up (about 10 minutes)
    python bench/load.py --rounds 5 --duration 10
    python bench/load.py --workers 2      # the scaling row: 2 workers each, everything on cores 0-1
    python bench/load.py --telemetry-priority 10   # relaycast's telemetry process at nice 10 instead of auto
    python bench/load.py --quick          # smoke test: 1 round of 2 s runs

Targets (bench/load_targets.py): `direct` (the fake upstream), `forwarder` (bench/forwarder.py: granian RSGI +
aiohttp, no features), `relaycast-bare` (no store, broadcast, keys or limits), `relaycast-prod` (SQLite store,
broadcast to a Datadog Agent stand-in and a file, one gateway key, in-memory limits) and `relaycast-off` (the same
key and limits, the store and broadcast off: the "off" of the on/off goal). Scenarios: JSON and SSE
(22 chunks) with an instant upstream, and JSON with a 50 ms upstream, all at 50 connections. Interleaved: for each
round, for each scenario, direct and then the other targets in an order that rotates by round; reported as
medians over rounds.

Pinned (one worker): the target and every process it starts on core 0, the fake upstream, the Datadog stand-in
and wrk on core 1. With `--workers N`, everything on cores 0..N-1. CPU per request comes from /proc for every
process of the target, by role (`supervisor`, `worker`, `telemetry`, ...), from the start of a run until the target
is idle again. Reports throughput, p50/p99, added latency against direct in the same round, CPU per request, peak
RSS, the ratios to the bare forwarder and issue #14's goals, met or not. Writes bench/results/load-latest.{json,md}
(`--workers N`: load-workers-N-latest.*; `--telemetry-priority P`: load-priority-P-latest.* or
load-priority-P-workers-N-latest.*; `--quick`: load-quick.*, load-quick-workers-N.* and so on, so a smoke test or a
run off relaycast's defaults never replaces a full run). Only ever talks to 127.0.0.1 and always stops its subprocesses.

The helpers bench/broadcast.py, bench/limits.py and bench/dashboard.py use (free_port, start, stop, wait_http,
Scenario, write_lua, run_wrk, parse_wrk, machine, ...) are importable from here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from load_procs import (
    HOST,
    TreeUsage,
    can_pin,
    children_cpu_seconds,
    cores_busy_seconds,
    cpu_list,
    cpu_seconds,
    free_port,
    memory_mb,
    settle,
    start,
    stop,
    system_busy_seconds,
    tree,
    wait_http,
)
from load_report import SCENARIOS, Load, RunResult, goals, markdown, ratios, summarize
from load_targets import TARGETS, Fleet, Layout, Running, dropped_counts, launch, telemetry_status
from load_wrk import (
    LUA,
    LUA_DIAG,
    TOKENS,
    Scenario,
    body,
    check_once,
    diagnose,
    model_for,
    parse_wrk,
    run_wrk,
    write_lua,
)

__all__ = [
    "HOST",
    "LUA",
    "LUA_DIAG",
    "RESULTS",
    "TOKENS",
    "Scenario",
    "body",
    "check_once",
    "cpu_seconds",
    "free_port",
    "machine",
    "memory_mb",
    "model_for",
    "parse_wrk",
    "run_wrk",
    "start",
    "stop",
    "wait_http",
    "write_lua",
]

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    try:
        import relaycast

        version = getattr(relaycast, "__version__", "?")
    except ImportError:
        version = "?"
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    ).stdout.strip()
    dirty = subprocess.run(  # the code, not the results an earlier run wrote
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results"],
        capture_output=True,
        text=True,
        cwd=HERE,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_v[0].split(" Copyright")[0].split(" [")[0].strip() if wrk_v else "?",
        "relaycast": version,
        "git": (git + ("+changes" if dirty else "")) if git else None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --- one measured run -----------------------------------------------------------------------------------------


def measure(
    fleet: Fleet, t: Running, load: Load, rnd: int, args: argparse.Namespace, sent: dict[str, int]
) -> RunResult:
    lay = fleet.layout
    sc = Scenario(path=t.name, stream=load.stream, latency_ms=load.latency_ms, conns=args.conns)
    problem = check_once(t.url, sc, t.headers) if rnd == 1 else None
    script = write_lua(fleet.tmp, sc, LUA, "", t.headers, args.jitter_ms)
    if args.warmup > 0:
        sent[t.name] = (
            sent.get(t.name, 0) + parse_wrk(run_wrk(t.url, script, sc.conns, args.warmup, lay.load_cpus))["requests"]
        )
        settle(t.proc.pid)
    up_pid = fleet.upstream.pid if fleet.upstream else None
    before = tree(t.proc.pid)
    up0 = cpu_seconds(up_pid) if up_pid and t.name != "direct" else 0.0
    side0 = cpu_seconds(fleet.sink.pid) if fleet.sink else 0.0
    # The target's own cores, when pinned apart from the load: whatever else ran there competed with it directly.
    apart = lay.target_cpus is not None and lay.target_cpus != lay.load_cpus and t.name != "direct"
    own = cpu_list(lay.target_cpus) if apart and lay.target_cpus else set()
    own0 = cores_busy_seconds(own) if own else 0.0
    sys0, wrk0, t0 = system_busy_seconds(), children_cpu_seconds(), time.monotonic()
    out = run_wrk(t.url, script, sc.conns, args.duration, lay.load_cpus)
    settled = settle(t.proc.pid)
    after = tree(t.proc.pid)
    up1 = cpu_seconds(up_pid) if up_pid and t.name != "direct" else 0.0
    side1 = cpu_seconds(fleet.sink.pid) if fleet.sink else 0.0
    own1 = cores_busy_seconds(own) if own else 0.0
    sys1, wrk1, t1 = system_busy_seconds(), children_cpu_seconds(), time.monotonic()
    fleet.check_alive(f"round {rnd}, {load.key}, {t.name}")
    usage = TreeUsage.between(before, after)
    ours = usage.total_s + (up1 - up0) + (side1 - side0) + (wrk1 - wrk0)
    w = parse_wrk(out)
    n = int(w["requests"])
    sent[t.name] = sent.get(t.name, 0) + n
    secs = w["duration_us"] / 1e6 if w["duration_us"] else float(args.duration)
    errors = {k: int(w.get(k, 0)) for k in ("status", "connect", "read", "write", "timeout") if int(w.get(k, 0))}
    r = RunResult(
        round=rnd,
        scenario=load.key,
        target=t.name,
        requests=n,
        duration_s=round(secs, 3),
        rps=round(n / secs, 1) if secs else 0.0,
        p50_ms=w["p50_us"] / 1e3,
        p90_ms=w["p90_us"] / 1e3,
        p99_ms=w["p99_us"] / 1e3,
        p999_ms=w["p999_us"] / 1e3,
        mean_ms=round(w["mean_us"] / 1e3, 3),
        max_ms=w["max_us"] / 1e3,
        bytes_per_request=round(w["bytes"] / n, 1) if n else 0.0,
        errors=errors,
        cpu_us={role: round(s / n * 1e6, 1) for role, s in usage.cpu_s.items()} if n else {},
        processes=usage.processes,
        hwm_mb={k: round(v, 1) for k, v in usage.hwm_mb.items()},
        rss_mb={k: round(v, 1) for k, v in usage.rss_mb.items()},
        upstream_cpu_us=round((up1 - up0) / n * 1e6, 1) if n and t.name != "direct" else None,
        wrk_cpu_us=round((wrk1 - wrk0) / n * 1e6, 1) if n else None,
        settle_s=round(settled, 2),
        # CPU used by anything else on the machine (other people's tests...): noise in these numbers.
        other_cpu_cores=round(max(0.0, (sys1 - sys0) - ours) / (t1 - t0), 2),
        other_on_target_cores=round(max(0.0, (own1 - own0) - usage.total_s) / (t1 - t0), 2) if own else None,
    )
    if problem:
        r.diagnosis["single_request"] = problem
    if errors.get("status"):
        r.diagnosis.update(diagnose(t.url, fleet.tmp, sc, min(2.0, args.duration), t.headers, lay.load_cpus))
    return r


def progress_line(r: RunResult) -> str:
    s = f"{r.target:15} {r.rps:8.0f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms"
    if r.added_p50_ms is not None:
        s += f"  added {r.added_p50_ms:+6.2f} / {r.added_p99_ms:+6.2f} ms"
    if r.target != "direct" and r.cpu_us:
        roles = " ".join(f"{k} {v:.0f}" for k, v in sorted(r.cpu_us.items()))
        s += f"  cpu {r.cpu_total_us:5.0f} µs/req ({roles})"
    if r.settle_s >= 0.5:
        s += f"  idle after {r.settle_s:.1f} s"
    if r.error_total:
        s += f"  ERRORS {r.errors}"
    if r.diagnosis:
        s += f"  {json.dumps(r.diagnosis)[:300]}"
    if r.other_cpu_cores >= 0.1:
        s += f"  (other processes used {r.other_cpu_cores:.2f} cores meanwhile"
        if r.other_on_target_cores is not None:
            s += f", {r.other_on_target_cores:.2f} of them on the target's"
        s += ")"
    return s


# --- the whole run --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/load.py: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    info = machine()
    cores = os.cpu_count() or 1
    pin = not args.no_pin and can_pin()
    layout = Layout.for_workers(args.workers, cores, pin)
    names = ["direct"] + [t for t in TARGETS if t != "direct" and t in args.targets]
    loads = [s for s in SCENARIOS if s.key in args.scenarios]
    command = " ".join(["python bench/load.py", *(shlex.quote(a) for a in args.argv)])
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['platform']}")
    print(f"date:    {info['date']}   {info['wrk']}   relaycast {info['relaycast']} ({info['git']})")
    print(f"layout:  {layout.describe()}")
    print(
        f"runs:    {args.rounds} round(s) x {len(loads)} scenario(s) x {len(names)} target(s), {args.duration} s each "
        f"after a {args.warmup} s warm-up, wrk -t1 -c{args.conns}, {args.workers} worker(s) per target\n",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="relaycast-bench-"))
    fleet = Fleet(layout, tmp)
    runs: list[RunResult] = []
    sent: dict[str, int] = {}
    telemetry = None
    drops_seen: dict[str, int] = {}
    try:
        launch(fleet, names, args.workers, args.telemetry_priority)
        for rnd in range(1, args.rounds + 1):
            for load in loads:
                print(f"round {rnd}/{args.rounds}, {load.title}:", flush=True)
                direct: RunResult | None = None
                others = names[1:]
                k = (rnd - 1) % max(1, len(others))  # direct first, then the others in an order rotating by round
                for name in ["direct", *others[k:], *others[:k]]:
                    r = measure(fleet, fleet.targets[name], load, rnd, args, sent)
                    if fleet.targets[name].admin is not None:  # what its telemetry dropped during this run
                        drops = dropped_counts(telemetry_status(fleet.targets[name]))
                        r.telemetry_dropped = {k: n - drops_seen.get(k, 0) for k, n in drops.items()}
                        r.telemetry_dropped = {k: n for k, n in r.telemetry_dropped.items() if n}
                        drops_seen = drops
                    if name == "direct":
                        direct = r
                    elif direct is not None:
                        r.added_p50_ms = round(r.p50_ms - direct.p50_ms, 3)
                        r.added_p99_ms = round(r.p99_ms - direct.p99_ms, 3)
                    runs.append(r)
                    print("  " + progress_line(r), flush=True)
        if "relaycast-prod" in fleet.targets:
            telemetry = telemetry_status(fleet.targets["relaycast-prod"])
    except BaseException:
        fleet.close()
        for title, log in fleet.logs().items():
            if log.exists() and log.stat().st_size:
                text = log.read_text(errors="replace")[-2000:]
                print(f"\n--- {title} log (last 2000 characters) ---\n{text}", file=sys.stderr)
        raise
    finally:
        fleet.close()
        log_tails = {
            t.title: [ln for ln in t.log.read_text(errors="replace").splitlines() if ln.strip()][-50:]
            for t in fleet.targets.values()
            if t.name != "direct" and t.log.exists()
        }
        shutil.rmtree(tmp, ignore_errors=True)

    summ = summarize(runs)
    rat = ratios(summ)
    result: dict[str, Any] = {
        "machine": info,
        "settings": {
            "command": command,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "conns": args.conns,
            "workers": args.workers,
            "jitter_ms": args.jitter_ms,
            "telemetry_priority": args.telemetry_priority or "auto (relaycast's default)",
            "layout": layout.describe(),
            "target_cpus": layout.target_cpus,
            "load_cpus": layout.load_cpus,
            "output_tokens": TOKENS,
            "wrk_threads": 1,
            "commands": {t.name: t.command for t in fleet.targets.values()},
        },
        "summary": summ,
        "ratios": rat,
        "goals": goals(summ, rat),
        "requests_sent": sent,
        "telemetry": telemetry,
        "runs": [asdict(r) for r in runs],
        "logs": log_tails,
    }
    md = markdown(result)
    print("\n" + md)
    for title, lines in log_tails.items():
        if lines and not all(ln.startswith(("relaycast: serving on", "relaycast fake-upstream")) for ln in lines):
            print(f"{title} log (last {min(len(lines), 10)} lines):")
            for ln in lines[-10:]:
                print("  " + ln[:300])
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A smoke test, a scaling run or one at another telemetry priority never replaces the headline results.
    scale = f"-workers-{args.workers}" if args.workers > 1 else ""
    if args.telemetry_priority:
        scale = f"-priority-{args.telemetry_priority}{scale}"
    stem = f"load-quick{scale}" if args.quick else f"load{scale}-latest"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(md)
    print(f"wrote {RESULTS / f'{stem}.json'} and {RESULTS / f'{stem}.md'}")
    return 0


def _names(all_names: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in all_names]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(bad)} (choose from {', '.join(all_names)})")
        return names

    return parse


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; results are their medians (default 3)")
    p.add_argument("--duration", type=int, default=8, help="whole seconds per measured run (default 8)")
    p.add_argument(
        "--warmup", type=int, default=2, help="whole seconds of warm-up before each run (default 2; 0: none)"
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s runs after a 1 s warm-up")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="workers per target (relaycast serve --workers N, the forwarder's --workers N); above 1 every process "
        "shares cores 0..N-1 (default 1: the target on core 0, the upstream and wrk on core 1)",
    )
    p.add_argument("--conns", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument(
        "--targets",
        type=_names(TARGETS),
        default=list(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} (direct always runs: added latency needs it)",
    )
    p.add_argument(
        "--scenarios",
        type=_names(tuple(s.key for s in SCENARIOS)),
        default=[s.key for s in SCENARIOS],
        help=f"comma-separated subset of {','.join(s.key for s in SCENARIOS)}",
    )
    p.add_argument(
        "--jitter-ms",
        type=int,
        default=0,
        help="each connection waits a random 0..N ms before each request (default 0: back to back). With a fixed "
        "upstream latency, back-to-back connections fall into step and arrive in waves; jitter spreads them out",
    )
    p.add_argument(
        "--telemetry-priority",
        help="relaycast's server.telemetry_priority (auto, idle or a nice increment 0..19) for every relaycast "
        "target (default: relaycast's own, auto); the results go to load-priority-<value>[-workers-N]-latest.*",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2, 1
    args.jitter_ms = max(0, args.jitter_ms)
    if args.rounds < 1 or args.duration < 1 or args.workers < 1 or args.conns < 1:
        p.error("--rounds, --duration, --workers and --conns must be at least 1")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
