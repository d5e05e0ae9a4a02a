"""The store end to end, on SQLite and on this machine's Postgres: real requests through the gateway with the
`openai` SDK, written by the store (off the request path), read back through the analytics API.

Costs are checked to the cent (exactly, in fact) for cached tokens, cache writes, reasoning tokens, a streamed
usage, an upstream-reported cost, an unpriced model and a cut stream; totals must agree across every grouping.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from relaycast.store.schema import LATEST
from tests.conftest import UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import admin_get, postgres_database, wait_stored

EXTRA_PROVIDERS = """
  - name: orouter
    kind: openrouter
    base_url: {url}
    api_key: ${{TEST_UPSTREAM_KEY}}
  - name: private
    kind: openai_compatible
    base_url: {url}
    api_key: ${{TEST_UPSTREAM_KEY}}
"""


def _config(fake_url: str, store: str) -> str:
    text = standard_config(fake_url, store)
    return text.replace("\nmodels:\n", EXTRA_PROVIDERS.format(url=fake_url) + "models:\n", 1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_gw(request, fake) -> Iterator[tuple[GatewayProcess, str]]:
    if request.param == "sqlite":
        gw = GatewayProcess(
            _config(fake.url, "store: {path: data/requests.db}"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
        )
        yield gw.wait_ready(), "sqlite"
        gw.stop()
    else:
        gen = postgres_database()
        url = next(gen)
        gw = GatewayProcess(_config(fake.url, f"store: {{url: '{url}'}}"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
        try:
            yield gw.wait_ready(), url
        finally:
            gw.stop()
            gen.close()


# (request id, model, stream, expected cost_usd, expected source). Prices: the packaged catalog.
CASES = [
    # gpt-4o-mini: 600 plain input x 0.15 + 400 cached x 0.075 + 200 output (50 of them reasoning) x 0.60, per 1M.
    (
        "t-cached",
        "fakeai/gpt-4o-mini@prompt_tokens=1000,cached=400,tokens=200,reasoning=50",
        False,
        "0.00024",
        "computed",
    ),
    # a stream's usage chunk: 100 x 0.15 + 20 x 0.60
    ("t-stream", "fakeai/gpt-4o-mini@prompt_tokens=100,tokens=20", True, "0.000027", "computed"),
    # claude-3-5-haiku: 500 x 0.80 + 1000 cached x 0.08 + 1500 written x 1.00 + 100 x 4.00
    (
        "t-cachewrite",
        "claude/claude-3-5-haiku-latest@prompt_tokens=3000,cached=1000,cache_write=1500,tokens=100",
        False,
        "0.00238",
        "computed",
    ),
    ("t-reported", "orouter/openai/gpt-4o-mini@cost=0.00123", False, "0.00123", "reported"),
    ("t-unpriced", "private/my-private-model", False, None, "unpriced"),
    ("t-failover", "fast", False, None, "computed"),  # 503 then served: the failed attempt costs nothing
]


def _send(gw: GatewayProcess, tag: str) -> dict[str, str]:
    """Send the cases; each client `x-request-id` -> the gateway's id for it (the store's key)."""
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    ids = {}
    for rid, model, stream, _, _ in CASES:
        rid = f"{rid}-{tag}"
        headers = {
            "x-request-id": rid,
            "X-Title": "checkout" if "cache" in rid else "search",
            "X-Relaycast-Tags": "team=payments,env=test",
        }
        if stream:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                user="alice",
                extra_headers=headers,
            )
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        else:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": "hi"}], user="bob", extra_headers=headers
            )
        ids[rid] = raw.headers["x-relaycast-request-id"]
    # A stream cut mid-way: no usage ever comes, so the cost is estimated from the prompt and what was received.
    cut = f"t-cut-{tag}"
    with pytest.raises(openai.APIError):
        raw = client.chat.completions.with_raw_response.create(
            model="fakeai/gpt-4o-mini@cut_after=3,tokens=50",
            stream=True,
            user="carol",
            messages=[{"role": "user", "content": "tell me a story"}],
            extra_headers={"x-request-id": cut},
        )
        ids[cut] = raw.headers["x-relaycast-request-id"]
        for _ in raw.parse():
            pass
    return ids


@pytest.fixture(scope="module")
def sent_a(store_gw) -> tuple[dict[str, str], dict[str, dict]]:
    """The cases sent once per gateway: (client id -> the gateway's id, client id -> its stored detail)."""
    gw, _ = store_gw
    ids = _send(gw, "a")
    found = wait_stored(gw.url, list(ids.values()))
    return ids, {rid: found[ours] for rid, ours in ids.items()}


def test_costs_are_stored_exactly_and_totals_agree_across_groupings(store_gw, sent_a):
    gw, _ = store_gw
    _, stored = sent_a
    for rid, _, _, cost, source in CASES:
        req = stored[f"{rid}-a"]["request"]
        assert req["cost_source"] == source, rid
        if cost is not None:
            assert req["cost_usd"] == cost, rid
    assert stored["t-unpriced-a"]["request"]["cost_usd"] is None  # unpriced: never $0

    cut = stored["t-cut-a"]
    assert cut["request"]["cost_source"] == "estimated" and Decimal(cut["request"]["cost_usd"]) > 0
    assert cut["attempts"][0]["error_class"] == "stream_cut" and cut["attempts"][0]["completion_tokens"] > 0

    fo = stored["t-failover-a"]
    assert [a["error_class"] for a in fo["attempts"]] == ["upstream_5xx", None]
    assert fo["attempts"][0]["cost_source"] == "none" and fo["request"]["cost_usd"] == fo["attempts"][1]["cost_usd"]

    # Totals: every grouping sums to the same exact figure, and to the requests' own costs.
    _, by_model = admin_get(gw.url, "/admin/analytics/spend?by=model&since=1h&limit=1000")
    total = Decimal(by_model["totals"]["cost_usd"])
    assert by_model["totals"]["unpriced_requests"] >= 1
    for by in ("model", "provider", "user", "feature", "key", "target", "route"):
        _, doc = admin_get(gw.url, f"/admin/analytics/spend?by={by}&since=1h&limit=1000")
        assert sum(Decimal(g["cost_usd"] or 0) for g in doc["groups"]) == total, by
        assert sum(g["requests"] for g in doc["groups"]) == doc["totals"]["requests"], by
    _, listed = admin_get(gw.url, "/admin/analytics/requests?since=1h&limit=1000")
    assert sum(Decimal(r["cost_usd"] or 0) for r in listed["requests"]) == total
    # A filtered grouping (features of one user) is read from the raw requests: the same sums.
    _, bob = admin_get(gw.url, "/admin/analytics/spend?by=feature&user=bob&since=1h")
    _, bob_list = admin_get(gw.url, "/admin/analytics/requests?user=bob&since=1h&limit=1000")
    assert bob["totals"]["requests"] == len(bob_list["requests"]) > 0
    assert Decimal(bob["totals"]["cost_usd"]) == sum(Decimal(r["cost_usd"] or 0) for r in bob_list["requests"])
    assert sum(s for g in bob["series"].values() for s in g["requests"]) == bob["totals"]["requests"]
    unpriced = [g for g in by_model["groups"] if g["key"] == "my-private-model"]
    assert unpriced and unpriced[0]["cost_usd"] is None and unpriced[0]["unpriced_requests"] >= 1


def test_attribution_tags_and_prompts_are_stored(store_gw, sent_a):
    gw, _ = store_gw
    _, stored = sent_a
    req = stored["t-cached-a"]["request"]
    assert req["user"] == "bob" and req["feature"] == "checkout" and req["tags"] == {"team": "payments", "env": "test"}
    assert req["input_messages"] == [{"role": "user", "content": "hi"}] and req["output_text"]
    assert req["model_requested"].startswith("fakeai/gpt-4o-mini@") and req["target"].startswith("fakeai/")
    stream = stored["t-stream-a"]["request"]
    assert stream["stream"] is True and stream["ttft_ms"] is not None and stream["user"] == "alice"
    _, by_user = admin_get(gw.url, "/admin/analytics/spend?by=user&since=1h")
    assert {"alice", "bob", "carol"} <= {g["key"] for g in by_user["groups"]}
    _, only_alice = admin_get(gw.url, "/admin/analytics/requests?since=1h&user=alice")
    assert only_alice["requests"] and {r["user"] for r in only_alice["requests"]} == {"alice"}


def test_latency_errors_and_explorer_pages(store_gw, sent_a):
    gw, _ = store_gw
    ids, _ = sent_a
    _, lat = admin_get(gw.url, "/admin/analytics/latency?by=model&since=1h")
    g = {x["key"]: x for x in lat["groups"]}
    streamed = "gpt-4o-mini@prompt_tokens=100,tokens=20"  # the fake's behaviour suffix is part of the model's name
    assert g["gpt-4o-mini"]["total_ms"]["p50"] > 0 and g["gpt-4o-mini"]["ttft_ms"]["p99"] is None  # no stream
    assert (
        g[streamed]["ttft_ms"]["p50"] is not None
        and g[streamed]["ttft_ms"]["p99"] <= g[streamed]["total_ms"]["p99"] * 1.1
    )
    assert len(lat["series"]["gpt-4o-mini"]["total_p99"]) == len(lat["buckets"])
    _, err = admin_get(gw.url, "/admin/analytics/errors?since=1h")
    fakeai = next(p for p in err["providers"] if p["provider"] == "fakeai")
    assert fakeai["by_class"].get("upstream_5xx", 0) >= 1 and 0 < fakeai["error_rate"] < 1
    # Paging: two pages of 3 do not overlap and follow each other in time.
    _, p1 = admin_get(gw.url, "/admin/analytics/requests?since=1h&limit=3")
    _, p2 = admin_get(gw.url, f"/admin/analytics/requests?since=1h&limit=3&before={p1['next_before']}")
    assert not {r["request_id"] for r in p1["requests"]} & {r["request_id"] for r in p2["requests"]}
    assert p1["requests"][-1]["ts"] >= p2["requests"][0]["ts"]
    _, errors_only = admin_get(gw.url, "/admin/analytics/requests?since=1h&status=error")
    assert errors_only["requests"] and all(r["status"] >= 400 or r["error_class"] for r in errors_only["requests"])
    assert ids["t-cut-a"] in {r["request_id"] for r in errors_only["requests"]}  # 200, then an error event mid-stream


def test_recent_ranges_answer_in_minutes(store_gw, sent_a):
    """Up to 6 hours the analytics read the per-minute rollups and say so; beyond, hours: the same totals."""
    gw, _ = store_gw
    docs = {}
    for since in ("15m", "1h", "6h", "24h"):
        _, docs[since] = admin_get(gw.url, f"/admin/analytics/spend?by=model&since={since}&limit=1000")
    for since, bucket, size in (
        ("15m", "minute", 60),
        ("1h", "minute", 60),
        ("6h", "minute", 60),
        ("24h", "hour", 3600),
    ):
        d = docs[since]
        assert d["bucket"] == bucket and d["bucket_s"] == size, since
        assert d["range"]["end"] - d["range"]["start"] == pytest.approx(
            {"15m": 900, "1h": 3600, "6h": 21600, "24h": 86400}[since], abs=1
        )
        assert d["buckets"][0] <= d["range"]["start"] < d["buckets"][0] + size and d["until"] >= d["range"]["end"]
        assert all(len(s["requests"]) == len(d["buckets"]) for s in d["series"].values())
    assert docs["1h"]["totals"] == docs["24h"]["totals"] and docs["1h"]["groups"] == docs["24h"]["groups"]
    _, lat = admin_get(gw.url, "/admin/analytics/latency?by=provider&since=1h")
    _, lat_h = admin_get(gw.url, "/admin/analytics/latency?by=provider&since=1h&bucket=hour")
    assert lat["bucket"] == "minute" and lat_h["bucket"] == "hour"
    assert [g["attempts"] for g in lat["groups"]] == [g["attempts"] for g in lat_h["groups"]]
    _, err = admin_get(gw.url, "/admin/analytics/errors?since=15m")
    _, err_h = admin_get(gw.url, "/admin/analytics/errors?since=1h&bucket=hour")
    assert err["bucket"] == "minute" and err["totals"] == err_h["totals"] and err["totals"]["errors"] >= 1
    assert {c: sum(v) for c, v in err["by_class"].items()} == {c: sum(v) for c, v in err_h["by_class"].items()}


def test_analytics_needs_the_admin_key_and_rejects_bad_parameters(store_gw):
    gw, _ = store_gw
    status, body = admin_get(gw.url, "/admin/analytics/spend", key=None)
    assert status == 401 and body["error"]["code"] == "unauthorized"
    status, body = admin_get(gw.url, "/admin/analytics/spend", key="wrong")
    assert status == 401
    for path, param in (
        ("spend?by=colour", "by"),
        ("spend?since=yesterdayish", "since"),
        ("spend?limit=0", "limit"),
        ("latency?by=user", "by"),
        ("requests?before=zzz", "before"),
        ("spend?bucket=week", "bucket"),
        ("errors?since=7d&bucket=minute", "bucket"),  # minute buckets are kept 48 hours
        ("requests?status=teapot", "status"),
    ):
        status, body = admin_get(gw.url, "/admin/analytics/" + path)
        assert status == 400 and body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param, (
            path
        )
    status, body = admin_get(gw.url, "/admin/analytics/requests/no-such-request")
    assert status == 404 and body["error"]["message"]
    status, body = admin_get(gw.url, "/admin/analytics/nope")
    assert status == 404


def test_store_status_and_schema_version(store_gw):
    gw, where = store_gw
    status, body = admin_get(gw.url, "/admin/store")
    assert status == 200 and body["store"]["schema_version"] == LATEST and body["prices_as_of"]
    assert "@" not in body["store"]["store"] or "postgres@" in body["store"]["store"]
    if where == "sqlite":
        assert (gw.config_path.parent / "data" / "requests.db").exists()  # beside the config, created on first run


def test_replicas_write_to_one_postgres_store(store_gw, fake):
    gw, where = store_gw
    if where == "sqlite":
        pytest.skip("one SQLite file per gateway; replicas share a Postgres store")
    second = GatewayProcess(_config(fake.url, f"store: {{url: '{where}'}}"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    try:
        second.wait_ready()
        ids = _send(second, "b")
        wait_stored(gw.url, list(ids.values()))  # written by the second replica, read through the first
        _, doc = admin_get(gw.url, "/admin/analytics/spend?by=user&since=1h")
        _, doc2 = admin_get(second.url, "/admin/analytics/spend?by=user&since=1h")
        assert doc["totals"] == doc2["totals"] and doc["totals"]["requests"] >= 2 * len(ids)
    finally:
        second.stop()


def test_report_command_prints_the_same_figures(store_gw, sent_a):
    import csv
    import io
    import json
    import subprocess
    import sys

    gw, _ = store_gw
    _, api = admin_get(gw.url, "/admin/analytics/spend?by=user&since=24h&limit=50")

    def report(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "relaycast", "report", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **__import__("os").environ,
                "RELAYCAST_ADMIN_KEY": "admin-key-for-tests-01",
                "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
            },
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    # From the store named by the config (no gateway involved), and from the running gateway: the same totals.
    direct = json.loads(report("--config", str(gw.config_path), "--by", "user", "--since", "24h", "--format", "json"))
    remote = json.loads(report("--url", gw.url, "--by", "user", "--since", "24h", "--format", "json"))
    assert direct["totals"] == remote["totals"] == api["totals"]
    rows = list(csv.DictReader(io.StringIO(report("--config", str(gw.config_path), "--by", "user", "--format", "csv"))))
    assert {r["user"] for r in rows} >= {"alice", "bob", "carol"}
    assert sum(Decimal(r["cost_usd"]) for r in rows if r["cost_usd"] != "unpriced") == Decimal(
        api["totals"]["cost_usd"]
    )
    table = report("--url", gw.url, "--by", "feature")
    assert "checkout" in table and "requests" in table and "in total" in table
    latency = report("--url", gw.url, "--view", "latency", "--by", "provider", "--format", "csv")
    assert latency.splitlines()[0].startswith("provider,attempts,p50_ms")
    errors = report("--config", str(gw.config_path), "--view", "errors")
    assert "upstream_5xx" in errors
