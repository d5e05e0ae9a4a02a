"""Broadcast benchmark: what a dead destination does to memory, and what an outage costs in records.

    python bench/broadcast.py --down-minutes 8 --rate 300
    python bench/broadcast.py --healthy --down-minutes 8   # the same traffic, destination up
    python bench/broadcast.py --restart

What broadcasting costs the request path (store and broadcast on against off, pinned and interleaved) is measured
by bench/load.py (its `relaycast-off` target).

1. Outage: steady traffic (`--rate` requests per second, open loop, 50 ms upstream) while the Datadog
   destination's intake answers 503 for `--error-minutes`, then stops listening (connection refused) for the
   rest of `--down-minutes`. Every 10 s: the RSS of the gateway's serving process (its worker; the telemetry
   process's beside it) and the destination's counters from /admin/broadcast
   (queued, spooled batches and bytes, drops by reason, retries). `--healthy` keeps the intake answering 202, as
   a control: what the same traffic does to memory with nothing down.

2. Restart (`--restart`): what an outage costs in records, counted by request id. Steady open-loop traffic
   (`--rate`, default 120 req/s here) while a webhook destination (tests/record_sink.py, a receiver that counts
   every record by request id) is healthy for the first 10% of `--minutes`, answers 503 until 30%, refuses
   connections until 60%, and is back for the rest; at 45% the gateway is stopped (`--signal term` or `kill`) and
   started again on the same spool. Then the traffic stops and the pipeline gets up to 2 minutes to finish.
   Records answered, delivered (at least once), counted drops by reason, lost (neither delivered nor counted),
   duplicates, how long the spool took to drain after the destination came back (traffic still flowing), and
   every 10 s the gateway's RSS and the destination's counters.

Only 127.0.0.1; stops by itself; always stops its subprocesses. Writes bench/results/broadcast-outage-latest.{json,md}
(the restart: broadcast-restart-latest.{json,md}).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the record sink and the traffic
import load
import load_procs

from tests.record_sink import RecordSink
from tests.traffic import Traffic

HOST = load.HOST
DD_KEY = "benchmark0000000000000000000000000"
ADMIN_KEY = "bench-admin-key-0123"
SAMPLE_S = 10


def sink_main(port: int, status: int) -> None:
    """A Datadog intake stand-in: answers any POST with `status` (202 like the intake, or 503), as fast as it can."""
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=b"{}")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host=HOST, port=port, access_log=None, print=None)


def config(upstream: int, tmp: Path, broadcast: str | None, sink: int | None) -> str:
    text = f"""
admin_key: {ADMIN_KEY}
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


def machine() -> dict[str, Any]:
    try:
        return load.machine()
    except FileNotFoundError:  # no wrk: the outage scenario does not need it
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            "?",
        )
        return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def start_sink(tmp: Path, port: int, status: int) -> Any:
    proc = load.start([sys.executable, __file__, "--sink", str(port), "--sink-status", str(status)], tmp / "sink.log")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the sink did not start")


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="relaycast-bench-bc-"))
    procs = []
    out: dict[str, Any] = {"machine": machine(), "date": dt.date.today().isoformat(), "down": {}}
    try:
        up = load.free_port()
        fake = load.start(
            [sys.executable, "-m", "relaycast", "fake-upstream", "--port", str(up), "--log-level", "critical"],
            tmp / "fake.log",
        )
        procs.append(fake)
        load.wait_http(f"http://{HOST}:{up}/v1/models", fake, tmp / "fake.log")
        if args.restart:
            out["restart"] = asyncio.run(restart_run(args, tmp, up, procs))
        if not args.restart:
            out["down"] = outage(args, tmp, up, procs)
    finally:
        for p in reversed(procs):
            load.stop(p)
    md = restart_markdown(out) if args.restart else markdown(out)
    print("\n" + md)
    load.RESULTS.mkdir(exist_ok=True)
    name = "broadcast-restart-latest" if args.restart else "broadcast-outage-latest"
    (load.RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    (load.RESULTS / f"{name}.md").write_text(md)
    return 0


def outage(args: argparse.Namespace, tmp: Path, up: int, procs: list[Any]) -> dict[str, Any]:
    """Traffic while the Datadog intake answers 503, then refuses connections; RSS and counters sampled."""
    sink_port = load.free_port()
    sink = start_sink(tmp, sink_port, 202 if args.healthy else 503)
    procs.append(sink)
    gw = Gateway(tmp, "down", config(up, tmp, "down", sink_port))
    procs.append(gw.proc)
    total_s = args.down_minutes * 60
    refuse_at = None if args.healthy else args.error_minutes * 60

    def stop_sink() -> None:
        load.stop(sink)

    if args.wrk:
        curve = wrk_load(gw, tmp, args.wrk, total_s, refuse_at, stop_sink)
    else:
        curve = asyncio.run(steady_load(gw, args.rate, total_s, refuse_at, stop_sink))
    steady = [c for c in curve if c["t_s"] >= 60] or curve
    return {
        "minutes": args.down_minutes,
        "traffic": f"wrk, {args.wrk} connections (closed loop)" if args.wrk else f"{args.rate:g} req/s",
        "healthy": args.healthy,
        "error_minutes": None if args.healthy else args.error_minutes,
        "curve": curve,
        "rss_first_mb": curve[0]["rss_mb"] if curve else None,
        "rss_after_1min_mb": steady[0]["rss_mb"] if steady else None,
        "rss_last_mb": curve[-1]["rss_mb"] if curve else None,
        "rss_max_mb": max(c["rss_mb"] for c in curve) if curve else None,
        "p50_ms_median": sorted(c["p50_ms"] for c in curve)[len(curve) // 2] if curve else None,
    }


def serving_pids(top: int) -> tuple[int, int | None]:
    """The serving process (`relaycast serve`'s worker; the process itself when it serves alone) and the telemetry
    process, if there is one."""
    procs = load_procs.tree(top).values()
    worker = next((p.pid for p in procs if p.role == "worker"), top)
    return worker, next((p.pid for p in procs if p.role == "telemetry"), None)


def telemetry_rss_mb(pid: int | None) -> float | None:
    return round(load.memory_mb(pid)[0], 1) if pid is not None else None


def memory_parts_mb(pid: int) -> dict[str, float]:
    """RSS by kind of mapping: the main malloc heap, anonymous maps (thread arenas, Python's arenas, large
    buffers) and files (the interpreter's and libraries' code)."""
    parts = {"heap": 0, "anon": 0, "file": 0}
    kind = "anon"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # "start-end perms offset dev inode [path]"
            path = head[5] if len(head) > 5 else ""
            kind = "heap" if path == "[heap]" else ("anon" if not path or path.startswith("[") else "file")
        elif line.startswith("Rss:"):
            parts[kind] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in parts.items()}


def sample(gw: Gateway, t_s: float, phase: str, p50_ms: float, requests: int, errors: int) -> dict[str, Any]:
    """One point of the curve: the gateway's RSS and the Datadog destination's counters."""
    req = urllib.request.Request(
        f"http://{HOST}:{gw.port}/admin/broadcast", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        d = next(x for x in json.loads(r.read())["destinations"] if x["name"] == "datadog")
    worker, tele = serving_pids(gw.proc.pid)
    rss, hwm = load.memory_mb(worker)
    parts = memory_parts_mb(worker)
    row = {
        "t_s": round(t_s),
        "telemetry_rss_mb": telemetry_rss_mb(tele),
        "phase": phase,
        "rss_mb": round(rss, 1),
        "hwm_mb": round(hwm, 1),
        "heap_mb": parts["heap"],
        "anon_mb": parts["anon"],
        "file_mb": parts["file"],
        "p50_ms": round(p50_ms, 2),
        "requests": requests,
        "errors": errors,
        "queued": d["queued"],
        "spooled_batches": d["spooled_batches"],
        "spool_mb": round(d["spool_bytes"] / 2**20, 1),
        "dropped": d["dropped"],
        "sent": d["sent"],
        "retries": d["retries"],
    }
    print(
        f"  {phase:>7} {row['t_s']:4d} s: serving process RSS {rss:6.1f} MB (telemetry {row['telemetry_rss_mb']}; peak {hwm:.1f}; heap {parts['heap']}, anon "
        f"{parts['anon']}, files {parts['file']}), p50 {row['p50_ms']:.2f} ms, "
        f"{requests} req, queued {row['queued']}, spool {row['spooled_batches']} batches / {row['spool_mb']} MB, "
        f"dropped {row['dropped']}",
        flush=True,
    )
    return row


def wrk_load(
    gw: Gateway, tmp: Path, conns: int, total_s: float, refuse_at: float | None, stop_sink: Any
) -> list[dict[str, Any]]:
    """Closed-loop load: wrk runs of SAMPLE_S seconds back to back, a sample after each."""
    sc = load.Scenario(path="relaycast", stream=False, latency_ms=50, conns=conns)
    script = load.write_lua(tmp, sc, load.LUA, "-outage")
    curve: list[dict[str, Any]] = []
    started = time.monotonic()
    phase = "up" if refuse_at is None else "503"
    while (elapsed := time.monotonic() - started) < total_s:
        if refuse_at is not None and elapsed >= refuse_at:
            stop_sink()
            refuse_at, phase = None, "refused"
        r = load.parse_wrk(load.run_wrk(gw.url, script, conns, min(SAMPLE_S, max(1, total_s - elapsed))))
        errors = r.get("status", 0) + sum(r.get(k, 0) for k in ("connect", "read", "write", "timeout"))
        curve.append(sample(gw, time.monotonic() - started, phase, r["p50_us"] / 1000, r["requests"], errors))
    return curve


async def steady_load(
    gw: Gateway, rate: float, total_s: float, refuse_at: float | None, stop_sink: Any
) -> list[dict[str, Any]]:
    """Open-loop load: `rate` requests per second whatever the answers' latency (at most 400 in flight)."""
    body = load.body("fake/gpt-4o-mini@latency_ms=50,tokens=20", False).encode()
    headers = {"content-type": "application/json"}
    loop = asyncio.get_running_loop()
    window: list[float] = []
    errors = 0
    inflight: set[asyncio.Task[None]] = set()
    curve: list[dict[str, Any]] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=400)) as session:

        async def one() -> None:
            nonlocal errors
            t0 = loop.time()
            try:
                async with session.post(gw.url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
            except (aiohttp.ClientError, OSError, TimeoutError):
                errors += 1
            window.append(loop.time() - t0)

        started = loop.time()
        next_sample = started + SAMPLE_S
        phase = "up" if refuse_at is None else "503"
        sent = 0
        while (now := loop.time()) - started < total_s:
            if refuse_at is not None and now - started >= refuse_at:
                await asyncio.to_thread(stop_sink)
                refuse_at, phase = None, "refused"
            for _ in range(max(0, int((now - started) * rate) - sent)):
                if len(inflight) < 400:
                    task = loop.create_task(one())
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                else:
                    errors += 1  # the gateway is not keeping up: counted, not queued
                sent += 1
            if now >= next_sample:
                next_sample += SAMPLE_S
                lat = sorted(window)
                p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
                curve.append(await asyncio.to_thread(sample, gw, now - started, phase, p50, len(lat), errors))
                window.clear()
                errors = 0
            await asyncio.sleep(0.01)
        await asyncio.gather(*inflight, return_exceptions=True)
    return curve


# --- the restart scenario: records counted by request id ---------------------------------------------------------

PHASES = ((0.0, "up"), (0.1, "503"), (0.3, "refused"), (0.6, "back"))  # (share of the run, destination state)
RESTART_AT = 0.45
SINK_MODE = {"up": "ok", "503": "503", "refused": "refuse", "back": "ok"}
SETTLE_S = 120  # after the traffic stops, at most this long for every record to be delivered or counted


def restart_config(upstream: int, tmp: Path, sink_url: str) -> str:
    """A webhook destination with every pipeline setting at its default; the store off, so the numbers are the
    broadcast pipeline's."""
    return f"""
admin_key: {ADMIN_KEY}
store: {{enabled: false}}
providers:
  - name: fake
    kind: openai_compatible
    base_url: http://{HOST}:{upstream}/v1
broadcast:
  spool_dir: {tmp / "spool"}
  destinations:
    - name: hook
      kind: webhook
      url: {sink_url}
"""


def hook_status(port: int) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://{HOST}:{port}/admin/broadcast", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        d: dict[str, Any] = next(x for x in json.loads(r.read())["destinations"] if x["name"] == "hook")
        return d


def add(counts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """The sum of two counts by reason, reasons at 0 left out."""
    out = {k: v for k, v in counts.items() if v}
    for k, v in more.items():
        if v:
            out[k] = out.get(k, 0) + v
    return out


async def restart_run(args: argparse.Namespace, tmp: Path, up: int, procs: list[Any]) -> dict[str, Any]:
    """The outage with a restart; see the module docstring (3)."""
    sink = RecordSink(tmp / "sink.log").start()
    text = restart_config(up, tmp, sink.url)
    traffic = Traffic(args.rate, model="fake/gpt-4o-mini@latency_ms=50,tokens=20")
    total_s = args.minutes * 60
    gws: list[Gateway] = []
    dropped: dict[str, int] = {}
    curve: list[dict[str, Any]] = []
    spool_series: list[tuple[float, int]] = []  # (t, spooled batches), every second
    events: dict[str, Any] = {}
    last: dict[str, Any] = {}
    load_task: asyncio.Task[None] | None = None
    phase_i = 0
    next_sample = SAMPLE_S
    restarted = False
    answered_before = 0
    try:
        gws.append(await asyncio.to_thread(Gateway, tmp, "restart-1", text))
        procs.append(gws[0].proc)
        traffic.url = f"http://{HOST}:{gws[0].port}"
        load_task = asyncio.create_task(traffic.run())
        started = time.monotonic()
        while (t := time.monotonic() - started) < total_s:
            while phase_i + 1 < len(PHASES) and t >= PHASES[phase_i + 1][0] * total_s:
                phase_i += 1
                await asyncio.to_thread(sink.set_mode, SINK_MODE[PHASES[phase_i][1]])
                if PHASES[phase_i][1] == "back":
                    events["back_at_s"] = round(t, 1)
                print(f"  {t:5.0f} s: destination {PHASES[phase_i][1]}", flush=True)
            if not restarted and t >= RESTART_AT * total_s:
                restarted = True
                events.update(await restart(args, tmp, text, gws, traffic, dropped, procs, t))
            gw = gws[-1]
            try:
                last = await asyncio.to_thread(hook_status, gw.port)
            except OSError:
                pass  # the gateway is starting
            spool_series.append((round(t, 1), last.get("spooled_batches", 0)))
            if "back_at_s" in events and "drained_after_s" not in events and last.get("spooled_batches", 1) == 0:
                events["drained_after_s"] = round(t - events["back_at_s"], 1)
                print(f"  {t:5.0f} s: spool empty, {events['drained_after_s']} s after the destination came back")
            if t >= next_sample:
                next_sample += SAMPLE_S
                lat = sorted(traffic.latencies)
                traffic.latencies.clear()
                answered = len(traffic.answered) - answered_before
                answered_before += answered
                row = await asyncio.to_thread(
                    restart_sample, gw, t, PHASES[phase_i][1], len(gws), lat, answered, last, sink
                )
                curve.append(row)
            await asyncio.sleep(1.0)
        traffic.stop()
        await load_task
        print(f"  {time.monotonic() - started:5.0f} s: traffic stopped; waiting for the pipeline", flush=True)
        final, settled_s = await settle(gws[-1], traffic, sink, dropped)
        dropped = add(dropped, final["dropped"])
        t0 = time.monotonic()
        load.stop(gws[-1].proc)
        events["last_stop_s"] = round(time.monotonic() - t0, 1)
        got = await asyncio.to_thread(sink.delivered)
    finally:
        if load_task is not None and not load_task.done():
            traffic.stop()
            await load_task
        sink.stop()
    ids = traffic.answered
    delivered = sum(1 for i in ids if i in got)
    counted = sum(dropped.values())
    return {
        "minutes": args.minutes,
        "rate": args.rate,
        "signal": args.signal,
        "answered": len(ids),
        "statuses": {str(k): v for k, v in traffic.statuses.items()},
        "unanswered": traffic.failed,
        "not_sent": traffic.skipped,
        "delivered": delivered,
        "dropped": dropped,
        "lost": len(ids) - delivered - counted,
        "duplicates": sum(n - 1 for n in got.values()),
        "phantom": sum(1 for i in got if i not in ids),
        "settled_after_s": settled_s,
        "spool_peak": max((n for _, n in spool_series), default=0),
        "events": events,
        "final": {k: final.get(k) for k in ("sent", "retries", "dropped", "spooled_batches", "healthy")},
        "curve": curve,
        "spool_series": spool_series,
    }


async def restart(
    args: argparse.Namespace,
    tmp: Path,
    text: str,
    gws: list[Gateway],
    traffic: Traffic,
    dropped: dict[str, int],
    procs: list[Any],
    t: float,
) -> dict[str, Any]:
    """Stop the gateway with the chosen signal (its drops read just before) and start another on the same spool."""
    old = gws[-1]
    before = await asyncio.to_thread(hook_status, old.port)
    dropped.update(add(dropped, before["dropped"]))  # its counters end with it
    sig = signal.SIGKILL if args.signal == "kill" else signal.SIGTERM
    rss_before, _ = load.memory_mb(serving_pids(old.proc.pid)[0])
    t0 = time.monotonic()
    old.proc.send_signal(sig)
    await asyncio.to_thread(old.proc.wait, 60)
    exit_s = time.monotonic() - t0
    traffic.url = None
    new = await asyncio.to_thread(Gateway, tmp, f"restart-{len(gws) + 1}", text)
    procs.append(new.proc)
    gws.append(new)
    traffic.url = f"http://{HOST}:{new.port}"
    print(
        f"  {t:5.0f} s: {sig.name} (exit in {exit_s:.1f} s; spool then {before['spooled_batches']} batches, "
        f"queued {before['queued']}); restarted in {time.monotonic() - t0:.1f} s",
        flush=True,
    )
    return {
        "restart_at_s": round(t, 1),
        "exit_s": round(exit_s, 1),
        "down_s": round(time.monotonic() - t0, 1),
        "rss_before_restart_mb": round(rss_before, 1),
        "queued_at_restart": before["queued"],
        "spooled_at_restart": before["spooled_batches"],
    }


def restart_sample(
    gw: Gateway,
    t: float,
    phase: str,
    n: int,
    lat: list[float],
    answered: int,
    d: dict[str, Any],
    sink: RecordSink,
) -> dict[str, Any]:
    """One point of the curve: the gateway's RSS, the window's latency and answers, the destination's counters
    (`d`) and what the receiver got."""
    worker, tele = serving_pids(gw.proc.pid)
    rss, hwm = load.memory_mb(worker)
    parts = memory_parts_mb(worker)
    got = sink.summary()
    row = {
        "t_s": round(t),
        "telemetry_rss_mb": telemetry_rss_mb(tele),
        "phase": phase,
        "gateway": n,
        "rss_mb": round(rss, 1),
        "hwm_mb": round(hwm, 1),
        "heap_mb": parts["heap"],
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "answered": answered,
        "queued": d.get("queued"),
        "spooled_batches": d.get("spooled_batches"),
        "spool_mb": round(d.get("spool_bytes", 0) / 2**20, 1),
        "sent": d.get("sent"),
        "dropped": add({}, d.get("dropped", {})),
        "healthy": d.get("healthy"),
        "delivered": got["unique"],
        "duplicates": got["duplicates"],
    }
    print(
        f"  {phase:>7} {row['t_s']:4d} s: gateway {n} RSS {rss:6.1f} MB (heap {parts['heap']}), "
        f"p50 {row['p50_ms']} ms, answered {row['answered']}, queued {row['queued']}, "
        f"spool {row['spooled_batches']} batches / {row['spool_mb']} MB, sent {row['sent']}, "
        f"delivered {row['delivered']} (+{row['duplicates']} dup), dropped {row['dropped'] or '-'}",
        flush=True,
    )
    return row


async def settle(
    gw: Gateway, traffic: Traffic, sink: RecordSink, dropped: dict[str, int]
) -> tuple[dict[str, Any], float | None]:
    """Until nothing is queued or spooled and every answered record is delivered or counted, or nothing more
    arrives for 5 s (records a SIGKILL lost never will), at most SETTLE_S: the destination's last status, and how
    long it took (None: it did not)."""
    t0 = time.monotonic()
    seen, still = -1, 0
    while True:
        d = await asyncio.to_thread(hook_status, gw.port)
        got = await asyncio.to_thread(sink.delivered)
        missing = sum(1 for i in traffic.answered if i not in got)
        counted = sum(add(dropped, d["dropped"]).values())
        still = still + 1 if len(got) == seen else 0
        seen = len(got)
        if d["queued"] == 0 and d["spooled_batches"] == 0 and (missing <= counted or still >= 5):
            return d, round(time.monotonic() - t0, 1)
        if time.monotonic() - t0 > SETTLE_S:
            return d, None
        await asyncio.sleep(1.0)


def restart_markdown(out: dict[str, Any]) -> str:
    m, r = out["machine"], out["restart"]
    e = r["events"]
    sig = "SIGKILL" if r["signal"] == "kill" else "SIGTERM"
    drops = ", ".join(f"{k} {v:,}" for k, v in sorted(r["dropped"].items())) or "none"
    drained = e.get("drained_after_s")
    drained_text = f"{drained} s, traffic flowing" if drained is not None else "not while traffic flowed"
    settled = r["settled_after_s"]
    settled_text = f"not within {SETTLE_S} s" if settled is None else f"{settled} s"
    lines = [
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}; {out['date']}; "
        "fake upstream, receiver, gateway and load generator on one machine.",
        "",
        f"{r['minutes']:g} min at {r['rate']:g} req/s (50 ms upstream, non-streaming), a webhook destination up, then "
        f"503, then refusing connections, then back (at {e.get('back_at_s')} s); {sig} at {e.get('restart_at_s')} s "
        f"(exit in {e.get('exit_s')} s, {e.get('spooled_at_restart')} batches spooled and {e.get('queued_at_restart')} "
        f"records queued then; the new gateway answered {e.get('down_s')} s after the signal).",
        "",
        "| answered | delivered | counted drops | lost | duplicates | not answered | spool peak (batches) | "
        "spool empty after the destination came back | all settled after traffic stopped |",
        "|---:|---:|---|---:|---:|---:|---:|---|---|",
        f"| {r['answered']:,} | {r['delivered']:,} | {drops} | {r['lost']:,} | {r['duplicates']:,} | "
        f"{r['unanswered']:,} | {r['spool_peak']} | "
        f"{drained_text} | {settled_text} |",
        "",
        "| t (s) | phase | gateway | RSS (MB) | of it heap | p50 (ms) | answered | queued | spool batches | spool MB | "
        "delivered | duplicates | dropped |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {c['t_s']} | {c['phase']} | {c['gateway']} | {c['rss_mb']} | {c['heap_mb']} | {c['p50_ms']} | "
        f"{c['answered']} | {c['queued']} | {c['spooled_batches']} | {c['spool_mb']} | {c['delivered']:,} | "
        f"{c['duplicates']} | {', '.join(f'{k} {v}' for k, v in sorted(c['dropped'].items())) or '-'} |"
        for c in r["curve"]
    ]
    return "\n".join(lines) + "\n"


def markdown(out: dict[str, Any]) -> str:
    m = out["machine"]
    lines = [
        f"Machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}; {out['date']}; "
        "fake upstream, sink, gateway and load generator on one machine."
    ]
    d = out.get("down") or {}
    if d.get("curve"):
        what = (
            "Datadog intake up (control)"
            if d["healthy"]
            else f"Datadog intake answering 503 for {d['error_minutes']} min, then refusing connections"
        )
        lines += [
            "",
            f"{what}; {d['minutes']} min of traffic at {d['traffic']} (50 ms upstream, non-streaming): "
            f"RSS {d['rss_first_mb']} MB at 10 s, {d['rss_after_1min_mb']} MB at 1 min, {d['rss_max_mb']} MB at most, "
            f"{d['rss_last_mb']} MB at the end; median p50 {d['p50_ms_median']:.2f} ms.",
            "",
            "| t (s) | phase | RSS (MB) | of it heap | p50 (ms) | req | queued | spool batches | spool MB | dropped | retries |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        lines += [
            f"| {c['t_s']} | {c['phase']} | {c['rss_mb']} | {c['heap_mb']} | {c['p50_ms']} | {c['requests']} | {c['queued']} | "
            f"{c['spooled_batches']} | {c['spool_mb']} | "
            f"{', '.join(f'{k} {v}' for k, v in sorted(c['dropped'].items())) or '-'} | {c['retries']} |"
            for c in d["curve"]
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--down-minutes", type=float, default=10, help="minutes of the outage scenario (default 10)")
    p.add_argument(
        "--error-minutes", type=float, default=2, help="of those, minutes the intake answers 503 (default 2)"
    )
    p.add_argument("--rate", type=float, help="requests per second during the outage (default 300; with --restart 120)")
    p.add_argument(
        "--wrk", type=int, metavar="CONNS", help="outage traffic from wrk with CONNS connections instead of --rate"
    )
    p.add_argument("--outage-only", action="store_true", help=argparse.SUPPRESS)  # what it always does now
    p.add_argument("--healthy", action="store_true", help="control: the intake stays up during the outage scenario")
    p.add_argument(
        "--restart", action="store_true", help="the outage with a restart, records counted by request id (only)"
    )
    p.add_argument("--minutes", type=float, default=10, help="with --restart: minutes of traffic (default 10)")
    p.add_argument(
        "--signal", choices=("term", "kill"), default="term", help="with --restart: how the gateway is stopped"
    )
    p.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    p.add_argument("--sink-status", type=int, default=202, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sink:
        sink_main(args.sink, args.sink_status)
        return 0
    if args.rate is None:
        args.rate = 120 if args.restart else 300
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
