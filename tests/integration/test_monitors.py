"""Monitors end to end, with an injected clock and real requests through the gateway (the `openai` SDK against a
gateway whose fake upstream is on loopback): hours of steady traffic then a spike, an SLA breach (the fake upstream
made slow) and an error-rate breach (the fake upstream answering 503). Each must produce exactly one alert at a
webhook receiver on loopback, and exactly one resolution when traffic is back to normal."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import openai
import pytest

from relaycast import config as config_mod
from relaycast.fake.behaviour import Behaviour
from relaycast.fake.server import FakeUpstream
from relaycast.server.app import Gateway
from relaycast.server.runner import ThreadedServer
from relaycast.telemetry.exporters.webhook import verify_signature
from tests.capture import CaptureServer
from tests.conftest import ADMIN_KEY

START = 1_790_000_000.0  # a fixed wall-clock start (2026-09-21), far from the real clock
HOOK_SECRET = "hook-secret-for-monitor-tests"


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.t

    def set(self, t: float) -> None:
        with self._lock:
            self.t = t


CONFIG = """
admin_key: {admin}
store: {{path: store.db}}
# The breaker would otherwise stop the 503s before the monitor sees them; no probes of demoted targets (5% of
# requests by default would try one first), so a demotion's routing is certain.
routing: {{circuit: {{failures: 1000}}, probe_share: 0}}
providers:
  - {{name: fakeai, kind: openai_compatible, base_url: '{fake}', api_key: k, models: [gpt-4o-mini, gpt-4o]}}
  - {{name: primary, kind: openai_compatible, base_url: '{slowfake}', api_key: k, timeouts: {{total: 30}}}}
  - {{name: flaky, kind: openai_compatible, base_url: '{fake}', api_key: k}}
models:
  - {{name: slowable, targets: [primary/gpt-4o-mini, fakeai/gpt-4o-mini]}}
monitors:
  interval_s: 3600
  notify:
    - {{name: hook, kind: webhook, url: '{hook}/hook', secret: {secret}}}
    - {{name: slack, kind: slack, url: '{hook}/slack/T000/B000/XXXXXXXX'}}
  rules:
    - {{name: spend-spike, kind: spend_spike, window: 1h, baseline_windows: 6, threshold_pct: 200, min_usd: 0.01}}
    - {{name: slowable-p99, kind: latency_sla, route: slowable, metric: p99, threshold_ms: 250, window: 5m, min_requests: 5}}
    - {{name: flaky-errors, kind: error_rate, provider: flaky, threshold_pct: 20, window: 5m, min_requests: 5}}
    - {{name: bob-daily, kind: budget, user: bob, period: day, limit_usd: 0.003}}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict]:
    tmp: Path = tmp_path_factory.mktemp("monitors")
    fake = ThreadedServer(FakeUpstream(api_key="k")).start()
    slow_upstream = FakeUpstream(api_key="k")
    slowfake = ThreadedServer(slow_upstream).start()
    hook = CaptureServer().start()
    text = CONFIG.format(
        admin=ADMIN_KEY, fake=fake.url + "/v1", slowfake=slowfake.url + "/v1", hook=hook.url, secret=HOOK_SECRET
    )
    cfg = config_mod.parse(text, env={}, source=str(tmp / "relaycast.yaml"))
    clock = Clock(START)
    gw = ThreadedServer(Gateway(cfg, clock=clock)).start()
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    ANSWERED[gw.url] = [0]  # responses the tests have seen: the gateway emits each record just after its response
    yield {"gw": gw, "client": client, "clock": clock, "hook": hook, "slow": slow_upstream}
    gw.stop()
    hook.stop()
    fake.stop()
    slowfake.stop()


ANSWERED: dict[str, list[int]] = {}


def _evaluate(gw: ThreadedServer) -> list[dict]:
    """Evaluate the monitors once every answered request's record has reached the gateway's sinks."""
    deadline = time.monotonic() + 5
    while True:
        with urllib.request.urlopen(
            urllib.request.Request(gw.url + "/admin/stats", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        ) as r:
            if json.loads(r.read())["requests"] >= ANSWERED[gw.url][0]:
                break
        assert time.monotonic() < deadline, "records did not arrive"
        time.sleep(0.01)
    req = urllib.request.Request(
        gw.url + "/admin/monitors/evaluate", data=b"", method="POST", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())["notifications"]


def _events(hook: CaptureServer, rule: str, path: str = "/hook") -> list[dict]:
    return [json.loads(p.body) for p in hook.posts(path) if json.loads(p.body).get("rule") == rule]


def _answered(client: openai.OpenAI) -> None:
    ANSWERED[str(client.base_url).removesuffix("/v1/").removesuffix("/v1")][0] += 1


def _send(client: openai.OpenAI, n: int, model: str, user: str = "alice", feature: str = "chat") -> None:
    for _ in range(n):
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], user=user, extra_headers={"X-Title": feature}
        )
        _answered(client)


def _fail(client: openai.OpenAI, n: int, model: str) -> None:
    for _ in range(n):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        _answered(client)


NORMAL = "fakeai/gpt-4o-mini@prompt_tokens=1000,tokens=100"  # $0.00021 a request
HEAVY = "fakeai/gpt-4o@prompt_tokens=5000,tokens=100"  # $0.0135 a request


def test_spend_spike_alerts_once_names_the_top_contributor_and_resolves_once(env):
    gw, client, clock, hook = env["gw"], env["client"], env["clock"], env["hook"]
    # Six hours of steady traffic: about $0.0013 an hour, from two users.
    for h in range(6):
        clock.set(START + h * 3600 + 60)
        _send(client, 3, NORMAL, "alice")
        _send(client, 3, NORMAL, "bob")
        clock.set(START + h * 3600 + 3500)
        fired = [e for e in _evaluate(gw) if e["rule"] == "spend-spike"]
        assert not fired, fired
    # An hour that triples spend but stays under the $0.01 floor: not an incident.
    clock.set(START + 6 * 3600 + 60)
    _send(client, 18, NORMAL, "alice")
    clock.set(START + 6 * 3600 + 3500)
    assert not [e for e in _evaluate(gw) if e["rule"] == "spend-spike"]
    # A runaway agent: one user and feature multiply spend by 100.
    clock.set(START + 7 * 3600 + 60)
    _send(client, 3, NORMAL, "alice")
    _send(client, 12, HEAVY, "mallory", feature="runaway-agent")
    clock.set(START + 7 * 3600 + 600)
    fired = [e for e in _evaluate(gw) if e["rule"] == "spend-spike"]
    assert len(fired) == 1 and fired[0]["event"] == "alert"
    assert not [e for e in _evaluate(gw) if e["rule"] == "spend-spike"]  # still firing: no second notification
    hook.wait_for(lambda: len(_events(hook, "spend-spike")) == 1)
    alert = _events(hook, "spend-spike")[0]
    assert alert["event"] == "alert" and alert["state"] == "ALERT" and alert["value"] > 0.15
    top = alert["details"]["top_contributors"][0]
    assert (top["dimension"], top["value"]) in {("user", "mallory"), ("feature", "runaway-agent"), ("model", "gpt-4o")}
    assert {(c["dimension"], c["value"]) for c in alert["details"]["top_contributors"]} >= {
        ("user", "mallory"),
        ("feature", "runaway-agent"),
    }
    assert "mallory" in alert["message"] or "runaway-agent" in alert["message"] or "gpt-4o" in alert["message"]
    post = hook.posts("/hook")[0]
    assert verify_signature(
        HOOK_SECRET, post.headers["x-relaycast-timestamp"], post.body, post.headers["x-relaycast-signature"]
    )
    # Back to normal: one resolution.
    clock.set(START + 9 * 3600 + 60)
    _send(client, 6, NORMAL, "alice")
    clock.set(START + 9 * 3600 + 3000)
    resolved = [e for e in _evaluate(gw) if e["rule"] == "spend-spike"]
    assert [e["event"] for e in resolved] == ["resolved"] and resolved[0]["incident_id"] == alert["incident_id"]
    assert not [e for e in _evaluate(gw) if e["rule"] == "spend-spike"]
    hook.wait_for(lambda: len(_events(hook, "spend-spike")) == 2)
    assert [e["event"] for e in _events(hook, "spend-spike")] == ["alert", "resolved"]

    def slack() -> list[dict]:  # each notifier posts on its own: the webhook's arriving says nothing of Slack's
        return [json.loads(p.body) for p in hook.posts() if p.path.startswith("/slack")]

    hook.wait_for(lambda: any("spend-spike" in s["text"] and "RESOLVED" in s["text"] for s in slack()))
    assert any("spend-spike" in s["text"] and "ALERT" in s["text"] for s in slack())


def test_sla_breach_alerts_demotes_the_target_and_resolves(env):
    gw, client, clock, hook, slow = env["gw"], env["client"], env["clock"], env["hook"], env["slow"]
    base = START + 20 * 3600
    clock.set(base)
    _send(client, 8, "slowable")
    assert not [e for e in _evaluate(gw) if e["rule"] == "slowable-p99"]
    # The primary upstream gets slow: p99 over the 250 ms SLA.
    slow.state.defaults = replace(Behaviour(), latency_ms=400)
    clock.set(base + 600)
    _send(client, 6, "slowable")
    fired = [e for e in _evaluate(gw) if e["rule"] == "slowable-p99"]
    assert len(fired) == 1 and fired[0]["scope"] == "target=primary/gpt-4o-mini" and fired[0]["value"] > 250
    # The router agrees: the alerting target is demoted, so the route's next request goes to the other one.
    raw = client.chat.completions.with_raw_response.create(
        model="slowable", messages=[{"role": "user", "content": "hi"}]
    )
    _answered(client)
    assert raw.headers["x-relaycast-target"] == "fakeai/gpt-4o-mini"
    with urllib.request.urlopen(
        urllib.request.Request(gw.url + "/admin/routes", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    ) as r:
        routes = json.loads(r.read())
    assert "slowable-p99" in routes["targets"]["primary/gpt-4o-mini"]["demoted_in"]["slowable"]
    assert not [e for e in _evaluate(gw) if e["rule"] == "slowable-p99"]
    # Fast again, and later: resolved once.
    slow.state.defaults = Behaviour()
    clock.set(base + 1800)
    _send(client, 8, "primary/gpt-4o-mini")
    resolved = [e for e in _evaluate(gw) if e["rule"] == "slowable-p99"]
    assert [e["event"] for e in resolved] == ["resolved"]
    hook.wait_for(lambda: len(_events(hook, "slowable-p99")) == 2)
    assert [e["event"] for e in _events(hook, "slowable-p99")] == ["alert", "resolved"]


def test_error_rate_breach_alerts_once_and_resolves_once(env):
    gw, client, clock, hook = env["gw"], env["client"], env["clock"], env["hook"]
    base = START + 30 * 3600
    clock.set(base)
    _send(client, 6, "flaky/gpt-4o-mini")
    assert not [e for e in _evaluate(gw) if e["rule"] == "flaky-errors"]
    clock.set(base + 600)
    _fail(client, 6, "flaky/gpt-4o-mini@error=503")
    _send(client, 2, "flaky/gpt-4o-mini")
    fired = [e for e in _evaluate(gw) if e["rule"] == "flaky-errors"]
    assert len(fired) == 1 and fired[0]["value"] == 75.0 and fired[0]["details"]["by_class"] == {"upstream_5xx": 6}
    assert not [e for e in _evaluate(gw) if e["rule"] == "flaky-errors"]
    clock.set(base + 1800)
    _send(client, 6, "flaky/gpt-4o-mini")
    assert [e["event"] for e in _evaluate(gw) if e["rule"] == "flaky-errors"] == ["resolved"]
    hook.wait_for(lambda: len(_events(hook, "flaky-errors")) == 2)
    with urllib.request.urlopen(
        urllib.request.Request(gw.url + "/admin/monitors", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    ) as r:
        status = json.loads(r.read())
    incidents = [i for i in status["incidents"] if i["rule"] == "flaky-errors"]
    assert len(incidents) == 1 and incidents[0]["state"] == "resolved"
    assert status["monitors"]["notify"]["hook"]["failed"] == 0


def test_a_failing_notification_target_is_retried_and_never_blocks_evaluation(env):
    gw, clock, hook = env["gw"], env["clock"], env["hook"]
    hook.script.statuses = [503, 503]  # the next two deliveries fail, then succeed
    clock.set(START + 40 * 3600)
    client = env["client"]
    _send(client, 6, "flaky/gpt-4o-mini")
    before = len(_events(hook, "flaky-errors"))
    _fail(client, 6, "flaky/gpt-4o-mini@error=503")
    t0 = time.monotonic()
    fired = [e for e in _evaluate(gw) if e["rule"] == "flaky-errors"]
    assert len(fired) == 1 and time.monotonic() - t0 < 5  # the evaluation returned; delivery goes on behind it
    hook.wait_for(
        lambda: (
            len(_events(hook, "flaky-errors")) > before + 0
            and any(
                p.status < 300
                for p in hook.posts("/hook")
                if json.loads(p.body).get("rule") == "flaky-errors"
                and json.loads(p.body).get("incident_id") == fired[0]["incident_id"]
            )
        ),
        timeout=20,
    )


def test_budget_alerts_once_in_its_day_and_resolves_the_next(env):
    """bob spent $0.00021 a request, 18 requests in the spike test's day: over $0.003 once, then a new UTC day."""
    gw, clock, hook = env["gw"], env["clock"], env["hook"]
    clock.set(START + 50 * 3600)  # two UTC days later: bob has spent nothing today
    _evaluate(gw)
    hook.wait_for(lambda: len(_events(hook, "bob-daily")) == 2)
    events = _events(hook, "bob-daily")
    assert [e["event"] for e in events] == ["alert", "resolved"] and events[0]["scope"] == "user=bob"
    assert events[0]["value"] > 0.003 and "budget $0.003" in events[0]["message"]


def _refuse(client: openai.OpenAI, n: int, model: str) -> None:
    for _ in range(n):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        _answered(client)


def test_a_burst_of_client_refusals_opens_no_error_rate_incident_while_5xx_do(env):
    """Refusals the requests caused (content policy, context length) are the provider answering correctly: the
    error-rate rule counts them among the attempts, never as errors. The same share of 503s opens an incident."""
    gw, client, clock = env["gw"], env["client"], env["clock"]
    base = START + 60 * 3600  # after the budget test's evaluation resolved every earlier flaky-errors incident
    clock.set(base)
    _send(client, 2, "flaky/gpt-4o-mini")
    _refuse(client, 5, "flaky/gpt-4o-mini@content_policy")
    _refuse(client, 3, "flaky/gpt-4o-mini@context_length")
    assert not [e for e in _evaluate(gw) if e["rule"] == "flaky-errors"]  # 80% refused, 0% failed
    with urllib.request.urlopen(
        urllib.request.Request(gw.url + "/admin/monitors", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    ) as r:
        status = json.loads(r.read())
    (rule,) = [x for x in status["monitors"]["rules"] if x["name"] == "flaky-errors"]
    (finding,) = rule["findings"]
    assert finding["state"] == "OK" and finding["value"] == 0.0
    assert "8 client-caused refusals not counted" in finding["message"]
    assert not [i for i in status["incidents"] if i["rule"] == "flaky-errors" and i["state"] == "open"]
    # The same burst, of 503s this time: an incident.
    clock.set(base + 600)
    _send(client, 2, "flaky/gpt-4o-mini")
    _fail(client, 8, "flaky/gpt-4o-mini@error=503")
    fired = [e for e in _evaluate(gw) if e["rule"] == "flaky-errors"]
    assert [e["event"] for e in fired] == ["alert"] and fired[0]["value"] == 80.0
    assert fired[0]["details"]["by_class"] == {"upstream_5xx": 8}
    clock.set(base + 1800)
    _send(client, 6, "flaky/gpt-4o-mini")
    assert [e["event"] for e in _evaluate(gw) if e["rule"] == "flaky-errors"] == ["resolved"]


def test_monitors_status_command(env):
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "relaycast", "monitors", "status", "--url", env["gw"].url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RELAYCAST_ADMIN_KEY": ADMIN_KEY},
    )
    assert out.returncode == 0, out.stderr
    for name in (
        "spend-spike (spend_spike)",
        "slowable-p99 (latency_sla)",
        "flaky-errors (error_rate)",
        "bob-daily (budget)",
        "notify hook (webhook)",
        "recent incidents:",
    ):
        assert name in out.stdout, out.stdout
