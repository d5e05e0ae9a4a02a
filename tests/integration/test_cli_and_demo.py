"""The command line as a user runs it: help, the demo, the fake upstream on its own."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import openai
import orjson
import pytest

from relaycast.config import load
from relaycast.server.runner import free_port
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, standard_config


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
    # Faults go by header, which its providers forward: every model name it sent, stored and priced is a real one.
    assert all(p.forward_headers == ("x-fake-behaviour",) for p in written.providers.values())
    assert not [m for m in s["models"] if "@" in m]
    assert not [m for m in (s["cost"] or {}).get("by_model", {}) if "@" in m]
    with sqlite3.connect(tmp_path / "demo.db") as db:
        names = {n for (n,) in db.execute("SELECT model_requested FROM requests UNION SELECT model FROM requests")}
        names |= {n for (n,) in db.execute("SELECT target FROM attempts UNION SELECT value FROM usage_hourly")}
    assert {"fast", "gpt-4o", "fakeai/gpt-4o"} <= names
    assert not [n for n in names if "@" in n], names
    assert not [t for t in s["gateway"]["targets"] if "@" in t]


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


# --- the gateway's address: $RELAYCAST_URL ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd",
    [("keys", "list"), ("keys", "create"), ("keys", "revoke"), ("monitors", "status"), ("broadcast", "status")]
    + [("routes", "status")],
)
def test_commands_that_talk_to_a_gateway_name_their_default_address(cmd: tuple[str, ...]) -> None:
    r = _run(*cmd, "--help")
    assert r.returncode == 0
    assert "default: $RELAYCAST_URL, else http://127.0.0.1:8080" in " ".join(r.stdout.split())


def test_relaycast_url_is_the_address_when_no_url_is_given(fake: Fake, tmp_path) -> None:
    gw = GatewayProcess(
        standard_config(fake.url, f"store: {{path: {tmp_path / 'store.db'}}}"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    ).wait_ready()
    env = {**os.environ, "RELAYCAST_URL": gw.url, "RELAYCAST_ADMIN_KEY": ADMIN_KEY}
    try:
        made = _run_env(env, "keys", "create", "ci-bot", "--rpm", "5")
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith("rk-"), made.stdout  # the secret, shown once
        listed = _run_env(env, "keys", "list")
        assert listed.returncode == 0, listed.stderr
        assert "ci-bot" in listed.stdout
        for cmd in (("monitors", "status"), ("broadcast", "status"), ("routes", "status")):
            r = _run_env(env, *cmd)
            assert r.returncode == 0, (cmd, r.stderr)
        # --url still wins over the variable.
        elsewhere = f"http://127.0.0.1:{free_port()}"
        r = _run_env(env, "keys", "list", "--url", elsewhere)
        assert r.returncode == 1
        assert f"cannot reach the gateway at {elsewhere}" in r.stderr
    finally:
        gw.stop()
    # Without the variable, and nothing on the address it names, the error says which address it tried.
    gone = _run_env({**env, "RELAYCAST_URL": elsewhere}, "monitors", "status")
    assert gone.returncode == 1
    assert elsewhere in gone.stderr


def _run_env(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaycast", *args], capture_output=True, text=True, timeout=60, env=env
    )


# --- the demo's ports and Ctrl-C ----------------------------------------------------------------------------------


def _demo_ports(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    r = _run("demo", "--requests", "20", "--json", *args)
    assert r.returncode == 0, r.stderr
    m = re.search(r"relaycast gateway on http://127.0.0.1:(\d+)/v1", r.stderr)
    assert m, r.stderr
    return r, int(m.group(1))


def test_a_demo_run_right_after_another_keeps_its_port() -> None:
    port, upstream = free_port(), free_port()
    first, got = _demo_ports("--port", str(port), "--upstream-port", str(upstream))
    assert got == port
    # The first demo's connections are in TIME_WAIT on that port now: the second binds it all the same.
    second, got = _demo_ports("--port", str(port), "--upstream-port", str(upstream))
    assert got == port, second.stderr
    assert "instead" not in second.stderr
    assert f"fake upstream on http://127.0.0.1:{upstream}/v1" in second.stderr


def test_a_demo_whose_port_is_taken_says_where_it_went() -> None:
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r, got = _demo_ports("--port", str(port), "--upstream-port", "0")
    assert got != port
    assert f"port {port} is not free (something listens there already): the gateway is on port {got} instead" in (
        r.stderr
    )
    assert orjson.loads(r.stdout)["requests"] == 20  # and the demo ran there


@pytest.mark.parametrize(
    ("requests", "wait_for", "status", "said"),
    [
        ((), "Press Ctrl-C to stop.", 0, "relaycast demo: stopping"),  # the way to stop a serving demo
        (("--requests", "1000000"), "relaycast gateway on", 130, "relaycast demo: interrupted"),  # mid-load
    ],
)
def test_ctrl_c_stops_the_demo_quietly(requests: tuple[str, ...], wait_for: str, status: int, said: str) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "relaycast", "demo", "--port", "0", "--upstream-port", "0", *requests],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so that SIGINT reaches it and its fake upstream, as Ctrl-C does
    )
    try:
        assert p.stdout is not None
        seen = []
        for line in p.stdout:
            seen.append(line)
            if wait_for in line:
                break
        assert any(wait_for in s for s in seen), "".join(seen)
        time.sleep(0.5)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == status, err
    assert "Traceback" not in err
    assert said in err
    # What the gateway drained, flushed and spooled as it stopped.
    stopped = re.search(r"relaycast demo: gateway stopped: in_flight=(\d+) drained=(\d+) cut=0 .*store=", err)
    assert stopped and stopped.group(1) == stopped.group(2), err
