"""A Python tool's server (Phoenix, an MLflow tracking server, ...) as a subprocess on a free loopback port, for
tests that send to the real thing: started, waited on until it answers, stopped; its log shown when it fails."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest

from relaycast.server.runner import free_port

# Where tests/install-servers puts each tool's own virtual environment (their dependencies clash with the test
# extra's); RELAYCAST_TEST_SERVERS names another folder holding the same layout.
SERVERS = Path(os.environ.get("RELAYCAST_TEST_SERVERS") or Path(__file__).resolve().parent.parent / ".venv-servers")


def tool(venv: str, name: str) -> str:
    """A console script (or `python`) of a tool's own virtual environment; when it is not there, the test is
    skipped, saying how to install it (or fails: `missing`)."""
    path = SERVERS / venv / "bin" / name
    if not path.exists():
        missing(f"{venv} is not installed: run tests/install-servers ({path} is missing)")
    return str(path)


def npm_file(package: str, name: str) -> Path:
    """A file of an npm package tests/install-servers put in .venv-servers/npm (e.g. axe-core's `axe.min.js`, which
    browser tests inject into the page); when it is not there, the test is skipped (or fails: `missing`)."""
    path = SERVERS / "npm" / "node_modules" / package / name
    if not path.is_file():
        missing(f"npm package {package} is not installed: run tests/install-servers ({path} is missing)")
    return path


def missing(why: str) -> None:
    """A test's real server is not on this machine: skipped, saying why; a failure where the run must have every
    server (RELAYCAST_REQUIRE_SERVERS=1: CI), so a broken install never passes as a skip."""
    if os.environ.get("RELAYCAST_REQUIRE_SERVERS") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


class ToolServer:
    """`argv` run with `env` added to this process's; `ready_path` is polled on `url` until it answers 2xx.
    `{port}` in `argv` or in `env` values stands for the free port chosen for it."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None, ready_path: str = "/") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.TemporaryDirectory(prefix="relaycast-tool-")
        self.workdir = Path(self.dir.name)
        self.log_path = self.workdir / "server.log"
        self.ready_path = ready_path
        self.started_s: float | None = None  # how long it took to answer
        sub = {"port": str(self.port), "dir": self.dir.name}
        self._argv = [a.format(**sub) for a in argv]
        self._env = {**os.environ, **{k: v.format(**sub) for k, v in (env or {}).items()}}
        self._log = open(self.log_path, "wb")  # closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ToolServer:
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self._argv, stdout=self._log, stderr=subprocess.STDOUT, env=self._env, cwd=self.dir.name
        )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self._argv[0]} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as r:
                    if 200 <= r.status < 300:
                        self.started_s = time.monotonic() - t0
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self._argv[0]} did not answer within {timeout:g}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        self.dir.cleanup()
