"""Instructions per request in the serving process, counted by callgrind: the same count run after run, whatever
else the machine is doing, where CPU time moves by a tenth or more between runs of a shared VM.

    python bench/instructions.py                       # the forwarder and relaycast's three targets, JSON and SSE
    python bench/instructions.py --targets forwarder,relaycast-bare --scenarios sse --seconds 20
    python bench/instructions.py --targets forwarder,relaycast-bare,relaycast-key,relaycast-rpm,relaycast-off
    python bench/instructions.py --targets relaycast-bare --scenarios sse --keep /tmp/profiles   # then callgrind_annotate

Needs `wrk`, `taskset` and valgrind (`apt-get install wrk valgrind`), and granian for the forwarder (`pip install -e
'.[bench]'`). Each target (bench/load_targets.py's: the bare forwarder, relaycast with nothing on, with its key and
limits only, with the production features; and when asked for, `relaycast-key` and `relaycast-rpm`, a key without
limits and a key with an rpm limit only: the steps from nothing on to the key and limits) is started as
bench/load.py starts it, but under `valgrind --tool=callgrind` with counting off: the forwarder's granian worker and relaycast's worker (its telemetry and state
processes run natively, so that they keep up). After a warm-up, counting is turned on in the serving process
(`callgrind_control -i on`), wrk sends requests on a few connections for `--seconds`, counting is turned off, and the
instructions counted are divided by the requests wrk completed (the requests in flight at either end make an error of
at most the connections over the requests: about 0.5%). The same layout as load.py: the target on core 0, the fake
upstream and wrk on core 1.

What it counts: the instructions the serving process executes in user space (Python, the interpreter, uvloop,
msgspec, granian's Rust, every thread of it), not the kernel's work for its system calls, nor how fast they run (the
caches, the machine). A ratio of these counts says how much more a target computes per request; a ratio of CPU time
(load.py) says what that costs on one machine. Output: the table, and `bench/results/instructions-latest.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import load_targets as lt
import load_wrk as lw
from load import machine
from load_procs import can_pin, tree

HERE = Path(__file__).resolve().parent
TARGETS = ("forwarder", "relaycast-bare", "relaycast-off", "relaycast-prod")
# Steps between nothing on and relaycast-off (a key with an rpm and a tpm limit), for what each part costs.
KEY_STEPS = {
    "relaycast-key": ("relaycast, a gateway key without limits", ""),
    "relaycast-rpm": ("relaycast, a gateway key with an rpm limit", "rpm: 100000000"),
}
ALL = (*TARGETS, *KEY_STEPS)
LOAD_CPUS = "1" if can_pin() else None  # the fake upstream and wrk; the target on core 0
CONNS = 4  # enough to keep the serving process busy under valgrind (tens of times slower than natively)
WARM_S = 4
START_S = 180.0  # a process under valgrind starts slowly


def valgrind(out: Path) -> list[str]:
    """callgrind with counting off until `callgrind_control -i on`, following the target's children but relaycast's
    telemetry and state processes (their role is an argument of their command line)."""
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--trace-children=yes",
        "--trace-children-skip-by-arg=telemetry,state",
        f"--callgrind-out-file={out}/callgrind.%p",
        "--log-file=" + str(out / "valgrind.%p.log"),
    ]


def start(name: str, upstream: int, sink: int, tmp: Path) -> lt.Running:
    port = lt.free_port()
    where = tmp / name
    where.mkdir()
    py = sys.executable
    if name == "forwarder":
        cmd = [py, str(HERE / "forwarder.py"), "--upstream", f"http://{lt.HOST}:{upstream}", "--port", str(port)]
        ready = f"http://{lt.HOST}:{port}/v1/models"
    else:
        cfg = where / "relaycast.yaml"
        if name in KEY_STEPS:
            cfg.write_text(
                lt.relaycast_config("relaycast-bare", upstream, sink, where) + lt.key_config(KEY_STEPS[name][1])
            )
        else:
            cfg.write_text(lt.relaycast_config(name, upstream, sink, where))
        cmd = [py, "-m", "relaycast", "serve", "--config", str(cfg), "--host", lt.HOST, "--port", str(port)]
        cmd += ["--log-level", "warning"]
        ready = f"http://{lt.HOST}:{port}/healthz"
    log = where / "target.log"
    proc = lt.start(lt.pinned(valgrind(where) + cmd, "0" if LOAD_CPUS else None), log)
    lt.wait_http(ready, proc, log, timeout=START_S)
    run = lt.Running(name, proc, f"http://{lt.HOST}:{port}/v1/chat/completions", log, cmd)
    if name in ("relaycast-prod", "relaycast-off", *KEY_STEPS):
        run.headers = {"Authorization": f"Bearer {lt.KEY}"}
    return run


def serving_pid(run: lt.Running) -> int:
    """The process that serves the requests: relaycast's worker, granian's worker."""
    procs = tree(run.proc.pid)
    if run.name == "forwarder":
        pids = [p.pid for p in procs.values() if p.pid != run.proc.pid]
    else:
        pids = [p.pid for p in procs.values() if p.role == "worker"]
    if len(pids) != 1:
        raise RuntimeError(f"{run.name}: expected one serving process, found {pids}")
    return pids[0]


def control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def counted(where: Path, pid: int) -> int:
    """The instructions of the last dump of `pid`'s profile."""
    dumps = sorted(
        (p for p in where.glob(f"callgrind.{pid}.*") if p.suffix[1:].isdigit()), key=lambda p: int(p.suffix[1:])
    )
    if not dumps:
        raise RuntimeError(f"no callgrind dump for {pid} in {where}")
    totals = [
        int(line.split()[1])
        for line in dumps[-1].read_text(errors="replace").splitlines()
        if line.startswith(("summary:", "totals:"))
    ]
    if not totals or max(totals) == 0:
        raise RuntimeError(f"nothing counted in {dumps[-1]}")
    return max(totals)


def measure(run: lt.Running, sc: lw.Scenario, seconds: int, tmp: Path) -> dict[str, Any]:
    err = lw.check_once(run.url, sc, run.headers)
    if err is not None:
        raise RuntimeError(f"{run.name}: {err}")
    script = lw.write_lua(tmp, sc, lw.LUA, "-instructions", run.headers)
    lw.run_wrk(run.url, script, CONNS, WARM_S, LOAD_CPUS)
    pid = serving_pid(run)
    time.sleep(0.5)  # the warm-up's last answers written
    control("-z", str(pid))
    control("-i", "on", str(pid))
    res = lw.parse_wrk(lw.run_wrk(run.url, script, CONNS, seconds, LOAD_CPUS))
    control("-i", "off", str(pid))
    control("-d", str(pid))
    bad = {k: res.get(k, 0) for k in ("connect", "read", "write", "timeout", "status") if res.get(k, 0)}
    if bad:
        raise RuntimeError(f"{run.name}: wrk saw errors {bad}")
    requests = int(res["requests"])
    instructions = counted(tmp / run.name, pid)
    return {"requests": requests, "instructions": instructions, "per_request": instructions / max(1, requests)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"of {','.join(ALL)}")
    ap.add_argument("--scenarios", default="json,sse", help="json, sse or both")
    ap.add_argument("--seconds", type=int, default=12, help="counted seconds per target and scenario")
    ap.add_argument(
        "--keep",
        type=Path,
        help="keep the profiles in this directory (`<target>/callgrind.<pid>.<n>`, one per scenario, for "
        "`callgrind_annotate`); a temporary directory otherwise",
    )
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(n.strip() for n in args.targets.split(",") if n.strip()))
    if bad := [n for n in names if n not in ALL]:
        ap.error(f"unknown target: {', '.join(bad)}")
    scenarios = list(dict.fromkeys(s.strip() for s in args.scenarios.split(",") if s.strip()))
    if bad := [s for s in scenarios if s not in ("json", "sse")]:
        ap.error(f"unknown scenario: {', '.join(bad)}")
    for tool in ("wrk", "valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} not found (apt-get install wrk valgrind)")
    m = machine()
    results: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in names}
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            ap.error(f"{args.keep} is not empty")
    with tempfile.TemporaryDirectory(prefix="relaycast-instructions-") as d:
        tmp = args.keep.resolve() if args.keep is not None else Path(d)
        fleet = lt.Fleet(lt.Layout("0", LOAD_CPUS) if LOAD_CPUS else lt.Layout(None, None), tmp)
        try:
            lt.launch(fleet, ["direct"], 1)
            sink = lt.start_sink(fleet) if "relaycast-prod" in names else 0
            for name in names:
                run = start(name, fleet.upstream_port, sink, tmp)
                try:
                    for s in scenarios:
                        sc = lw.Scenario(name, s == "sse", 0, CONNS)
                        r = measure(run, sc, args.seconds, tmp)
                        results[name][s] = r
                        print(
                            f"{name:15} {s:4}  {r['per_request']:>12,.0f} instructions per request "
                            f"({r['requests']:,} requests)",
                            flush=True,
                        )
                finally:
                    lt.stop(run.proc)
        finally:
            fleet.close()
    text = report(m, names, scenarios, results, args.seconds)
    print()
    print(text)
    out = HERE / "results" / "instructions-latest"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"machine": m, "results": results}, indent=2) + "\n")
    print(f"wrote {out}.md and .json")
    return 0


def report(
    m: dict[str, Any], names: list[str], scenarios: list[str], results: dict[str, dict[str, dict[str, Any]]], s: int
) -> str:
    kinds = {"json": "JSON", "sse": "SSE (22 chunks)"}
    lines = [
        f"{m['date'][:10]}, {m['cpu']}, Python {m['python']}, relaycast at {m['git']}; `python bench/instructions.py "
        f"--seconds {s}`: instructions per request in the serving process (callgrind), wrk at {CONNS} connections, "
        "an instant upstream",
        "",
        "| target | " + " | ".join(kinds[x] for x in scenarios) + " |",
        "|---|" + "---:|" * len(scenarios),
    ]
    base = results.get("forwarder", {})
    for n in names:
        cells = []
        for x in scenarios:
            r = results[n].get(x)
            if r is None:
                cells.append("–")
                continue
            cell = f"{r['per_request'] / 1000:,.0f}k"
            if n != "forwarder" and x in base:
                cell += f" ({r['per_request'] / base[x]['per_request']:.2f}x)"
            cells.append(cell)
        title = KEY_STEPS[n][0] if n in KEY_STEPS else lt.TITLES[n]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
