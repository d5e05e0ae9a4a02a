"""Broadcast benchmark: what sending every request out of band costs the request path, and what a dead
destination does to memory.

    python bench/broadcast.py                    # on/off comparison, then 10 minutes with Datadog down
    python bench/broadcast.py --down-minutes 2   # a shorter outage

1. On versus off: the same wrk load as bench/load.py (non-streaming, 50 connections, upstream 0 ms and 50 ms)
   against a gateway without broadcast, then against one broadcasting to two destinations (Datadog agentless,
   pointed at a loopback sink that answers 202 like the intake, and a JSON-lines file). Reports p50 difference
   and throughput loss.
2. Destination down: the Datadog destination points at a port where nothing listens; wrk keeps the gateway
   busy for --down-minutes while the gateway's RSS is sampled every 10 s. Reports the curve and the latency
   of requests during the outage.

Only 127.0.0.1; stops by itself; always stops its subprocesses. Writes bench/results/broadcast-latest.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load

HOST = load.HOST
DD_KEY = "benchmark0000000000000000000000000"


def sink_main(port: int) -> None:
    """A Datadog intake stand-in: accepts any POST with 202, as fast as it can."""
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, body=b"{}")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


def config(upstream: int, tmp: Path, broadcast: str | None, sink: int | None) -> str:
    text = f"""
providers:
  - name: fake
    kind: openai_compatible
    base_url: http://{HOST}:{upstream}/v1
"""
    if broadcast:
        intake = f"http://{HOST}:{sink}"
        text += f"""
broadcast:
  spool_dir: {tmp / "spool"}
  destinations:
    - name: datadog
      kind: datadog
      api_key: {DD_KEY}
      ml_app: bench
      api_url: {intake}
      intake_url: {intake}
      spool_max_bytes: 67108864
    - name: file
      kind: file
      path: {tmp / "traces.jsonl"}
      max_bytes: 52428800
      backups: 1
"""
    return text


class Gateway:
    def __init__(self, tmp: Path, name: str, text: str) -> None:
        self.port = load.free_port()
        cfg = tmp / f"{name}.yaml"
        cfg.write_text(text)
        self.log = tmp / f"{name}.log"
        self.proc = load.start(
            [
                sys.executable,
                "-m",
                "relaycast",
                "serve",
                "--config",
                str(cfg),
                "--port",
                str(self.port),
                "--log-level",
                "error",
            ],
            self.log,
        )
        load.wait_http(f"http://{HOST}:{self.port}/healthz", self.proc, self.log)
        self.url = f"http://{HOST}:{self.port}/v1/chat/completions"


def measure(url: str, tmp: Path, latency_ms: int, seconds: int) -> dict[str, Any]:
    sc = load.Scenario(path="relaycast", stream=False, latency_ms=latency_ms, conns=50)
    script = load.write_lua(tmp, sc, load.LUA, f"-{latency_ms}")
    load.run_wrk(url, script, 50, 2)  # warm-up
    r = load.parse_wrk(load.run_wrk(url, script, 50, seconds))
    rps = r["requests"] / (r["duration_us"] / 1e6) if r.get("duration_us") else r.get("rps_text") or 0
    return {"rps": rps, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000, "errors": r.get("status", 0)}


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="relaycast-bench-bc-"))
    procs = []
    out: dict[str, Any] = {"machine": load.machine(), "date": dt.date.today().isoformat(), "on_off": [], "down": {}}
    try:
        up = load.free_port()
        fake = load.start(
            [sys.executable, "-m", "relaycast", "fake-upstream", "--port", str(up), "--log-level", "critical"],
            tmp / "fake.log",
        )
        procs.append(fake)
        load.wait_http(f"http://{HOST}:{up}/v1/models", fake, tmp / "fake.log")
        sink_port = load.free_port()
        sink = load.start([sys.executable, __file__, "--sink", str(sink_port)], tmp / "sink.log")
        procs.append(sink)
        time.sleep(1.0)

        off = Gateway(tmp, "off", config(up, tmp, None, None))
        procs.append(off.proc)
        on = Gateway(tmp, "on", config(up, tmp, "on", sink_port))
        procs.append(on.proc)
        for latency in (0, 50):
            a = measure(off.url, tmp, latency, args.duration)
            b = measure(on.url, tmp, latency, args.duration)
            row = {
                "upstream_ms": latency,
                "off": a,
                "on": b,
                "p50_diff_ms": b["p50_ms"] - a["p50_ms"],
                "rps_loss": 1 - b["rps"] / a["rps"] if a["rps"] else None,
            }
            out["on_off"].append(row)
            print(
                f"upstream {latency} ms: off {a['rps']:.0f} req/s p50 {a['p50_ms']:.2f} ms | on {b['rps']:.0f} req/s "
                f"p50 {b['p50_ms']:.2f} ms | p50 +{row['p50_diff_ms']:.2f} ms, throughput -{row['rps_loss']:.1%}",
                flush=True,
            )
        load.stop(on.proc)

        down_port = load.free_port()  # nothing listens there
        down = Gateway(tmp, "down", config(up, tmp, "down", down_port))
        procs.append(down.proc)
        sc = load.Scenario(path="relaycast", stream=False, latency_ms=50, conns=50)
        script = load.write_lua(tmp, sc, load.LUA, "-down")
        curve = []
        started = time.monotonic()
        total = args.down_minutes * 60
        lat = []
        while time.monotonic() - started < total:
            r = load.parse_wrk(
                load.run_wrk(down.url, script, 50, min(10, max(1, total - (time.monotonic() - started))))
            )
            rss, hwm = load.memory_mb(down.proc.pid)
            t = round(time.monotonic() - started)
            curve.append(
                {
                    "t_s": t,
                    "rss_mb": round(rss, 1),
                    "p50_ms": round(r["p50_us"] / 1000, 2),
                    "errors": r.get("status", 0),
                }
            )
            lat.append(r["p50_us"] / 1000)
            print(f"  down {t:4d} s: RSS {rss:6.1f} MB, p50 {r['p50_us'] / 1000:.2f} ms", flush=True)
        out["down"] = {
            "minutes": args.down_minutes,
            "curve": curve,
            "rss_first_mb": curve[0]["rss_mb"] if curve else None,
            "rss_last_mb": curve[-1]["rss_mb"] if curve else None,
            "rss_max_mb": max(c["rss_mb"] for c in curve) if curve else None,
            "p50_ms_median": sorted(lat)[len(lat) // 2] if lat else None,
        }
    finally:
        for p in reversed(procs):
            load.stop(p)
    md = markdown(out)
    print("\n" + md)
    load.RESULTS.mkdir(exist_ok=True)
    (load.RESULTS / "broadcast-latest.json").write_text(json.dumps(out, indent=2))
    (load.RESULTS / "broadcast-latest.md").write_text(md)
    return 0


def markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    lines = [
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}; {out['date']}; "
        "non-streaming, 50 connections, wrk -t1, fake upstream, sink, gateway and wrk on one machine.",
        "",
        "| upstream | broadcast off req/s | on req/s | throughput loss | off p50 ms | on p50 ms | p50 difference |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["on_off"]:
        lines.append(
            f"| {r['upstream_ms']} ms | {r['off']['rps']:,.0f} | {r['on']['rps']:,.0f} | {r['rps_loss']:.1%} | "
            f"{r['off']['p50_ms']:.2f} | {r['on']['p50_ms']:.2f} | {r['p50_diff_ms']:+.2f} ms |"
        )
    d = out.get("down") or {}
    if d.get("curve"):
        lines += [
            "",
            f"Datadog destination down for {d['minutes']} min under load (50 ms upstream, 50 connections): "
            f"RSS {d['rss_first_mb']} MB at the start, {d['rss_max_mb']} MB at most, {d['rss_last_mb']} MB at the end; "
            f"median p50 {d['p50_ms_median']:.2f} ms.",
            "",
            "| t (s) | RSS (MB) | p50 (ms) |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {c['t_s']} | {c['rss_mb']} | {c['p50_ms']} |" for c in d["curve"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=8, help="seconds per on/off measurement (default 8)")
    p.add_argument(
        "--down-minutes", type=float, default=10, help="minutes with the Datadog destination down (default 10)"
    )
    p.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sink:
        sink_main(args.sink)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
