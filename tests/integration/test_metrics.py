"""GET /metrics in Prometheus' text format, parsed with the official `prometheus_client` parser, after real
requests through the gateway."""

from __future__ import annotations

import urllib.error
import urllib.request
from decimal import Decimal

import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import admin_get, wait_stored


def _scrape(url: str, key: str | None = ADMIN_KEY) -> dict:
    req = urllib.request.Request(url + "/metrics", headers={"authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return {f.name: f for f in text_string_to_metric_families(r.read().decode())}


def test_metrics_after_real_traffic(fake):
    gw = GatewayProcess(standard_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        ids = []
        for i in range(4):
            raw = client.chat.completions.with_raw_response.create(
                model="fast",
                messages=[{"role": "user", "content": "hi"}],
                user=f"user-{i}",
                extra_headers={"X-Title": "search", "x-request-id": f"m-{i}"},
            )
            ids.append(raw.headers["x-relaycast-request-id"])
        raw = client.chat.completions.with_raw_response.create(
            model="fakeai/gpt-4o@ttft_ms=20",
            stream=True,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-request-id": "m-stream"},
        )
        for _chunk in raw.parse():
            pass
        ids.append(raw.headers["x-relaycast-request-id"])
        wait_stored(gw.url, ids)  # each record is emitted just after its response: wait until all are in
        fams = _scrape(gw.url)

        req = fams["relaycast_requests"]  # the parser names a counter family without its _total suffix
        assert req.type == "counter"
        fast = [s for s in req.samples if s.labels["route"] == "fast"]
        assert sum(s.value for s in fast) == 4 and {s.labels["outcome"] for s in fast} == {"ok"}
        assert "user" not in fast[0].labels  # off by default: bounded cardinality
        assert fast[0].labels["feature"] == "search" and fast[0].labels["model"] == "gpt-4o-mini"

        att = {(s.labels["target"], s.labels["outcome"]): s.value for s in fams["relaycast_attempts"].samples}
        assert att[("fakeai/gpt-4o-mini@error=503", "upstream_5xx")] == 4 and att[("fakeai/gpt-4o-mini", "ok")] == 4

        dur = fams["relaycast_request_duration_seconds"]
        assert dur.type == "histogram"
        buckets = [s for s in dur.samples if s.name.endswith("_bucket") and s.labels["route"] == "fast"]
        counts = [s.value for s in sorted(buckets, key=lambda s: float(s.labels["le"]))]
        assert counts == sorted(counts) and counts[-1] == 4  # cumulative, +Inf holds every request
        ttft = fams["relaycast_ttft_seconds"]
        assert any(s.name.endswith("_count") and s.value == 1 for s in ttft.samples)

        # Cost is a counter that agrees with the store's exact total.
        _, spend = admin_get(gw.url, "/admin/analytics/spend?since=1h")
        cost = sum(s.value for s in fams["relaycast_cost_usd"].samples)
        assert fams["relaycast_cost_usd"].type == "counter"
        assert abs(Decimal(str(cost)) - Decimal(spend["totals"]["cost_usd"])) < Decimal("0.000000001")
        tokens = {
            s.labels["type"]: s.value for s in fams["relaycast_tokens"].samples if s.labels["model"] == "gpt-4o-mini"
        }
        assert tokens["prompt"] > 0 and tokens["completion"] > 0

        # Routing state, the store and the broadcast pipeline are there too.
        states = {(s.labels["target"], s.labels["state"]): s.value for s in fams["relaycast_target_state"].samples}
        assert states[("fakeai/gpt-4o-mini", "ok")] == 1
        assert fams["relaycast_store_written"].type == "counter"
        assert not [f for f in fams.values() if f.type == "gauge" and "cost" in f.name]  # never a last-value gauge
    finally:
        gw.stop()


def test_metrics_need_the_admin_key(gateway):
    try:
        _scrape(gateway.url, key=None)
        raise AssertionError("expected 401")
    except urllib.error.HTTPError as e:
        assert e.code == 401
