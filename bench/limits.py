"""Benchmark: the latency that limits add to a request, Redis-backed (shared by replicas) against in-memory.

    python bench/limits.py                  # 3 runs of 8 s per configuration
    python bench/limits.py --duration 15 --runs 5

Three gateways in turn, each a `relaycast serve` subprocess in front of a loopback fake upstream answering at once,
all called with the same gateway key by wrk (10 connections, non-streaming):

    none    the key has no limits (the baseline)
    memory  the key has rpm, tpm and a daily budget (limits high enough never to refuse), kept in the process
    redis   the same limits in this machine's Redis (one Lua script per request, plus the settlement after it)

Prints p50 / p99 per configuration and the added latency against `none`, the median over the runs. Writes
bench/results/limits-latest.{json,md}. Only 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import load

KEY = "rk-bench-limits-key-0000000001"
HOST = "127.0.0.1"
LUA = load.LUA.replace(
    'wrk.headers["Content-Type"] = "application/json"',
    f'wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer {KEY}"',
)
LIMITS = {
    "none": "",
    "memory": ", rpm: 100000000, tpm: 1000000000000, budget_day_usd: 1000000",
    "redis": ", rpm: 100000000, tpm: 1000000000000, budget_day_usd: 1000000",
}


def config(fake_port: int, which: str) -> str:
    redis = "redis_url: redis://127.0.0.1:6379/6\n" if which == "redis" else ""
    return (
        f"server: {{host: {HOST}}}\n{redis}keys:\n  - {{name: bench, secret: {KEY}{LIMITS[which]}}}\n"
        f"providers:\n  - {{name: fake, kind: openai_compatible, base_url: 'http://{HOST}:{fake_port}/v1', api_key: k}}\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--conns", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="relaycast-bench-limits-"))
    fake_port = load.free_port()
    fake = load.start(
        [
            sys.executable,
            "-m",
            "relaycast",
            "fake-upstream",
            "--host",
            HOST,
            "--port",
            str(fake_port),
            "--log-level",
            "critical",
        ],
        tmp / "fake.log",
    )
    results: dict[str, dict[str, float]] = {}
    try:
        load.wait_http(f"http://{HOST}:{fake_port}/v1/models", fake, tmp / "fake.log")
        body = load.body("fake/gpt-4o-mini@tokens=20", False)
        script = tmp / "bench.lua"
        script.write_text(
            LUA.replace("__BODY__", body).replace("__ACCEPT__", '"application/json"').replace("__DELAY__", "")
        )
        runs: dict[str, list[dict]] = {k: [] for k in LIMITS}
        for r in range(args.runs):
            for which in LIMITS:  # interleaved, so drift on the machine touches every configuration alike
                d = tmp / f"{which}-{r}"
                d.mkdir()
                (d / "relaycast.yaml").write_text(config(fake_port, which))
                port = load.free_port()
                gw = load.start(
                    [
                        sys.executable,
                        "-m",
                        "relaycast",
                        "serve",
                        "--config",
                        str(d / "relaycast.yaml"),
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    d / "gateway.log",
                )
                try:
                    load.wait_http(f"http://{HOST}:{port}/healthz", gw, d / "gateway.log")
                    url = f"http://{HOST}:{port}/v1/chat/completions"
                    load.run_wrk(url, script, args.conns, 2)  # warm-up
                    cpu0 = load.cpu_seconds(gw.pid)
                    out = load.parse_wrk(load.run_wrk(url, script, args.conns, args.duration))
                    out["cpu_us"] = (load.cpu_seconds(gw.pid) - cpu0) / max(1, out["requests"]) * 1e6
                    if out.get("status"):
                        raise RuntimeError(f"{which}: {out['status']} non-2xx answers; see {d / 'gateway.log'}")
                    runs[which].append(out)
                    print(
                        f"run {r + 1} {which:<7} p50 {out['p50_us'] / 1000:.2f} ms  p99 {out['p99_us'] / 1000:.2f} ms  "
                        f"{out['requests'] / (out['duration_us'] / 1e6):,.0f} req/s  gateway CPU {out['cpu_us']:.0f} µs/req",
                        flush=True,
                    )
                finally:
                    load.stop(gw)
        for which, outs in runs.items():
            results[which] = {
                "p50_ms": statistics.median(o["p50_us"] for o in outs) / 1000,
                "p99_ms": statistics.median(o["p99_us"] for o in outs) / 1000,
                "rps": statistics.median(o["requests"] / (o["duration_us"] / 1e6) for o in outs),
                "cpu_us": statistics.median(o["cpu_us"] for o in outs),
            }
    finally:
        load.stop(fake)
    base = results["none"]
    md = [
        f"# bench/limits.py: {args.runs} runs x {args.duration:g} s, wrk {args.conns} connections, non-streaming, upstream answers at once",
        "",
        f"machine: {load.machine().get('cpu', '')}",
        "",
        "| limits | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s | gateway CPU µs/req | added CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for which, r in results.items():
        md.append(
            f"| {which} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['p50_ms'] - base['p50_ms']:+.2f} | "
            f"{r['p99_ms'] - base['p99_ms']:+.2f} | {r['rps']:,.0f} | {r['cpu_us']:.0f} | {r['cpu_us'] - base['cpu_us']:+.0f} |"
        )
    out = Path(__file__).parent / "results"
    (out / "limits-latest.json").write_text(
        json.dumps({"results": results, "when": time.time(), "runs": args.runs}, indent=2)
    )
    (out / "limits-latest.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
