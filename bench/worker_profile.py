"""Where the serving process's CPU goes, per request: relaycast under load.py's load, sampled by py-spy.

    python bench/worker_profile.py                          # streams: nothing on, then production features
    python bench/worker_profile.py --scenario json --seconds 30
    python bench/worker_profile.py --targets relaycast-prod --functions 40

Needs `wrk`, `taskset` and py-spy (`pip install -e '.[bench]'`), and the right to attach to a process (root, or
`kernel.yama.ptrace_scope` 0). Each target (bench/load_targets.py's `relaycast-bare` and `relaycast-prod`) is
started as bench/load.py starts it, in its layout (the target on core 0; the fake upstream, the Datadog stand-in
and wrk on core 1), and loaded as load.py loads it (wrk at 50 connections, an instant upstream, 22-chunk streams or
JSON) while py-spy samples its worker. At saturation the worker is always on its core, so a sample's share is a
share of its CPU: each part's CPU per request is its share of the samples times the worker's CPU per request
(from /proc over the same run). A sample counts for the innermost Python function: the C it calls (msgspec's and
orjson's decoding, a socket's send) counts for its caller, and `Runner.run` is the event loop itself (uvloop:
waiting, reading sockets, calling back). Output: per target, the parts (the modules that own each concern of a
request, as `PARTS` groups them) and the functions that spent the most; `bench/results/worker_profile-latest.md`.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import load_targets as lt
import load_wrk as lw
from load import machine
from load_procs import TreeUsage, can_pin, settle, tree

HERE = Path(__file__).resolve().parent
CONNS = 50
# (part, module path prefixes, function name prefixes or None for any): the first that matches a sample's
# innermost frame names its part.
PARTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("event loop (uvloop: polling, socket reads, callbacks)", ("asyncio/runners.py", "uvloop"), None),
    (
        "HTTP server (relaycast's protocol: parsing, framing, writes)",
        (
            "relaycast/server/http1.py",
            "relaycast/server/cycle.py",
            "relaycast/server/corked.py",
            "relaycast/server/guards.py",
        ),
        None,
    ),
    ("stream: events split", ("relaycast/sse.py",), None),
    ("stream: chunks learned from", ("relaycast/providers/openai_chunks.py",), None),
    (
        "stream: chunks learned from",
        ("relaycast/providers/openai_compat.py",),
        ("OpenAIStream", "event_object", "_start"),
    ),
    ("stream: relayed to the client", ("relaycast/routing/executor.py",), ("OpenStream",)),
    (
        "upstream client (request built and sent, answer read)",
        ("relaycast/providers/",),
        None,
    ),
    (
        "limits and keys",
        ("relaycast/limits/", "relaycast/keys/", "relaycast/server/auth.py", "relaycast/costs/estimate.py"),
        None,
    ),
    (
        "record: cost, build, hand-off",
        ("relaycast/records.py", "relaycast/costs/", "relaycast/telemetry/", "relaycast/server/services.py"),
        None,
    ),
    ("request: body read and parsed", ("relaycast/schema.py", "relaycast/server/shapes.py", "relaycast/asgi.py"), None),
    ("routing: plan, attempts, health, deadlines", ("relaycast/routing/", "relaycast/deadlines.py"), None),
    ("the request's flow: app, handlers, answer", ("relaycast/",), None),
)
RELAYCAST = tuple(t for t in lt.TARGETS if t.startswith("relaycast"))  # the targets with a relaycast worker
OTHER = "other (the standard library's Python)"
MAIN = "_run_module_as_main "  # the main thread's outermost frame (`python -m relaycast.server.host worker`)


def py_spy() -> str | None:
    """py-spy beside this Python (a virtual environment's, not activated), else on the PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def part_of(frame: str) -> str:
    """The part a py-spy frame (`function (path:line)`) belongs to."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for part, paths, functions in PARTS:
        if any(p in path for p in paths) and (functions is None or name.startswith(functions)):
            return part
    return OTHER


def leaf_counts(raw: Path) -> tuple[collections.Counter[str], int]:
    """py-spy's raw output (`frame;frame;... count` per line): the main thread's samples by innermost frame, and
    in all."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack.startswith(MAIN):  # another thread (an idle pool's): the requests run on the main one
            continue
        counts[stack.rsplit(";", 1)[-1]] += int(n)
        total += int(n)
    return counts, total


@dataclass
class Profile:
    requests: int
    rps: float
    worker_us: float  # the worker's CPU per request over the sampled run
    counts: collections.Counter[str]  # the main thread's samples by innermost frame
    total: int


def profile(fleet: lt.Fleet, name: str, sc: lw.Scenario, seconds: int, rate: int, tmp: Path) -> Profile:
    run = fleet.targets[name]
    err = lw.check_once(run.url, sc, run.headers)
    if err is not None:
        raise RuntimeError(f"{name}: {err}")
    script = lw.write_lua(tmp, sc, lw.LUA, "-profile", run.headers)
    lw.run_wrk(run.url, script, CONNS, 2, fleet.layout.load_cpus)  # warm-up
    settle(run.proc.pid)
    before = tree(run.proc.pid)
    workers = [p.pid for p in before.values() if p.role == "worker"]
    if len(workers) != 1:
        raise RuntimeError(f"{name}: expected one worker, found {len(workers)}")
    raw = tmp / f"{name}.txt"
    spy = subprocess.Popen(
        [
            py_spy() or "py-spy",
            "record",
            "-p",
            str(workers[0]),
            "-r",
            str(rate),
            "-d",
            str(seconds),
            "-f",
            "raw",
            "-o",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    res = lw.parse_wrk(lw.run_wrk(run.url, script, CONNS, seconds, fleet.layout.load_cpus))
    _, spy_err = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy_err.decode(errors='replace').strip()[-400:]}")
    settle(run.proc.pid)
    usage = TreeUsage.between(before, tree(run.proc.pid))
    requests = int(res["requests"])
    worker_us = usage.cpu_s.get("worker", 0.0) * 1e6 / max(1, requests)
    counts, total = leaf_counts(raw)
    return Profile(requests, float(res.get("rps_text") or 0), worker_us, counts, total)


def report(name: str, sc: lw.Scenario, r: Profile, functions: int) -> list[str]:
    counts, total = r.counts, r.total
    per = r.worker_us / max(1, total)
    parts: collections.Counter[str] = collections.Counter()
    for frame, n in counts.items():
        parts[part_of(frame)] += n
    kind = "stream (22 chunks)" if sc.stream else "JSON"
    lines = [
        f"### {lt.TITLES[name]}: {kind}, instant upstream, {CONNS} connections",
        "",
        f"{r.requests:,} requests ({r.rps:,.0f} a second), the worker at {r.worker_us:.1f} µs of CPU "
        f"per request; {total:,} samples.",
        "",
        "| part | CPU µs per request | share |",
        "|---|---:|---:|",
    ]
    order = list(dict.fromkeys(p for p, _, _ in PARTS)) + [OTHER]
    for part in order:
        if parts[part]:
            lines.append(f"| {part} | {parts[part] * per:.1f} | {100 * parts[part] / total:.1f}% |")
    lines += [
        "",
        f"The {functions} functions that spent the most (with the C they call):",
        "",
        "| function | µs |",
        "|---|---:|",
    ]
    by_function: collections.Counter[str] = collections.Counter()
    for frame, n in counts.items():
        name_, _, where = frame.partition(" (")
        path = where.rsplit(":", 1)[0]
        by_function[f"`{name_}` ({path.split('site-packages/')[-1]})"] += n
    for fn, n in by_function.most_common(functions):
        lines.append(f"| {fn} | {n * per:.1f} |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="relaycast-bare,relaycast-prod", help=f"of {','.join(RELAYCAST)}")
    ap.add_argument("--scenario", choices=("stream", "json"), default="stream")
    ap.add_argument("--seconds", type=int, default=20, help="sampled seconds per target")
    ap.add_argument("--rate", type=int, default=200, help="samples a second")
    ap.add_argument("--functions", type=int, default=25, help="functions listed per target")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    bad = [n for n in names if n not in RELAYCAST]
    if bad:
        ap.error(f"not a relaycast target of bench/load_targets.py: {', '.join(bad)}")
    if shutil.which("wrk") is None:
        ap.error("wrk not found (apt-get install wrk)")
    if py_spy() is None:
        ap.error("py-spy not found (pip install -e '.[bench]')")
    layout = lt.Layout.for_workers(1, os.cpu_count() or 1, can_pin())
    sc = lw.Scenario("relaycast", args.scenario == "stream", 0, CONNS)
    m = machine()
    lines = [
        f"{time.strftime('%Y-%m-%d')}, {m['cpu']}, {m['cores']} cores, Python {m['python']}, relaycast at {m['git']}; "
        f"`python bench/worker_profile.py --scenario {args.scenario} --seconds {args.seconds}`; layout: "
        f"{layout.describe()}",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="relaycast-profile-") as d:
        tmp = Path(d)
        fleet = lt.Fleet(layout, tmp)
        try:
            lt.launch(fleet, names, 1)
            for name in names:
                r = profile(fleet, name, sc, args.seconds, args.rate, tmp)
                part = report(name, sc, r, args.functions)
                print("\n".join(part), flush=True)
                lines += part
        finally:
            fleet.close()
    out = HERE / "results" / "worker_profile-latest.md"
    out.write_text("\n".join(lines))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
