"""Shared test harness: a fake upstream on loopback (in-process) and `relaycast serve` as a real subprocess."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from relaycast.fake.server import FakeUpstream
from relaycast.server.runner import ThreadedServer, free_port

UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
ADMIN_KEY = "admin-key-for-tests-01"


class Fake:
    """The fake upstream, plus its request log."""

    def __init__(self, server: ThreadedServer) -> None:
        self.server = server
        self.url = server.url + "/v1"

    def requests(self) -> list[dict]:
        with urllib.request.urlopen(self.server.url + "/_fake/requests") as r:
            return orjson.loads(r.read())

    def last_body(self) -> dict:
        return self.requests()[-1]["body"]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.server.url + "/_fake/stats") as r:
            return orjson.loads(r.read())

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(self.server.url + "/_fake/reset", data=b"", method="POST")
        ).close()


@pytest.fixture(scope="session")
def fake() -> Iterator[Fake]:
    server = ThreadedServer(FakeUpstream(api_key=UPSTREAM_KEY)).start()
    yield Fake(server)
    server.stop()


class GatewayProcess:
    """`relaycast serve --config FILE` in a subprocess on a free loopback port; its log kept in a file."""

    def __init__(self, config_text: str, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="relaycast-test-")
        self.config_path = Path(self.dir.name) / "relaycast.yaml"
        self.config_path.write_text(config_text)
        self.log_path = Path(self.dir.name) / "gateway.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relaycast",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                str(self.port),
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    def wait_ready(self, timeout: float = 20.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"gateway did not start: {self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int:
        """The serving process (the one worker): where requests are handled and their memory is held. `proc` is
        the supervisor, which handles none."""
        workers = [p for p, role in host_children(self.proc.pid).items() if role == "worker"]
        assert len(workers) == 1, f"expected one worker, found {workers}"
        return workers[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
        self.dir.cleanup()


def host_children(pid: int) -> dict[int, str]:
    """The children of a `relaycast serve` supervisor, by pid: their role (`telemetry` or `worker`)."""
    out: dict[int, str] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except FileNotFoundError:
                continue
            if b"relaycast.server.host" in argv:
                out[int(child)] = argv[argv.index(b"relaycast.server.host") + 1].decode()
    return out


def exact_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    source: str | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], bytes]:
    """One request exactly as given, on a connection of its own (from `source` when given): http.client adds no
    Content-Type and keeps a Host header we pass. The status, the headers by lower-case name, and the body."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# A provider whose every answer is a 503, and an alias that tries it before fakeai: its circuit opens after
# `routing.circuit.failures` requests. The end of a config's `providers:` list and its `models:`, a `str.format`
# template (`fake`: the fake upstream's URL, `upstream`: its key).
GUARDED_ALIAS = """  - name: bad
    kind: openai_compatible
    base_url: '{fake}'
    api_key: '{upstream}'
    headers: {{x-fake-behaviour: "error=503"}}
models:
  - {{name: guarded, targets: [bad/gpt-4o-mini, fakeai/gpt-4o-mini]}}
"""


def standard_config(fake_url: str, extra: str = "") -> str:
    # Circuits would open on the deliberately failing targets and make tests depend on their order.
    return f"""
admin_key: {ADMIN_KEY}
routing:
  circuit: {{failures: 1000}}
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [gpt-4o-mini, gpt-4o, text-embedding-3-small]
    timeouts: {{idle: 1.5, first_token: 3, total: 20}}
  - name: badkey
    kind: openai_compatible
    base_url: {fake_url}
    api_key: sk-wrong-key-for-tests-999999
  - name: claude
    kind: anthropic
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [claude-3-5-haiku-latest]
  - name: down
    kind: openai_compatible
    base_url: http://127.0.0.1:{free_port()}/v1
    timeouts: {{connect: 1}}
models:
  - name: fast
    targets: [fakeai/gpt-4o-mini@error=503, fakeai/gpt-4o-mini]
  - name: resilient
    targets: [down/gpt-4o-mini, fakeai/gpt-4o-mini@error=429;retry_after=3, fakeai/gpt-4o]
  - name: all-down
    targets: [fakeai/gpt-4o-mini@error=500, fakeai/gpt-4o@error=503]
  - name: embed-anywhere
    targets: [claude/claude-3-5-haiku-latest, fakeai/text-embedding-3-small]
  - name: refusing
    targets: [fakeai/gpt-4o@content_policy, fakeai/gpt-4o-mini]
{extra}
"""


@pytest.fixture(scope="session")
def gateway(fake: Fake) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(standard_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium, one per test module (tests/browser.py)."""
    from tests.browser import launch

    yield from launch()


@pytest.fixture(scope="module")
def agent() -> Iterator[Any]:
    """Datadog's ddapm-test-agent, one per test module (tests/ddagent.py)."""
    from tests.ddagent import DatadogTestAgent

    a = DatadogTestAgent()
    yield a
    a.stop()
