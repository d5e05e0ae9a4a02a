"""State that clients' values reach stays bounded, written as the attacks: thousands of distinct model names
cannot erase a configured target's open circuit or its statistics, and long distinct user and feature values
cannot grow `/metrics` past its bounds (parsed with the official `prometheus_client` parser)."""

from __future__ import annotations

import asyncio
import urllib.request

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess
from tests.store_helpers import admin_get

MSGS = [{"role": "user", "content": "hi"}]
ATTACK = 2_000  # four times the pass-through bound (MAX_PASS_THROUGH, 512): most names are evicted


def _config(fake_url: str, extra: str = "") -> str:
    return f"""
admin_key: {ADMIN_KEY}
routing:
  circuit: {{failures: 3, cooldown_s: 600}}
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [gpt-4o-mini]
models:
  - name: flaky
    targets: [fakeai/gpt-4o-mini@error=500]
{extra}
"""


async def _chat(
    session: aiohttp.ClientSession, url: str, model: str, headers: dict[str, str] | None = None, **body: object
) -> tuple[int, dict]:
    async with session.post(
        url + "/v1/chat/completions",
        data=orjson.dumps({"model": model, "messages": MSGS, **body}),
        headers={"content-type": "application/json", **(headers or {})},
    ) as r:
        return r.status, orjson.loads(await r.read())


async def _burst(url: str, requests: list[tuple[str, dict[str, str], dict]], concurrency: int = 32) -> list[int]:
    """Every request sent, `concurrency` at a time; their statuses."""
    statuses: list[int] = []
    queue = iter(requests)

    async def worker(session: aiohttp.ClientSession) -> None:
        for model, headers, body in queue:
            status, _ = await _chat(session, url, model, headers, **body)
            statuses.append(status)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return statuses


async def _one(url: str, model: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        return await _chat(session, url, model)


def _scrape(url: str) -> tuple[bytes, dict]:
    req = urllib.request.Request(url + "/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read()
    return text, {f.name: f for f in text_string_to_metric_families(text.decode())}


def test_distinct_unknown_models_cannot_erase_an_open_circuit_or_a_configured_targets_statistics(fake):
    gw = GatewayProcess(_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        for _ in range(3):
            status, _ = asyncio.run(_one(gw.url, "flaky"))
            assert status == 502
        status, body = asyncio.run(_one(gw.url, "flaky"))
        assert status == 503 and "open" in body["error"]["message"], body
        for _ in range(4):
            assert asyncio.run(_one(gw.url, "fakeai/gpt-4o-mini"))[0] == 200

        # The attack: an ordinary key holder names thousands of models the config does not define.
        statuses = asyncio.run(_burst(gw.url, [(f"fakeai/no-such-model-{i}", {}, {}) for i in range(ATTACK)]))
        assert len(statuses) == ATTACK and set(statuses) == {200}

        status, body = asyncio.run(_one(gw.url, "flaky"))
        assert status == 503 and "open" in body["error"]["message"], "the open circuit survived the attack"
        _, routes = admin_get(gw.url, "/admin/routes")
        targets = routes["targets"]
        assert targets["fakeai/gpt-4o-mini@error=500"]["circuit"] == "open"
        assert targets["fakeai/gpt-4o-mini"]["window"]["ok"] == 4, "a configured target keeps its statistics"
        passing = [t for t in targets if t.startswith("fakeai/no-such-model-")]
        assert 0 < len(passing) <= 512, "pass-through targets' health is bounded"

        _, fams = _scrape(gw.url)
        assert fams["relaycast_pass_through_targets"].samples[0].value == len(passing)
        assert fams["relaycast_pass_through_targets_evicted"].samples[0].value == ATTACK - len(passing)
        shown = {s.labels["target"] for s in fams["relaycast_target_state"].samples}
        assert shown == {"fakeai/gpt-4o-mini@error=500", "fakeai/gpt-4o-mini"}, "healthy pass-through targets hidden"
    finally:
        gw.stop()


def test_long_distinct_user_and_feature_values_keep_metrics_bounded(fake):
    series = 40
    gw = GatewayProcess(
        _config(fake.url, f"metrics: {{user_label: true, max_series: {series}}}"),
        env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    ).wait_ready()
    try:
        n = 300
        reqs = [
            ("fakeai/gpt-4o-mini", {"x-title": f"feature-{i}-" + "f" * 4000}, {"user": f"user-{i}-" + "u" * 240})
            for i in range(n)
        ]
        assert set(asyncio.run(_burst(gw.url, reqs, concurrency=8))) == {200}
        text, fams = _scrape(gw.url)

        for f in fams.values():
            for s in f.samples:
                assert all(len(v) <= 128 for v in s.labels.values()), (f.name, s.labels)
        req = fams["relaycast_requests"]
        assert len(req.samples) <= series + 1 and sum(s.value for s in req.samples) == n
        assert any(s.labels["user"] == "(other)" for s in req.samples)
        assert any(s.labels["feature"].endswith("…") and len(s.labels["feature"]) == 128 for s in req.samples)
        overflow = {s.labels["metric"]: s.value for s in fams["relaycast_metrics_series_overflow"].samples}
        assert overflow["relaycast_requests_total"] == n - series
        assert fams["relaycast_metrics_label_values_truncated"].samples[0].value >= 2 * n
        # Three families carry user and feature: each holds at most `series` + 1 series of at most 7 values of
        # at most 128 characters; the rest of the page does not depend on the requests' values.
        assert len(text) < 3 * (series + 1) * 7 * 150 + 60_000, len(text)
    finally:
        gw.stop()
