"""`relaycast serve` on one host: a supervisor, one telemetry process and N workers serving one port.

    supervisor (this module's `serve`)   binds the port, starts and restarts the others, stops them in order
      telemetry  (`python -m relaycast.server.host telemetry`)   store, broadcast, metrics, monitors
      state      (`python -m relaycast.server.host state`)       with N > 1: limits, health, logouts, responses
      worker x N (`python -m relaycast.server.host worker`)      the gateway: requests, routing, providers

The workers share the listening socket the supervisor opened (the kernel spreads connections over them) and hand
every finished record to the telemetry process over a Unix socket in a private directory
(`relaycast.telemetry.channel`); with several workers, they ask the state process what they share
(`relaycast.server.state_process`) over another. The telemetry process runs on the CPU the workers leave; the
state process, which requests wait for, at their priority.

A child that dies is started again (after 0.1 s, doubling to 5 s while it keeps dying within 10 s of its start);
a child that dies that way five times in a row, or finds the config invalid (children read it again when they
start: exit status 2), stops the host.

On SIGTERM or SIGINT the supervisor closes the port (new connections are refused at once), stops the workers
(each finishes its requests for up to 30 s, then hands over its last records), then the telemetry process (which
flushes its queues and spools what it could not send) and the state process (which writes the stored responses
it holds), and exits 0. If the supervisor itself is killed, its children get SIGTERM from the kernel (Linux).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from relaycast.config import Config

TELEMETRY, STATE, WORKER = "telemetry", "state", "worker"
SESSION_SECRET_ENV = "RELAYCAST_HOST_SESSION_SECRET"  # the supervisor's to its workers: the dashboard's sessions
POLL_S = 0.2
RESTART_BASE_S = 0.1
RESTART_CAP_S = 5.0
QUICK_DEATH_S = 10.0  # a child that dies this soon after its start is failing, not crashing now and then
MAX_QUICK_DEATHS = 5
# Past its drain and flush deadlines (`server.drain_timeout`, `server.flush_timeout`), a child is given this long
# more to exit before it is killed: its connections' close (2 s at most) and the rest of its stop.
STOP_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class Link:
    """How a worker reaches its host's telemetry process, and its state process (with several workers)."""

    socket: str
    worker: int
    workers: int
    state: str | None = None


def worker_count(value: str) -> int:
    """`--workers`: a positive number, or `auto` for the cores this process may use: the CPUs it may run on,
    within its cgroup's CPU quota (a container's CPU limit) when it has one."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        quota = cgroup_cpus()
        return max(1, min(cores, quota) if quota else cores)
    n = int(value)
    if n < 1:
        raise ValueError("--workers must be at least 1")
    return n


def cgroup_cpus(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """The cgroup v2 CPU quota in whole CPUs, rounded up (`200000 100000` is 2); None without one."""
    try:
        with open(path) as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


class _Child:
    def __init__(
        self, role: str, number: int, argv: list[str], pass_fds: tuple[int, ...], env: dict[str, str] | None = None
    ) -> None:
        self.role = role
        self.number = number
        self.argv = argv
        self.pass_fds = pass_fds
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at = 0.0

    @property
    def name(self) -> str:
        return f"{self.role}-{self.number}" if self.role == WORKER else self.role

    def start(self) -> None:
        # Its own process group: a Ctrl-C in the terminal reaches the supervisor alone, which stops the rest in order.
        self.proc = subprocess.Popen(
            self.argv, pass_fds=self.pass_fds, env=self.env, preexec_fn=_die_with_parent, process_group=0
        )
        self.started = time.monotonic()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies (Linux), so no worker outlives it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(cfg: Config, config_path: str, workers: int, log_level: str) -> int:
    """Run the host until SIGTERM or SIGINT. `cfg` has the address to listen on (server.host, server.port)."""
    host, port = cfg.server.host, cfg.server.port
    try:
        listener = _listen(host, port)
    except OSError as e:
        print(f"relaycast: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    port = listener.getsockname()[1]
    rundir = tempfile.mkdtemp(prefix="relaycast-")  # owner-only (0700): the socket inside is the host's alone
    sock_path = os.path.join(rundir, "telemetry.sock")
    base = [sys.executable, "-m", "relaycast.server.host"]
    common = ["--config", config_path, "--host", host, "--port", str(port), "--log-level", log_level]
    common += ["--socket", sock_path, "--workers", str(workers)]
    if workers > 1:
        common += ["--state-socket", os.path.join(rundir, "state.sock")]
    children = [_Child(TELEMETRY, 0, [*base, TELEMETRY, *common], ())]
    if workers > 1:
        children.append(_Child(STATE, 0, [*base, STATE, *common], ()))
    fd = listener.fileno()
    # One secret for the dashboard's sessions, unless the config sets one: a login holds on every worker (and on a
    # worker started again), for as long as the host runs. In the environment, not on the command line.
    env = {**os.environ, SESSION_SECRET_ENV: secrets.token_hex(32)}
    for i in range(workers):
        argv = [*base, WORKER, *common, "--fd", str(fd), "--worker", str(i)]
        children.append(_Child(WORKER, i, argv, (fd,), env))

    stopping: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stopping.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    print(
        f"relaycast: serving on http://{host}:{port}/v1 (config {config_path}; {workers} worker"
        f"{'s, a state process' if workers > 1 else ''} and a telemetry process)",
        file=sys.stderr,
        flush=True,
    )
    code = 0
    try:
        for c in children:
            c.start()
        while not stopping:
            time.sleep(POLL_S)
            if stopping:
                break
            failed = _supervise(children)
            if failed is not None:
                if failed.exited() == 2:
                    print(f"relaycast: {failed.name} found the config invalid; stopping", file=sys.stderr, flush=True)
                    code = 2
                else:
                    print(f"relaycast: {failed.name} keeps failing at start; stopping", file=sys.stderr, flush=True)
                    code = 1
                break
    finally:
        listener.close()  # the workers' copies close as they stop: new connections are refused, not queued
        # the workers drain their requests and hand their last records over, then the telemetry process flushes
        drain, flush = cfg.server.drain_timeout, cfg.server.flush_timeout
        _stop([c for c in children if c.role == WORKER], drain + flush + STOP_GRACE_S)
        _stop([c for c in children if c.role != WORKER], flush + 2 * STOP_GRACE_S)
        shutil.rmtree(rundir, ignore_errors=True)
        for s, h in old.items():
            signal.signal(s, h)
    return code


def _supervise(children: list[_Child]) -> _Child | None:
    """Start again what died; the child that keeps failing at start, if one does."""
    now = time.monotonic()
    for c in children:
        rc = c.exited()
        if rc is None:
            continue
        if rc == 2:  # an invalid config: starting it again cannot help
            return c
        if c.restart_at == 0.0:
            quick = now - c.started < QUICK_DEATH_S
            c.quick_deaths = c.quick_deaths + 1 if quick else 0
            if c.quick_deaths >= MAX_QUICK_DEATHS:
                return c
            delay = min(RESTART_CAP_S, RESTART_BASE_S * 2**c.quick_deaths)
            c.restart_at = now + delay
            print(f"relaycast: {c.name} exited ({rc}); starting it again in {delay:g} s", file=sys.stderr, flush=True)
        elif now >= c.restart_at:
            c.restart_at = 0.0
            c.start()
    return None


def _stop(children: list[_Child], timeout_s: float) -> None:
    running = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- the children --------------------------------------------------------------------------


def _child_config(args: argparse.Namespace) -> Config:
    """The config, as the supervisor's command line placed it (and its dashboard session secret, when the config
    sets none); an invalid one ends the process with status 2."""
    from relaycast import config as config_mod

    cfg = config_mod.load_or_say(args.config)
    if cfg is None:
        sys.exit(2)
    host_secret = os.environ.pop(SESSION_SECRET_ENV, None)
    return dataclasses.replace(
        cfg,
        server=dataclasses.replace(cfg.server, host=args.host, port=args.port),
        dashboard_secret=cfg.dashboard_secret or host_secret,
    )


def _worker(args: argparse.Namespace) -> int:
    from relaycast.log import configure
    from relaycast.server.app import Gateway
    from relaycast.server.guards import ConnectionGuard
    from relaycast.server.runner import DrainingServer, tune_gc, uvicorn_config

    cfg = _child_config(args)
    configure(args.log_level)
    tune_gc()
    guard = ConnectionGuard(cfg.server)
    link = Link(args.socket, args.worker, args.workers, args.state_socket)
    app = Gateway(cfg, connections=guard.counts, link=link)
    server = DrainingServer(uvicorn_config(app, args.host, args.port, log_level="warning", guard=guard))
    server.run(sockets=[socket.socket(fileno=args.fd)])
    return 0 if server.started else 1


def _telemetry(args: argparse.Namespace) -> int:
    import uvloop

    from relaycast.log import configure
    from relaycast.server.telemetry_process import run

    cfg = _child_config(args)
    configure(args.log_level)
    keeps_responses = args.state_socket is None  # else the state process keeps them
    return uvloop.run(run(cfg, args.socket, keeps_responses, drain_s=cfg.server.drain_timeout + STOP_GRACE_S))


def _state(args: argparse.Namespace) -> int:
    import uvloop

    from relaycast.log import configure
    from relaycast.server.state_process import run

    cfg = _child_config(args)
    configure(args.log_level)
    shared_limits = not (cfg.limits is not None and cfg.limits.redis_url)
    drain_s = cfg.server.drain_timeout + STOP_GRACE_S
    return uvloop.run(run(cfg, args.state_socket, args.socket, shared_limits, drain_s=drain_s))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m relaycast.server.host")
    p.add_argument("role", choices=[TELEMETRY, STATE, WORKER])
    p.add_argument("--config", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--state-socket")
    p.add_argument("--log-level", default="info")
    p.add_argument("--fd", type=int)
    p.add_argument("--worker", type=int, default=0)
    args = p.parse_args(argv)
    return {WORKER: _worker, TELEMETRY: _telemetry, STATE: _state}[args.role](args)


if __name__ == "__main__":
    sys.exit(main())
