"""Routing end to end: the openai SDK against the gateway and fake upstreams on loopback whose behaviour the
tests change while traffic flows."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest

from relaycast.config import parse
from relaycast.fake.behaviour import Behaviour
from relaycast.fake.server import FakeUpstream
from relaycast.records import RequestRecord
from relaycast.server.app import Gateway
from relaycast.server.runner import ThreadedServer

MSGS = [{"role": "user", "content": "hello"}]
ADMIN = "routing-admin-key"


class Upstream:
    """A fake provider whose default behaviour a test can change at any time."""

    def __init__(self) -> None:
        self.app = FakeUpstream()
        self.server = ThreadedServer(self.app).start()
        self.url = self.server.url + "/v1"

    def behave(self, **kw: object) -> None:
        self.app.state.defaults = dataclasses.replace(Behaviour(), **kw)

    def stats(self) -> dict:
        with urllib.request.urlopen(self.server.url + "/_fake/stats") as r:
            return json.load(r)


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[Upstream, Upstream]]:
    a, b = Upstream(), Upstream()
    yield a, b
    a.server.stop()
    b.server.stop()


@contextmanager
def gateway(
    a: Upstream, b: Upstream, models: str, routing: str = ""
) -> Iterator[tuple[openai.OpenAI, list[RequestRecord], Gateway, str]]:
    text = f"""
admin_key: {ADMIN}
providers:
  - {{name: pa, kind: openai_compatible, base_url: "{a.url}"}}
  - {{name: pb, kind: openai_compatible, base_url: "{b.url}"}}
models:
{models}
routing:
{routing or "  window_s: 60"}
"""
    records: list[RequestRecord] = []
    gw = Gateway(parse(text, env={}), sinks=[records.append])
    with ThreadedServer(gw) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=20), records, gw, srv.url


def last_record(records: list[RequestRecord], count: int = 1, timeout: float = 5.0) -> RequestRecord:
    """The newest record once `count` have arrived: a record is emitted after its response is sent, so the
    client can see the answer a moment before the record exists."""
    deadline = time.monotonic() + timeout
    while len(records) < count:
        assert time.monotonic() < deadline, f"only {len(records)} of {count} records arrived"
        time.sleep(0.01)
    return records[-1]


def served(client: openai.OpenAI, model: str = "r", **kw: object) -> tuple[str, int]:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSGS, **kw)
    raw.parse()
    return raw.headers["x-relaycast-target"], int(raw.headers["x-relaycast-attempts"])


@pytest.fixture(autouse=True)
def healthy(ups) -> None:  # type: ignore[no-untyped-def]
    for u in ups:
        u.behave()


def test_a_rate_limited_target_cools_down_and_is_skipped_until_then(ups) -> None:
    a, b = ups
    a.behave(error=429, retry_after=30)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m]}") as (c, records, gw, _):
        assert served(c) == ("pb/m", 2)
        assert served(c) == ("pb/m", 1), "the cooling target is not asked again"
        assert gw.services.board.status()["pa/m"]["state"] == "cooling"
        assert 25 < gw.services.board.status()["pa/m"]["cooling_for_s"] <= 30


def test_5xx_retries_the_same_target_with_backoff_within_the_retry_budget(ups) -> None:
    a, b = ups
    a.behave(error=503)
    with gateway(a, b, "  - {name: r, targets: [pa/m], retries: 2}") as (c, records, gw, _):
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="r", messages=MSGS)
        assert e.value.status_code == 502
        assert e.value.response.headers["x-relaycast-attempts"] == "3"
        rec = last_record(records)
        gaps = [
            b.started_ns - (a.started_ns + a.duration_ns) for a, b in zip(rec.attempts, rec.attempts[1:], strict=False)
        ]
        assert all(g >= 40_000_000 for g in gaps), "each retry waited a backoff"


def test_content_policy_goes_to_its_fallback_and_never_to_the_same_model(ups) -> None:
    a, b = ups
    a.behave(content_policy=True)
    models = "  - {name: r, targets: [pa/m, pb/m], content_policy_fallback: pb/other}\n  - {name: nofb, targets: [pa/m, pb/m]}"
    with gateway(a, b, models) as (c, records, gw, _):
        assert served(c) == ("pb/other", 2)
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="nofb", messages=MSGS)
        assert e.value.body["code"] == "content_policy"
        assert e.value.response.headers["x-relaycast-attempts"] == "1"


def test_context_length_goes_to_the_larger_context_fallback_else_400(ups) -> None:
    a, b = ups
    a.behave(context_length=True)
    models = "  - {name: r, targets: [pa/small], context_length_fallback: [pb/large]}\n  - {name: nofb, targets: [pa/small, pb/m]}"
    with gateway(a, b, models) as (c, records, gw, _):
        assert served(c) == ("pb/large", 2)
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="nofb", messages=MSGS)
        assert e.value.body["code"] == "context_length"


def test_an_upstream_auth_failure_is_not_retried_and_is_a_502(ups) -> None:
    a, b = ups
    a.behave(error=401)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m], retries: 2}") as (c, records, gw, _):
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="r", messages=MSGS)
        assert (e.value.status_code, e.value.body["code"]) == (502, "auth")
        assert e.value.response.headers["x-relaycast-attempts"] == "1"


def test_the_circuit_opens_on_consecutive_failures_and_half_opens_after_the_cooldown(ups) -> None:
    a, b = ups
    a.behave(error=500)
    routing = "  circuit: {failures: 3, cooldown_s: 0.5}"
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m]}", routing) as (c, records, gw, _):
        for _ in range(3):
            assert served(c) == ("pb/m", 2)
        assert gw.services.board.status()["pa/m"]["circuit"] == "open"
        assert served(c) == ("pb/m", 1), "an open circuit is skipped"
        a.behave()
        time.sleep(0.6)
        assert served(c) == ("pa/m", 1), "half-open: a probe goes through, succeeds and closes the circuit"
        assert gw.services.board.status()["pa/m"]["circuit"] == "closed"
        assert gw.services.board.status()["pa/m"]["transitions"] == {
            "closed->open": 1,
            "open->half_open": 1,
            "half_open->closed": 1,
        }


def test_a_target_over_its_sla_loses_its_traffic_and_wins_it_back_when_it_recovers(ups) -> None:
    a, b = ups
    a.behave(latency_ms=150)
    models = "  - {name: r, targets: [pa/m, pb/m], sla: {p99_ms: 100}}"
    routing = "  window_s: 1.2\n  min_requests: 3\n  probe_share: 0.3"
    with gateway(a, b, models, routing) as (c, records, gw, _):
        first = [served(c)[0] for _ in range(4)]
        assert first[:3] == ["pa/m"] * 3
        later = [served(c)[0] for _ in range(40)]  # probes (probe_share 0.3) are random: 40 keep a flake rare
        assert later.count("pb/m") >= 20, "the slow target lost most of its traffic"
        assert ("r", "pa/m") in gw.services.board.demoted
        a.behave()  # recovered
        deadline = time.monotonic() + 8
        while ("r", "pa/m") in gw.services.board.demoted and time.monotonic() < deadline:
            served(c)
            time.sleep(0.02)
        assert ("r", "pa/m") not in gw.services.board.demoted, "promoted back once its window holds only fast answers"
        assert [served(c)[0] for _ in range(5)] == ["pa/m"] * 5


def test_a_stream_without_a_first_token_in_its_ttft_budget_fails_over(ups) -> None:
    a, b = ups
    a.behave(ttft_ms=2000)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m], timeouts: {ttft: 0.3}}") as (c, records, gw, _):
        raw = c.chat.completions.with_raw_response.create(model="r", messages=MSGS, stream=True)
        text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
        assert raw.headers["x-relaycast-target"] == "pb/m" and text.startswith("the quick")
        first = last_record(records).attempts[0]
        assert first.error_class == "timeout" and 0.29e9 <= first.duration_ns < 1.5e9


def test_hedging_returns_the_faster_stream_and_cancels_the_other(ups) -> None:
    a, b = ups
    a.behave(ttft_ms=3000, tps=10, tokens=50)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m], hedge_after_ms: 150}") as (c, records, gw, _):
        raw = c.chat.completions.with_raw_response.create(model="r", messages=MSGS, stream=True)
        list(raw.parse())
        assert raw.headers["x-relaycast-target"] == "pb/m"
        classes = {att.target: att.error_class for att in last_record(records).attempts}
        assert classes == {"pa/m": "hedge_lost", "pb/m": None}
        deadline = time.monotonic() + 2
        while a.stats()["active_streams"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.stats()["active_streams"] == 0, "the losing upstream stream was cancelled"


def test_the_request_deadline_is_never_exceeded(ups) -> None:
    a, b = ups
    a.behave(latency_ms=3000)
    b.behave(latency_ms=3000)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m], retries: 3, timeouts: {total: 0.8}}") as (
        c,
        records,
        gw,
        _,
    ):
        start = time.monotonic()
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="r", messages=MSGS)
        elapsed = time.monotonic() - start
        assert e.value.status_code == 504 and e.value.body["code"] == "timeout"
        assert elapsed < 0.8 + 0.4


def test_openrouter_provider_preferences_are_honoured(ups) -> None:
    a, b = ups
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m]}") as (c, records, gw, _):
        assert served(c, extra_body={"provider": {"order": ["pb"]}})[0] == "pb/m"
        assert served(c, extra_body={"provider": {"ignore": ["pa"]}})[0] == "pb/m"
        assert served(c, extra_body={"provider": {"only": ["pa"]}})[0] == "pa/m"
        a.behave(error=503)
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="r", messages=MSGS, extra_body={"provider": {"allow_fallbacks": False}})
        assert e.value.response.headers["x-relaycast-attempts"] == "1"
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="r", messages=MSGS, extra_body={"provider": {"only": ["nobody"]}})
        assert (e.value.status_code, e.value.body["code"]) == (503, "no_route")


def test_routes_status_shows_states_percentiles_and_transitions(ups) -> None:
    a, b = ups
    a.behave(error=500)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m]}", "  circuit: {failures: 2, cooldown_s: 60}") as (
        c,
        records,
        gw,
        url,
    ):
        for _ in range(3):
            served(c)
        out = subprocess.run(
            [sys.executable, "-m", "relaycast", "routes", "status", "--url", url, "--admin-key", ADMIN],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert "pa/m" in out.stdout and "open" in out.stdout and "upstream_5xx" in out.stdout
        assert "pb/m" in out.stdout and "P99" in out.stdout
        pa = next(ln for ln in out.stdout.splitlines() if ln.startswith("pa/m "))
        assert "100.0%" in pa and "upstream_5xx 2" in pa  # the rate agrees with the counts beside it


def test_concurrent_requests_share_one_half_open_probe(ups) -> None:
    a, b = ups
    a.behave(error=500)
    with gateway(a, b, "  - {name: r, targets: [pa/m, pb/m]}", "  circuit: {failures: 1, cooldown_s: 0.3}") as (
        c,
        records,
        gw,
        _,
    ):
        served(c)
        a.behave(latency_ms=300)
        time.sleep(0.35)
        results: list[tuple[str, int]] = []
        threads = [threading.Thread(target=lambda: results.append(served(c))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(1 for target, _ in results if target == "pa/m") == 1, "exactly one probe while half-open"
