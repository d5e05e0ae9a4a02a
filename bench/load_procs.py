"""Processes for the benchmarks: starting and stopping servers on 127.0.0.1, pinning them to cores, and what a
process tree costs (CPU time by role, peak memory), read from /proc.

A target under test is the tree under the pid we launched: `relaycast serve` alone, or its supervisor with the
processes it starts (`python -m relaycast.server.host <role> ...`), or granian's main process with its workers.
`tree()` lists the tree with each process's role and counters; `TreeUsage.between()` turns two snapshots into CPU
seconds per role. A process that ended between the snapshots is counted through its parent's `cutime`/`cstime`
(the CPU of children it waited for), under the parent's role: its whole life is counted rather than lost.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # the only address the benchmarks ever talk to
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST_MODULE = "relaycast.server.host"  # `python -m relaycast.server.host <role> ...`: a process relaycast started


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def pinned(cmd: list[str], cpus: str | None) -> list[str]:
    """`cmd` under `taskset -c cpus` (which execs it, so the pid is the command's and its children inherit)."""
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


def can_pin() -> bool:
    return shutil.which("taskset") is not None


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


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {HOST}:{port} (exit code {proc.poll()})")


def _stat(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()  # the fields after "pid (comm) ": index i is field i + 3


def cpu_seconds(pid: int) -> float:
    rest = _stat(pid)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def system_busy_seconds() -> float:
    """user+nice+system time of the whole machine (all processes), from /proc/stat."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return (int(f[1]) + int(f[2]) + int(f[3])) / CLK_TCK


def cpu_list(spec: str) -> set[int]:
    """The cores of a `taskset -c` list: "0", "0-1", "0,2-3"."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def cores_busy_seconds(cores: set[int]) -> float:
    """user+nice+system time of these cores (all processes on them), from /proc/stat."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines()[1:]:
        f = line.split()
        if f and f[0].startswith("cpu") and f[0][3:].isdigit() and int(f[0][3:]) in cores:
            total += int(f[1]) + int(f[2]) + int(f[3])
    return total / CLK_TCK


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


# --- process trees --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    started: int  # start time in clock ticks since boot: tells a reused pid apart
    role: str
    cpu_s: float  # utime + stime
    reaped_s: float  # cutime + cstime: the CPU of children that ended and were waited for
    rss_mb: float
    hwm_mb: float


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _host_role(pid: int) -> str | None:
    """The role of a process relaycast started (`python -m relaycast.server.host <role>`), else None."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    marker = HOST_MODULE.encode()
    if marker in args:
        i = args.index(marker)
        return args[i + 1].decode() if i + 1 < len(args) and args[i + 1] else "host"
    return None


def tree(top: int) -> dict[tuple[int, int], Proc]:
    """The process `top` and its descendants, each with its role: a process relaycast started is the role named
    after `relaycast.server.host`; the top is "supervisor" when it has children, else "worker" (it serves alone);
    any other child is a "worker" (granian's) unless relaycast's host processes are present ("other")."""
    kids = descendants(top)
    host_roles = {pid: _host_role(pid) for pid in kids}
    relaycast_tree = any(host_roles.values())
    out: dict[tuple[int, int], Proc] = {}
    for pid in [top, *kids]:
        if pid == top:
            role = "supervisor" if kids else "worker"
        else:
            role = host_roles.get(pid) or ("other" if relaycast_tree else "worker")
        try:
            rest = _stat(pid)
            rss, hwm = memory_mb(pid)
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked
        cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK
        reaped = (int(rest[13]) + int(rest[14])) / CLK_TCK
        started = int(rest[19])
        out[(pid, started)] = Proc(pid, started, role, cpu, reaped, rss, hwm)
    return out


def tree_cpu_seconds(top: int) -> float:
    return sum(p.cpu_s + p.reaped_s for p in tree(top).values())


@dataclass
class TreeUsage:
    cpu_s: dict[str, float] = field(default_factory=dict)  # role -> CPU seconds between the two snapshots
    processes: dict[str, int] = field(default_factory=dict)  # role -> processes at the end
    hwm_mb: dict[str, float] = field(default_factory=dict)  # role -> the largest peak RSS among its processes
    rss_mb: dict[str, float] = field(default_factory=dict)  # role -> the largest RSS at the end

    @property
    def total_s(self) -> float:
        return sum(self.cpu_s.values())

    @classmethod
    def between(cls, before: dict[tuple[int, int], Proc], after: dict[tuple[int, int], Proc]) -> TreeUsage:
        u = cls()
        for key, p in after.items():
            b = before.get(key)
            spent = (p.cpu_s + p.reaped_s) - ((b.cpu_s + b.reaped_s) if b else 0.0)
            u.cpu_s[p.role] = u.cpu_s.get(p.role, 0.0) + max(0.0, spent)
            u.processes[p.role] = u.processes.get(p.role, 0) + 1
            u.hwm_mb[p.role] = max(u.hwm_mb.get(p.role, 0.0), p.hwm_mb)
            u.rss_mb[p.role] = max(u.rss_mb.get(p.role, 0.0), p.rss_mb)
        return u


def settle(top: int, quiet_s: float = 0.3, most_s: float = 10.0) -> float:
    """Wait until the tree under `top` is idle (at most one clock tick of CPU over `quiet_s`), so work left over
    from a run (telemetry still being written or sent) is counted in that run and not in the next one. Returns
    how long it took (`most_s` when it never went quiet)."""
    t0 = time.monotonic()
    last = tree_cpu_seconds(top)
    while time.monotonic() - t0 < most_s:
        time.sleep(quiet_s)
        now = tree_cpu_seconds(top)
        if now - last <= 1.0 / CLK_TCK:
            return time.monotonic() - t0
        last = now
    return most_s
