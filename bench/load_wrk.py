"""wrk for the benchmarks: the Lua scripts, one run, its parsed result, and a one-request check before the load.

The measured script reports through a Lua `done()` hook (latency percentiles exact to the microsecond). A script's
placeholders: `__BODY__`, `__ACCEPT__` and `__DELAY__` (bench/limits.py fills them itself).
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load_procs import HOST, pinned

TOKENS = 20  # output tokens of every answer: a stream is 22 chunks (role, 20 tokens, finish) and [DONE]
CONTENT_TYPE_LINE = 'wrk.headers["Content-Type"] = "application/json"'

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

# Used only when a run had non-2xx responses: a short extra run that tallies status codes and keeps one body per
# status, so the report can say exactly what the error was. (A `response` hook slows wrk, so it is not used for
# the measured runs.)
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


@dataclass(frozen=True)
class Scenario:
    path: str  # the target: "direct" and "forwarder" take the upstream's model names, "relaycast..." its own
    stream: bool
    latency_ms: int
    conns: int

    @property
    def label(self) -> str:
        mode = "stream" if self.stream else "non-stream"
        return f"{self.path:9} {mode:10} upstream {self.latency_ms:>2} ms  {self.conns:>2} conns"


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
    return f"fake/{name}" if sc.path.startswith("relaycast") else name


def check_once(url: str, sc: Scenario, headers: dict[str, str] | None = None) -> str | None:
    """One request before the load: is the answer well formed (and, for a stream, complete)? None when it is."""
    req = urllib.request.Request(
        url,
        data=body(model_for(sc), sc.stream).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
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


def write_lua(
    tmp: Path,
    sc: Scenario,
    template: str,
    suffix: str,
    headers: dict[str, str] | None = None,
    jitter_ms: int = 0,
) -> Path:
    """The script for `sc`; `headers` are sent with every request; `jitter_ms` makes each connection pause a random
    0..N ms before each request."""
    accept = '"text/event-stream"' if sc.stream else '"application/json"'
    delay = f"delay = function() return math.random(0, {jitter_ms}) end" if jitter_ms else ""
    lua = template.replace("__BODY__", body(model_for(sc), sc.stream)).replace("__ACCEPT__", accept)
    lua = lua.replace("__DELAY__", delay)
    if headers:
        extra = "".join(f"\nwrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        lua = lua.replace(CONTENT_TYPE_LINE, CONTENT_TYPE_LINE + extra)
    p = tmp / f"{sc.path}-{'s' if sc.stream else 'n'}-{sc.latency_ms}-{sc.conns}{suffix}.lua"
    p.write_text(lua)
    return p


def run_wrk(url: str, script: Path, conns: int, seconds: float, cpus: str | None = None) -> str:
    """One wrk run (one thread), under `taskset -c cpus` when given; its stdout."""
    assert url.startswith(f"http://{HOST}:"), url
    seconds = max(1, round(seconds))  # wrk takes whole seconds only
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s", "-s", str(script), url]
    proc = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, timeout=seconds + 60)
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


def diagnose(
    url: str,
    tmp: Path,
    sc: Scenario,
    seconds: float,
    headers: dict[str, str] | None = None,
    cpus: str | None = None,
) -> dict[str, Any]:
    """A short extra run that tallies the status codes and keeps one body of each."""
    out = run_wrk(url, write_lua(tmp, sc, LUA_DIAG, "-diag", headers), sc.conns, seconds, cpus)
    counts = {int(k): int(v) for k, v in re.findall(r"^BENCH_STATUS (\d+) (\d+)$", out, re.M)}
    samples = {int(k): v for k, v in re.findall(r"^BENCH_SAMPLE (\d+) (.*)$", out, re.M)}
    return {"status_counts": counts, "samples": samples}
