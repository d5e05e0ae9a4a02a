"""What bench/load.py measures: the fake upstream, the bare forwarder and relaycast in two configurations, started
as subprocesses on 127.0.0.1 with the cores each may use.

- `direct`: `relaycast fake-upstream` itself (the load generator talks to it straight);
- `forwarder`: bench/forwarder.py (granian RSGI + one aiohttp session per worker, no features);
- `relaycast-bare`: `relaycast serve` with nothing on: no store, no broadcast, no keys, no limits;
- `relaycast-prod`: `relaycast serve` with the production features: the SQLite store, broadcast to a Datadog
  Agent stand-in (bench/broadcast.py's sink, answering 202 like the intake) and to a file, one gateway key the
  client sends, and in-memory limits on that key generous enough that nothing is refused;
- `relaycast-off`: the production features with the store and broadcast off (the key and its limits only): what
  `relaycast-prod` is measured against for the cost of the store and broadcast alone.

The layout: with one worker, the target under test (every process of it) runs on `target_cpus` and the fake
upstream, the Datadog stand-in and wrk on `load_cpus`; with N workers everything shares the same N cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load_procs import HOST, free_port, pinned, start, stop, wait_http, wait_port

HERE = Path(__file__).resolve().parent
KEY = "rk-bench-load-key-0000000001"  # the production target's gateway key, sent by the client
LIMITS = "rpm: 100000000, tpm: 1000000000000"  # in memory (no Redis), never reached

TITLES = {
    "direct": "direct (fake upstream)",
    "forwarder": "bare forwarder",
    "relaycast-bare": "relaycast, nothing on",
    "relaycast-prod": "relaycast, production features",
    "relaycast-off": "relaycast, production features with store and broadcast off",
}
TARGETS = tuple(TITLES)


@dataclass(frozen=True)
class Layout:
    target_cpus: str | None  # the target under test: every process it starts inherits this
    load_cpus: str | None  # the fake upstream, the Datadog stand-in and wrk

    @classmethod
    def for_workers(cls, workers: int, cores: int, pin: bool) -> Layout:
        if not pin or cores < 2 or workers > cores:
            return cls(None, None)
        if workers == 1:
            return cls("0", "1")
        every = f"0-{workers - 1}"
        return cls(every, every)

    def describe(self) -> str:
        if self.target_cpus is None:
            return "not pinned: every process may run on any core"
        if self.target_cpus == self.load_cpus:
            return (
                f"everything on cores {self.target_cpus} (`taskset -c {self.target_cpus}`): the target under test, "
                "the fake upstream, the Datadog stand-in and wrk share them"
            )
        return (
            f"the target under test and every process it starts on core {self.target_cpus}; the fake upstream, "
            f"the Datadog stand-in and wrk on core {self.load_cpus} (`taskset -c`)"
        )


@dataclass
class Running:
    name: str
    proc: subprocess.Popen[bytes]
    url: str  # the chat completions URL
    log: Path
    command: list[str]
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request
    admin: tuple[str, str] | None = None  # (base URL, admin key) for /admin/broadcast and /admin/store

    @property
    def title(self) -> str:
        return TITLES[self.name]


def key_config(limits: str = LIMITS) -> str:
    """The `keys:` section of the benchmark's gateway key (`KEY`), with `limits` (YAML flow entries; "" for none)."""
    return f"keys:\n  - {{name: bench, secret: {KEY}" + (f", {limits}" if limits else "") + "}\n"


def relaycast_config(name: str, upstream: int, sink: int, where: Path, priority: str | None = None) -> str:
    """`priority`: `server.telemetry_priority` (None: relaycast's default)."""
    server = f"server: {{host: {HOST}" + (f", telemetry_priority: '{priority}'" if priority else "") + "}\n"
    if name in ("relaycast-bare", "relaycast-off"):
        key = key_config() if name == "relaycast-off" else ""
        return (
            server + f"providers:\n  - {{name: fake, kind: openai_compatible, base_url: 'http://{HOST}:{upstream}/v1', "
            "api_key: bench-upstream-key}\n"
            "store: {enabled: false}\n" + key
        )
    import broadcast  # the same destinations as bench/broadcast.py: Datadog (to the stand-in) and a file

    return (
        broadcast.config(upstream, where, "on", sink)
        + server
        + f"store: {{path: {where / 'relaycast.db'}}}\n"
        + key_config()
    )


def admin_key() -> str:
    import broadcast

    key: str = broadcast.ADMIN_KEY
    return key


@dataclass
class Fleet:
    """Everything one benchmark run started; `close()` stops it all."""

    layout: Layout
    tmp: Path
    upstream_port: int = 0
    upstream: subprocess.Popen[bytes] | None = None
    sink: subprocess.Popen[bytes] | None = None
    targets: dict[str, Running] = field(default_factory=dict)

    def logs(self) -> dict[str, Path]:
        out = {"fake upstream": self.tmp / "fake.log", "datadog stand-in": self.tmp / "sink.log"}
        out.update({t.title: t.log for t in self.targets.values() if t.name != "direct"})
        return out

    def close(self) -> None:
        for t in self.targets.values():
            stop(t.proc)
        stop(self.sink)
        stop(self.upstream)

    def check_alive(self, during: str) -> None:
        procs: list[tuple[str, subprocess.Popen[bytes] | None]] = [("fake upstream", self.upstream)]
        procs += [("datadog stand-in", self.sink)] + [(t.title, t.proc) for t in self.targets.values()]
        for title, p in procs:
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{title} exited during {during} (code {p.returncode})")


def start_sink(fleet: Fleet) -> int:
    """Start the production target's Datadog stand-in (bench/broadcast.py's sink, answering 202) on the load's
    cores; its port."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "broadcast.py"), "--sink", str(port), "--sink-status", "202"]
    fleet.sink = start(pinned(cmd, fleet.layout.load_cpus), fleet.tmp / "sink.log")
    wait_port(port, fleet.sink)
    return port


def launch(fleet: Fleet, names: list[str], workers: int, priority: str | None = None) -> None:
    """Start the fake upstream, the Datadog stand-in (when the production target runs) and the targets (relaycast's
    with `server.telemetry_priority` set to `priority` when given)."""
    py, tmp, lay = sys.executable, fleet.tmp, fleet.layout
    fleet.upstream_port = up = free_port()
    fake_cmd = [py, "-m", "relaycast", "fake-upstream", "--host", HOST, "--port", str(up), "--log-level", "critical"]
    fleet.upstream = start(pinned(fake_cmd, lay.load_cpus), tmp / "fake.log")
    wait_http(f"http://{HOST}:{up}/v1/models", fleet.upstream, tmp / "fake.log")
    sink_port = start_sink(fleet) if "relaycast-prod" in names else 0
    for name in names:
        if name == "direct":
            url = f"http://{HOST}:{up}/v1/chat/completions"
            fleet.targets[name] = Running(name, fleet.upstream, url, tmp / "fake.log", fake_cmd)
            continue
        port = free_port()
        log = tmp / f"{name}.log"
        if name == "forwarder":
            cmd = [py, str(HERE / "forwarder.py"), "--upstream", f"http://{HOST}:{up}", "--port", str(port)]
            cmd += ["--workers", str(workers)]
            ready = f"http://{HOST}:{port}/v1/models"  # forwarded to the upstream
        else:
            where = tmp / name
            where.mkdir()
            cfg = where / "relaycast.yaml"
            cfg.write_text(relaycast_config(name, up, sink_port, where, priority))
            cmd = [py, "-m", "relaycast", "serve", "--config", str(cfg), "--host", HOST, "--port", str(port)]
            cmd += ["--log-level", "warning"] + (["--workers", str(workers)] if workers > 1 else [])
            ready = f"http://{HOST}:{port}/healthz"
        proc = start(pinned(cmd, lay.target_cpus), log)
        run = Running(name, proc, f"http://{HOST}:{port}/v1/chat/completions", log, cmd)
        if name in ("relaycast-prod", "relaycast-off"):
            run.headers = {"Authorization": f"Bearer {KEY}"}
        if name == "relaycast-prod":
            run.admin = (f"http://{HOST}:{port}", admin_key())
        fleet.targets[name] = run
        wait_http(ready, proc, log)


def telemetry_status(run: Running) -> dict[str, Any] | None:
    """What the production target's store and destinations did (`/admin/store`, `/admin/broadcast`)."""
    if run.admin is None:
        return None
    base, key = run.admin
    out: dict[str, Any] = {}
    for what in ("store", "broadcast"):
        req = urllib.request.Request(f"{base}/admin/{what}", headers={"authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                out[what] = json.loads(r.read())
        except OSError as e:
            out[what] = {"error": f"{type(e).__name__}: {e}"}
    out["link"] = link_status(base, key)
    return out


def dropped_counts(tel: dict[str, Any] | None) -> dict[str, int]:
    """Records dropped so far by the production target's telemetry: its workers' hand-off (`link`), the store, and
    each broadcast destination by name."""
    if not tel:
        return {}
    out = {"link": sum(((tel.get("link") or {}).get("dropped") or {}).values())}
    store = (tel.get("store") or {}).get("store") or {}
    out["store"] = sum((store.get("dropped") or {}).values())
    for d in (tel.get("broadcast") or {}).get("destinations") or []:
        out[str(d.get("name"))] = int(d.get("dropped_total", 0))
    return out


def link_status(base: str, key: str) -> dict[str, Any]:
    """The workers' hand-off to the telemetry process, from /metrics: records handed over, and those dropped on the
    way by reason (a backlog that filled while the telemetry process was behind)."""
    req = urllib.request.Request(f"{base}/metrics", headers={"authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}"}
    handed, dropped = 0, {}
    for line in text.splitlines():
        if line.startswith("relaycast_telemetry_handed_total"):
            handed = int(float(line.split()[-1]))
        elif line.startswith("relaycast_telemetry_dropped_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            dropped[reason] = int(float(line.split()[-1]))
    return {"handed": handed, "dropped": dropped}
