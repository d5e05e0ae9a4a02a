"""The command line as a user runs it: help, the demo, the fake upstream on its own."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import openai
import orjson
import pytest

from relaycast.config import load
from relaycast.server.runner import free_port


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relaycast", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("cmd", [(), ("serve",), ("demo",), ("fake-upstream",)])
def test_every_command_explains_itself(cmd: tuple[str, ...]) -> None:
    r = _run(*cmd, "--help")
    assert r.returncode == 0
    assert "usage: relaycast" in r.stdout


def test_demo_sends_n_requests_and_prints_a_json_summary(tmp_path) -> None:
    cfg = tmp_path / "demo.yaml"
    r = _run(
        "demo",
        "--requests",
        "60",
        "--json",
        "--port",
        str(free_port()),
        "--upstream-port",
        str(free_port()),
        "--write-config",
        str(cfg),
    )
    assert r.returncode == 0, r.stderr
    s = orjson.loads(r.stdout)
    assert s["requests"] == 60
    assert s["ok"] + sum(s["errors"].values()) == 60
    assert s["ok"] > 30
    assert sum(s["models"].values()) == 60
    assert s["streams"] > 0
    assert set(s["errors"]) <= {"rate_limit", "content_policy", "context_length", "upstream_5xx"}
    assert s["errors"], "the mix includes upstream errors, each reported by class"
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"]
    assert s["gateway"]["requests"] == 60
    # The config it ran was written, and is a valid config.
    written = load(cfg)
    assert {"fakeai", "flaky", "fakeanthropic"} <= set(written.providers)


def test_fake_upstream_runs_on_its_own_and_speaks_openai(tmp_path) -> None:
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, "-m", "relaycast", "fake-upstream", "--port", str(port), "--behaviour", "tokens=3"],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "fake upstream did not start"
                time.sleep(0.05)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any", max_retries=0)
        r = c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == "the quick brown"
        assert r.usage.completion_tokens == 3
    finally:
        p.terminate()
        p.wait(10)
