"""Load benchmark: the gateway's overhead, throughput, CPU per request and memory, against a loopback fake upstream.

    python bench/load.py                 # full run, 8 s per scenario (a few minutes)
    python bench/load.py --duration 15   # longer runs
    python bench/load.py --quick         # 2 s runs of a subset, a smoke test

Starts `relaycast fake-upstream` and `relaycast serve` (one `openai_compatible` provider pointing at the fake) as
subprocesses on 127.0.0.1, then runs wrk for every scenario:

    {direct to the fake, through relaycast} x {non-streaming, streaming} x {upstream latency 0, 50 ms}
    x {10, 50 connections}

The upstream behaviour is chosen by the model name (`gpt-4o-mini@latency_ms=50,tokens=20`; through the gateway
`fake/gpt-4o-mini@...`). Each scenario gets a short warm-up run first. Latency percentiles come from a Lua `done()`
hook (exact to the microsecond); CPU time per request is the gateway's utime+stime (/proc/PID/stat) over the
measured run divided by the requests wrk completed; peak RSS is the gateway's VmHWM.

Prints the machine, a Markdown table and the project's targets (met or not); writes bench/results/load-latest.json
and bench/results/load-latest.md. Only ever sends traffic to 127.0.0.1; always stops its subprocesses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # the only address this benchmark ever talks to
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKENS = 20
NOISY_CORES = 0.1  # flag a scenario when other processes used this much CPU during it

# Targets from the project's brief.
TARGET_OVERHEAD_P50_MS = 1.5
TARGET_OVERHEAD_P99_MS = 5.0
TARGET_RPS = 3000
TARGET_RSS_MB = 150

LUA = r"""
wrk.method = "POST"
wrk.body = [==[__BODY__]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = __ACCEPT__
__DELAY__
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"p999_us\":%d,\"mean_us\":%.1f,\"stdev_us\":%.1f,\"max_us\":%d}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.stdev, latency.max))
end
"""

# Used only when a scenario had non-2xx responses: a short extra run that tallies status codes and keeps one body
# per status, so the report can say exactly what the error was. (A `response` hook slows wrk, so it is not used
# for the measured runs.)
LUA_DIAG = r"""
wrk.method = "POST"
wrk.body = [==[__BODY__]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = __ACCEPT__
__DELAY__
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) counts = {}; samples = {} end
response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if status >= 300 and samples[status] == nil then samples[status] = string.sub(body or "", 1, 400) end
end
done = function(summary, latency, requests)
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    local s = t:get("samples")
    for k, v in pairs(c) do io.write(string.format("BENCH_STATUS %d %d\n", k, v)) end
    for k, v in pairs(s) do io.write(string.format("BENCH_SAMPLE %d %s\n", k, string.gsub(v, "\n", "\\n"))) end
  end
end
"""


@dataclass
class Scenario:
    path: str  # "direct" | "relaycast"
    stream: bool
    latency_ms: int
    conns: int

    @property
    def key(self) -> tuple[bool, int, int]:
        return (self.stream, self.latency_ms, self.conns)

    @property
    def label(self) -> str:
        mode = "stream" if self.stream else "non-stream"
        return f"{self.path:9} {mode:10} upstream {self.latency_ms:>2} ms  {self.conns:>2} conns"


@dataclass
class Result:
    path: str
    stream: bool
    latency_ms: int
    conns: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    bytes_per_request: float
    errors: dict[str, int]
    overhead_p50_ms: float | None = None
    overhead_p99_ms: float | None = None
    gateway_cpu_us_per_request: float | None = None
    gateway_rss_mb: float | None = None
    gateway_hwm_mb: float | None = None
    upstream_cpu_us_per_request: float | None = None
    wrk_cpu_us_per_request: float | None = None
    other_cpu_cores: float | None = None  # CPU used meanwhile by processes that are not part of the benchmark
    diagnosis: dict[str, Any] = field(default_factory=dict)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


# --- processes ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    fh = open(log, "wb")
    try:
        # Its own session, so stopping it (and anything it spawned) is one signal to its process group.
        return subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    finally:
        fh.close()


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url}: process exited with {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2 :].split()  # fields after "pid (comm) "; utime is field 14 overall
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def system_busy_seconds() -> float:
    """user+nice+system time of the whole machine (all processes), from /proc/stat."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(f[1]) + int(f[2]) + int(f[3])) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (the wrk runs)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            k, v = line.split(":", 1)
            values[k] = int(v.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# --- requests -------------------------------------------------------------------------------------------------


def body(model: str, stream: bool) -> str:
    b: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Say hello to the benchmark in one short sentence."},
        ],
        "max_tokens": 64,
    }
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":"))


def model_for(sc: Scenario) -> str:
    name = f"gpt-4o-mini@latency_ms={sc.latency_ms},tokens={TOKENS}"
    return f"fake/{name}" if sc.path == "relaycast" else name


def check_once(url: str, sc: Scenario) -> str | None:
    """One request before the load: is the answer well formed (and, for a stream, complete)? None when it is."""
    req = urllib.request.Request(
        url, data=body(model_for(sc), sc.stream).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}: {e.read()[:400].decode(errors='replace')}"
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    if status != 200:
        return f"HTTP {status}"
    if not sc.stream:
        try:
            doc = json.loads(raw)
            doc["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError):
            return f"not a chat completion: {raw[:300]}"
        return None
    events = [ln[5:].strip() for ln in raw.splitlines() if ln.startswith("data:")]
    if not events or events[-1] != "[DONE]":
        return f"stream did not end with [DONE]: {raw[-300:]}"
    contents = 0
    for ev in events[:-1]:
        try:
            doc = json.loads(ev)
        except ValueError:
            return f"stream event is not JSON: {ev[:200]}"
        if "error" in doc:
            return f"stream carried an error: {ev[:300]}"
        for ch in doc.get("choices") or ():
            if (ch.get("delta") or {}).get("content"):
                contents += 1
    if contents < TOKENS // 2:
        return f"stream had only {contents} content chunks"
    return None


# --- wrk ------------------------------------------------------------------------------------------------------


JITTER_MS = 0  # set from --jitter-ms


def write_lua(tmp: Path, sc: Scenario, template: str, suffix: str) -> Path:
    accept = '"text/event-stream"' if sc.stream else '"application/json"'
    delay = f"delay = function() return math.random(0, {JITTER_MS}) end" if JITTER_MS else ""
    lua = template.replace("__BODY__", body(model_for(sc), sc.stream)).replace("__ACCEPT__", accept)
    lua = lua.replace("__DELAY__", delay)
    p = tmp / f"{sc.path}-{'s' if sc.stream else 'n'}-{sc.latency_ms}-{sc.conns}{suffix}.lua"
    p.write_text(lua)
    return p


def run_wrk(url: str, script: Path, conns: int, seconds: float) -> str:
    assert url.startswith(f"http://{HOST}:"), url
    seconds = max(1, round(seconds))  # wrk takes whole seconds only
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(script), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out: str) -> dict[str, Any]:
    """The Lua done() line (exact), with the --latency text as a fallback for anything missing."""
    parsed: dict[str, Any] = {}
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.M)
    if m:
        parsed = json.loads(m.group(1))
    text_pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not parsed:
        total = re.search(r"^\s+(\d+) requests in ([\d.]+)(\w+)", out, re.M)
        parsed = {
            "requests": int(total.group(1)) if total else 0,
            "duration_us": _ms(total.group(2) + total.group(3)) * 1e3 if total else 0,
            "bytes": 0,
            "p50_us": text_pct.get("50", float("nan")) * 1e3,
            "p90_us": text_pct.get("90", float("nan")) * 1e3,
            "p99_us": text_pct.get("99", float("nan")) * 1e3,
            "p999_us": float("nan"),
            "mean_us": float("nan"),
            "max_us": float("nan"),
            "status": int(non2xx.group(1)) if non2xx else 0,
        }
        if sock:
            parsed.update(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=False))
    parsed["rps_text"] = float(rps.group(1)) if rps else None
    return parsed


def diagnose(url: str, tmp: Path, sc: Scenario, seconds: float) -> dict[str, Any]:
    out = run_wrk(url, write_lua(tmp, sc, LUA_DIAG, "-diag"), sc.conns, seconds)
    counts = {int(k): int(v) for k, v in re.findall(r"^BENCH_STATUS (\d+) (\d+)$", out, re.M)}
    samples = {int(k): v for k, v in re.findall(r"^BENCH_SAMPLE (\d+) (.*)$", out, re.M)}
    return {"status_counts": counts, "samples": samples}


# --- the run --------------------------------------------------------------------------------------------------


def scenarios(quick: bool) -> list[Scenario]:
    conns = (50,) if quick else (10, 50)
    out = []
    for stream in (False, True):
        for latency in (0, 50):
            for c in conns:
                for path in ("direct", "relaycast"):
                    out.append(Scenario(path, stream, latency, c))
    return out


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
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_v[0].split(" Copyright")[0].split(" [")[0].strip() if wrk_v else "?",
        "relaycast": version,
        "git": git or None,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("bench/load.py: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    duration = 2.0 if args.quick else args.duration
    warmup = 1.0 if args.quick else args.warmup
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['platform']}")
    print(f"date:    {info['date']}   {info['wrk']}   relaycast {info['relaycast']} ({info['git']})")
    jitter = f", random 0-{JITTER_MS} ms pause before each request" if JITTER_MS else ""
    print(
        f"runs:    {duration:g} s per scenario after a {warmup:g} s warm-up, wrk -t1{jitter}, all on {HOST}\n",
        flush=True,
    )

    tmp = Path(tempfile.mkdtemp(prefix="relaycast-bench-"))
    fake = gateway = None
    results: list[Result] = []
    gateway_log = tmp / "gateway.log"
    fake_log = tmp / "fake.log"
    try:
        fake_port, gw_port = free_port(), free_port()
        config = tmp / "relaycast.yaml"
        config.write_text(
            "server:\n"
            f"  host: {HOST}\n"
            "providers:\n"
            "  - name: fake\n"
            "    kind: openai_compatible\n"
            f"    base_url: http://{HOST}:{fake_port}/v1\n"
            "    api_key: bench-upstream-key\n" + ("store: {enabled: false}\n" if args.no_store else "")
        )
        py = sys.executable
        fake = start(
            [
                py,
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
            fake_log,
        )
        gateway = start(
            [
                py,
                "-m",
                "relaycast",
                "serve",
                "--config",
                str(config),
                "--host",
                HOST,
                "--port",
                str(gw_port),
                "--log-level",
                "warning",
            ],
            gateway_log,
        )
        wait_http(f"http://{HOST}:{fake_port}/v1/models", fake, fake_log)
        wait_http(f"http://{HOST}:{gw_port}/healthz", gateway, gateway_log)
        urls = {
            "direct": f"http://{HOST}:{fake_port}/v1/chat/completions",
            "relaycast": f"http://{HOST}:{gw_port}/v1/chat/completions",
        }

        all_sc = scenarios(args.quick)
        for i, sc in enumerate(all_sc, 1):
            url = urls[sc.path]
            problem = check_once(url, sc)
            if problem:
                print(f"  ! {sc.label}: a single request was not answered correctly: {problem}", flush=True)
            script = write_lua(tmp, sc, LUA, "")
            if warmup > 0:
                run_wrk(url, script, sc.conns, warmup)
            gw_cpu0, up_cpu0 = cpu_seconds(gateway.pid), cpu_seconds(fake.pid)
            sys0, wrk0, t0 = system_busy_seconds(), children_cpu_seconds(), time.monotonic()
            out = run_wrk(url, script, sc.conns, duration)
            gw_cpu1, up_cpu1 = cpu_seconds(gateway.pid), cpu_seconds(fake.pid)
            sys1, wrk1, t1 = system_busy_seconds(), children_cpu_seconds(), time.monotonic()
            ours = (gw_cpu1 - gw_cpu0) + (up_cpu1 - up_cpu0) + (wrk1 - wrk0)
            # CPU used by anything else on the machine (other people's tests...): noise in these numbers.
            other_cores = max(0.0, (sys1 - sys0) - ours) / (t1 - t0)
            w = parse_wrk(out)
            for p in (fake, gateway):
                if p.poll() is not None:
                    raise RuntimeError(f"a subprocess exited during {sc.label} (code {p.returncode})")
            n = int(w["requests"])
            secs = w["duration_us"] / 1e6 if w["duration_us"] else duration
            errors = {
                k: int(w.get(k, 0)) for k in ("status", "connect", "read", "write", "timeout") if int(w.get(k, 0))
            }
            r = Result(
                path=sc.path,
                stream=sc.stream,
                latency_ms=sc.latency_ms,
                conns=sc.conns,
                duration_s=round(secs, 3),
                requests=n,
                rps=round(n / secs, 1) if secs else 0.0,
                p50_ms=w["p50_us"] / 1e3,
                p90_ms=w["p90_us"] / 1e3,
                p99_ms=w["p99_us"] / 1e3,
                p999_ms=w["p999_us"] / 1e3,
                mean_ms=round(w["mean_us"] / 1e3, 3),
                max_ms=w["max_us"] / 1e3,
                bytes_per_request=round(w["bytes"] / n, 1) if n else 0.0,
                errors=errors,
            )
            r.other_cpu_cores = round(other_cores, 2)
            r.wrk_cpu_us_per_request = round((wrk1 - wrk0) / n * 1e6, 1) if n else None
            if problem:
                r.diagnosis["single_request"] = problem
            if n:
                r.upstream_cpu_us_per_request = round((up_cpu1 - up_cpu0) / n * 1e6, 1)
            if sc.path == "relaycast":
                if n:
                    r.gateway_cpu_us_per_request = round((gw_cpu1 - gw_cpu0) / n * 1e6, 1)
                r.gateway_rss_mb, r.gateway_hwm_mb = (round(v, 1) for v in memory_mb(gateway.pid))
                direct = next(
                    (d for d in results if d.path == "direct" and (d.stream, d.latency_ms, d.conns) == sc.key), None
                )
                if direct:
                    r.overhead_p50_ms = round(r.p50_ms - direct.p50_ms, 3)
                    r.overhead_p99_ms = round(r.p99_ms - direct.p99_ms, 3)
            if errors.get("status"):
                r.diagnosis.update(diagnose(url, tmp, sc, min(2.0, duration)))
            results.append(r)
            print(f"[{i:>2}/{len(all_sc)}] {progress_line(sc, r)}", flush=True)

        final_rss, final_hwm = memory_mb(gateway.pid)
    except BaseException:
        stop(gateway)
        stop(fake)
        for name, log in (("gateway", gateway_log), ("fake upstream", fake_log)):
            if log.exists() and log.stat().st_size:
                print(
                    f"\n--- {name} log (last 2000 characters) ---\n{log.read_text(errors='replace')[-2000:]}",
                    file=sys.stderr,
                )
        raise
    finally:
        stop(gateway)
        stop(fake)
        gw_log_text = gateway_log.read_text(errors="replace") if gateway_log.exists() else ""
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {
        "machine": info,
        "settings": {
            "duration_s": duration,
            "warmup_s": warmup,
            "quick": args.quick,
            "jitter_ms": JITTER_MS,
            "output_tokens": TOKENS,
            "wrk_threads": 1,
        },
        "gateway": {"rss_mb_at_end": round(final_rss, 1), "peak_rss_mb": round(final_hwm, 1)},
        "results": [asdict(r) for r in results],
    }
    targets = evaluate(results, final_hwm)
    summary["targets"] = targets
    table = markdown(results, info, summary, targets)

    print()
    print(table)
    if any(r.error_total or r.diagnosis for r in results):
        print("\nErrors / anomalies:")
        for r in results:
            if r.error_total or r.diagnosis:
                print(f"  {row_name(r)}: {r.errors} {json.dumps(r.diagnosis)[:800]}")
    warn = [ln for ln in gw_log_text.splitlines() if ln.strip() and not ln.startswith("relaycast: serving on")]
    if warn:
        print(f"\nGateway log ({len(warn)} lines at warning level or above; last 20):")
        for ln in warn[-20:]:
            print("  " + ln[:400])
        summary["gateway_log_tail"] = warn[-200:]

    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = ("load-quick" if args.quick else "load-latest") + (
        "-no-store" if args.no_store else ""
    )  # a smoke test never replaces the full results
    (RESULTS / f"{stem}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    print(f"\nwrote {RESULTS / f'{stem}.json'} and {RESULTS / f'{stem}.md'}")
    return 0


# --- reporting ------------------------------------------------------------------------------------------------


def fmt(v: float | None, digits: int = 2, signed: bool = False) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def row_name(r: Result) -> str:
    return f"{r.path} {'stream' if r.stream else 'non-stream'} {r.latency_ms} ms {r.conns} conns"


def progress_line(sc: Scenario, r: Result) -> str:
    s = f"{sc.label}: {r.rps:8.0f} req/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms"
    if r.overhead_p50_ms is not None:
        s += f"  overhead p50 {r.overhead_p50_ms:+.2f} p99 {r.overhead_p99_ms:+.2f} ms"
    if r.gateway_cpu_us_per_request is not None:
        s += f"  gw cpu {r.gateway_cpu_us_per_request:.0f} µs/req  hwm {r.gateway_hwm_mb:.0f} MB"
    if r.error_total:
        s += f"  ERRORS {r.errors}"
    if (r.other_cpu_cores or 0) >= NOISY_CORES:
        s += f"  (other processes used {r.other_cpu_cores:.2f} cores meanwhile)"
    return s


def evaluate(results: list[Result], peak_rss_mb: float) -> list[dict[str, Any]]:
    def find(path: str, stream: bool, latency: int, conns: int) -> Result | None:
        return next(
            (r for r in results if (r.path, r.stream, r.latency_ms, r.conns) == (path, stream, latency, conns)), None
        )

    out: list[dict[str, Any]] = []
    for stream in (False, True):
        r = find("relaycast", stream, 50, 50)
        mode = "streaming" if stream else "non-streaming"
        if r is not None and r.overhead_p50_ms is not None:
            out.append(
                {
                    "target": f"overhead p50 ≤ {TARGET_OVERHEAD_P50_MS} ms (50 conns, 50 ms upstream, {mode})",
                    "value": f"{r.overhead_p50_ms:.2f} ms",
                    "met": r.overhead_p50_ms <= TARGET_OVERHEAD_P50_MS and not r.error_total,
                }
            )
            out.append(
                {
                    "target": f"overhead p99 ≤ {TARGET_OVERHEAD_P99_MS:g} ms (50 conns, 50 ms upstream, {mode})",
                    "value": f"{r.overhead_p99_ms:.2f} ms",
                    "met": r.overhead_p99_ms <= TARGET_OVERHEAD_P99_MS and not r.error_total,
                }
            )
    r = find("relaycast", False, 0, 50)
    if r is not None:
        out.append(
            {
                "target": f"≥ {TARGET_RPS:,} req/s non-streaming, instant upstream, through relaycast, 50 conns",
                "value": f"{r.rps:,.0f} req/s",
                "met": r.rps >= TARGET_RPS and not r.error_total,
            }
        )
    out.append(
        {
            "target": f"gateway peak RSS ≤ {TARGET_RSS_MB} MB",
            "value": f"{peak_rss_mb:.0f} MB",
            "met": peak_rss_mb <= TARGET_RSS_MB,
        }
    )
    return out


def markdown(
    results: list[Result], info: dict[str, Any], summary: dict[str, Any], targets: list[dict[str, Any]]
) -> str:
    s = summary["settings"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, {info['wrk']}; {info['date'][:10]}; "
        f"wrk -t1, {s['duration_s']:g} s per scenario after a {s['warmup_s']:g} s warm-up"
        + (f", a random 0–{s['jitter_ms']} ms pause before each request" if s["jitter_ms"] else "")
        + "; fake upstream, gateway and wrk "
        f"all on the same machine (loopback). Every answer has {s['output_tokens']} output tokens.",
        "",
        "| path | mode | upstream | conns | req/s | p50 ms | p99 ms | overhead p50 ms | overhead p99 ms | gateway CPU µs/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        err = "–"
        if r.error_total:
            err = "**" + ", ".join(f"{k} {v}" for k, v in r.errors.items()) + "**"
        lines.append(
            f"| {r.path} | {'stream' if r.stream else 'non-stream'} | {r.latency_ms} ms | {r.conns} | {r.rps:,.0f} | "
            f"{fmt(r.p50_ms)} | {fmt(r.p99_ms)} | {fmt(r.overhead_p50_ms, signed=True)} | "
            f"{fmt(r.overhead_p99_ms, signed=True)} | {fmt(r.gateway_cpu_us_per_request, 0)} | {err} |"
        )
    g = summary["gateway"]
    lines += [
        "",
        f"Gateway peak RSS (VmHWM): {g['peak_rss_mb']:.1f} MB (RSS at the end {g['rss_mb_at_end']:.1f} MB).",
        "",
    ]
    noisy = [r for r in results if (r.other_cpu_cores or 0) >= NOISY_CORES]
    if noisy:
        lines += [
            "Other processes on the machine used CPU during: "
            + "; ".join(f"{row_name(r)} ({r.other_cpu_cores:.2f} cores)" for r in noisy)
            + ". Those rows are noisier than the rest.",
            "",
        ]
    lines.append("Targets:")
    lines.append("")
    for t in targets:
        lines.append(f"- {'✅ met' if t['met'] else '❌ not met'}: {t['target']} — {t['value']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=int, default=8, help="whole seconds per measured scenario (default 8)")
    p.add_argument(
        "--warmup", type=int, default=2, help="whole seconds of warm-up before each scenario (default 2; 0: none)"
    )
    p.add_argument("--quick", action="store_true", help="2 s runs of a subset (50 connections only): a smoke test")
    p.add_argument(
        "--no-store",
        action="store_true",
        help="run the gateway without its store (store: {enabled: false}), to measure what the store costs",
    )
    p.add_argument(
        "--jitter-ms",
        type=int,
        default=0,
        help="each connection waits a random 0..N ms before each request (default 0: back to back). With a fixed "
        "upstream latency, back-to-back connections fall into step and arrive in waves; jitter spreads them out",
    )
    args = p.parse_args(argv)
    global JITTER_MS
    JITTER_MS = max(0, args.jitter_ms)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
