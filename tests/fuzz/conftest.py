"""The fuzz suite's gateway and its watch: a real `relaycast serve` on loopback over the healthy fake upstream, with
a key whose limits make every request go through admission (estimates, reservations), and a watch that records how
fast `/healthz` answers (from another process) and how much memory the gateway holds."""

from __future__ import annotations

import http.client
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess

FUZZ_KEY = "rc-fuzz-key-0123456789abcdef"
HEALTH_BOUND_MS = 100.0  # /healthz answers within this while the gateway is being fuzzed
# ... and within this while eight clients upload 4 MiB bodies at once. On two cores shared by the gateway, its
# store thread, these clients, the fake upstream parsing the same bodies and the poller, the gateway's loop waits
# for a core and the GIL as well as for its own work (seen: 60-120 ms). Before secret scrubbing became linear and
# large bodies took turns, the same burst measured 460-680 ms, which this still catches.
BURST_HEALTH_BOUND_MS = 250.0
# A body of megabytes is parsed in one call the loop cannot interrupt (orjson: 43 ms for 4 MiB of non-ASCII text on
# a slow 2-core VM, where the fake upstream parses it again at the same time): /healthz may wait for that step,
# shared with the other processes on the cores (seen: up to 2.7 times it), but never for more than this many times.
PARSE_FACTOR = 4.0
MODELS = ("fakeai/gpt-4o-mini", "claude/claude-3-5-haiku-latest", "fast", "gpt-4o-mini")
EMBEDDING_MODELS = ("fakeai/text-embedding-3-small", "embed")


def fuzz_config(fake_url: str) -> str:
    """Only healthy targets: any 5xx the fuzz sees comes from the gateway itself."""
    return f"""
admin_key: {ADMIN_KEY}
store: {{flush_interval_s: 0.05}}  # records are written (and scrubbed) soon after their answer, in the window
routing:
  circuit: {{failures: 1000}}
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [gpt-4o-mini, gpt-4o, text-embedding-3-small]
    timeouts: {{first_token: 10, total: 30}}
  - name: claude
    kind: anthropic
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [claude-3-5-haiku-latest]
    timeouts: {{first_token: 10, total: 30}}
models:
  - name: fast
    targets: [fakeai/gpt-4o-mini, claude/claude-3-5-haiku-latest]
  - name: embed
    targets: [fakeai/text-embedding-3-small]
keys:
  - name: fuzz
    secret: {FUZZ_KEY}
    rpm: 1000000
    tpm: 1000000000
    budget_day_usd: 1000000
limits:
  per_user: {{rpm: 1000000}}
  per_feature: {{rpm: 1000000}}
"""


@pytest.fixture(scope="package")
def fuzz_gateway(fake: Fake) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(fuzz_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield gw
    gw.stop()


def post(url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/v1/chat/completions") -> Answer:
    """POST raw bytes (invalid JSON or UTF-8 included) with the fuzz key; the whole answer read."""
    u = url.removeprefix("http://")
    host, port = u.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        h = {"Content-Type": "application/json", "Authorization": f"Bearer {FUZZ_KEY}", **(headers or {})}
        conn.request("POST", path, body=body, headers=h)
        r = conn.getresponse()
        return Answer(r.status, r.getheader("content-type") or "", r.read())
    finally:
        conn.close()


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes

    def error(self) -> dict[str, Any]:
        doc: dict[str, Any] = orjson.loads(self.body)
        return doc


def health_bound_ms(body: bytes) -> float:
    """HEALTH_BOUND_MS, or PARSE_FACTOR times what parsing `body` once costs here now (the median of three), if more:
    a body the gateway must parse whole holds its loop that long, whatever the gateway does."""
    spent = []
    for _ in range(3):
        t0 = time.perf_counter()
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        spent.append((time.perf_counter() - t0) * 1000)
    return max(HEALTH_BOUND_MS, PARSE_FACTOR * sorted(spent)[1])


def assert_acceptable(a: Answer, what: str) -> None:
    """No 5xx of the gateway's own; every 4xx (and the one 503 a request can ask for) in OpenAI's error format."""
    if a.status < 400:
        return
    assert a.content_type.startswith("application/json"), f"{what}: {a.status} {a.content_type} {a.body[:300]!r}"
    err = a.error()["error"]
    assert set(err) == {"message", "type", "param", "code"}, f"{what}: {err}"
    assert isinstance(err["message"], str) and isinstance(err["type"], str) and isinstance(err["code"], str), err
    assert err["param"] is None or isinstance(err["param"], str), err
    if a.status == 503:  # a request whose provider preferences exclude every target (docs/routing.md)
        assert err["code"] == "no_route" and "provider preferences" in err["message"], f"{what}: {err}"
        return
    assert a.status < 500, f"{what}: {a.status} {err}"


def records_written(gw: GatewayProcess) -> int:
    """How many records the gateway's store has written (GET /admin/store)."""
    with urllib.request.urlopen(
        urllib.request.Request(gw.url + "/admin/store", headers={"Authorization": f"Bearer {ADMIN_KEY}"}), timeout=10
    ) as r:
        n: int = orjson.loads(r.read())["store"]["written"]
        return n


def wait_written(gw: GatewayProcess, at_least: int, timeout_s: float = 20.0) -> None:
    """Until the store has written `at_least` records: the store encodes and scrubs a record after its answer, so
    a watch on /healthz covers that work only once it is done."""
    deadline = time.monotonic() + timeout_s
    while records_written(gw) < at_least:
        assert time.monotonic() < deadline, f"the store did not write {at_least} records in {timeout_s} s"
        time.sleep(0.02)


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


@dataclass
class Window:
    start: float
    end: float = 0.0
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    @property
    def worst_ms(self) -> float:
        return max((ms for _, ms, _ in self.samples), default=0.0)

    def assert_responsive(self, bound_ms: float = HEALTH_BOUND_MS) -> None:
        failed = [s for s in self.samples if s[2] != 200]
        assert not failed, f"/healthz failed {len(failed)} times: {failed[:5]}"
        assert len(self.samples) >= 1, "the poller recorded nothing"
        assert self.worst_ms < bound_ms, (
            f"/healthz took {self.worst_ms:.0f} ms at worst (bound {bound_ms:.0f} ms) over {len(self.samples)} polls"
        )


class HealthWatch:
    """A /healthz poller in its own process; `window()` gives the polls made while its block ran."""

    def __init__(self, url: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="relaycast-fuzz-")
        self._out = Path(self._dir.name) / "polls.txt"
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("poller.py")), url, str(self._out)],
            stdin=subprocess.PIPE,
        )

    def _polls(self) -> list[tuple[float, float, int]]:
        if not self._out.exists():
            return []
        out = []
        for line in self._out.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.append((float(parts[0]), float(parts[1]), int(parts[2])))
        return out

    @contextmanager
    def window(self) -> Iterator[Window]:
        w = Window(start=time.monotonic())
        yield w
        w.end = time.monotonic()
        # Every poll that started in the window has its line once one that started after it has.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            polls = self._polls()
            if polls and polls[-1][0] > w.end:
                break
            time.sleep(0.01)
        polls = self._polls()
        after = [p for p in polls if p[0] > w.end][:1]  # the state right after, and a sample for a short window
        w.samples = [p for p in polls if w.start <= p[0] <= w.end or p[0] < w.start < p[0] + p[1] / 1000] + after

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._dir.cleanup()


@pytest.fixture(scope="package")
def health(fuzz_gateway: GatewayProcess) -> Iterator[HealthWatch]:
    watch = HealthWatch(fuzz_gateway.url)
    yield watch
    watch.close()
