"""One attribution rule in the store and `/metrics`: each attempt's tokens and cost belong to that attempt's provider,
model and target; the request (its count, its error) to its final attempt's; every grouping sums to the totals.
And `/metrics` sums cost as integers: 200,000 small costs add up exactly.

A failover with two billed attempts on two models (a stream cut after output, estimated, then served by another
model) is what tells the rules apart: the old rule put the whole cost on the final model."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import monitor_queries, queries, rows
from relaycast.store.db import Connection
from relaycast.store.writer import write_batch
from relaycast.telemetry.metrics import Metrics
from relaycast.telemetry.settings import MetricsConfig
from tests.store_helpers import migrated_store

CUT_PUSD = 7_000_123  # the cut stream on model a, estimated
SERVED_PUSD = 30_000_456  # the answer from model b
SINGLE_PUSD = 1_000_001  # a plain request to model b


def _attempt(model: str, cost: int | None, source: str, error: str | None = None, prompt: int = 10) -> Attempt:
    return Attempt(
        target=f"p{model}/{model}",
        provider=f"p{model}",
        model=model,
        started_ns=0,
        duration_ns=1_000_000,
        ttft_ns=500_000,
        usage=Usage(prompt_tokens=prompt, completion_tokens=5),
        error_class=error,
        cost_pusd=cost,
        cost_source=source,
    )


def _request(
    rid: str, attempts: tuple[Attempt, ...], ts: float, feature: str = "f", status: int = 200
) -> RequestRecord:
    return RequestRecord(
        request_id=rid,
        endpoint="chat.completions",
        model_requested="route",
        stream=True,
        started_unix_ns=int(ts * 1e9),
        duration_ns=2_000_000,
        status_code=status,
        attribution=Attribution(user="u", feature=feature, key_name="k"),
        attempts=attempts,
    )


def _workload(ts: float) -> list[RequestRecord]:
    failover = (
        _attempt("a", CUT_PUSD, "estimated", error="stream_cut", prompt=100),
        _attempt("b", SERVED_PUSD, "computed", prompt=200),
    )
    return [
        _request("failover", failover, ts, feature="checkout"),
        _request("single", (_attempt("b", SINGLE_PUSD, "computed"),), ts, feature="search"),
        _request("unpriced", (_attempt("c", None, "unpriced"),), ts, feature="search"),
        _request("refused", (), ts, feature="search", status=429),  # never reached an upstream
    ]


@pytest.fixture(params=["sqlite", "postgres"])
def conn(request, tmp_path) -> Iterator[Connection]:
    yield from migrated_store(request.param, tmp_path)


def _groups(doc: dict) -> dict[str, dict]:
    return {g["key"]: g for g in doc["groups"]}


def test_the_store_gives_each_attempt_its_own_model_and_the_request_its_final_one(conn):
    now = time.time()
    write_batch(conn, rows.build(_workload(now), Redactor(()), privacy=False))
    w = queries.window({"since": "1h"}, now=now + 1)
    total = CUT_PUSD + SERVED_PUSD + SINGLE_PUSD

    by_model = queries.spend(conn, w, "model", 100)
    g = _groups(by_model)
    assert by_model["totals"]["cost_pusd"] == total and by_model["totals"]["requests"] == 4
    assert g["a"]["cost_pusd"] == CUT_PUSD, "the cut stream's cost belongs to model a, which billed it"
    assert g["a"]["requests"] == 0 and g["a"]["estimated_requests"] == 1 and g["a"]["prompt_tokens"] == 100
    assert g["b"]["cost_pusd"] == SERVED_PUSD + SINGLE_PUSD and g["b"]["requests"] == 2
    assert g["b"]["prompt_tokens"] == 210 and g["b"]["estimated_requests"] == 0
    assert g["c"]["cost_usd"] is None and g["c"]["unpriced_requests"] == 1
    assert g["route"]["requests"] == 1 and g["route"]["errors"] == 1  # no attempt: counted for the route's name
    for by in ("model", "provider", "target", "feature", "user", "key", "route"):
        doc = queries.spend(conn, w, by, 100)
        assert sum(x["cost_pusd"] or 0 for x in doc["groups"]) == total, by
        assert sum(x["requests"] for x in doc["groups"]) == 4, by
        assert sum(x["prompt_tokens"] for x in doc["groups"]) == 320, by
    assert _groups(queries.spend(conn, w, "provider", 100))["pa"]["cost_pusd"] == CUT_PUSD
    assert _groups(queries.spend(conn, w, "target", 100))["pb/b"]["cost_pusd"] == SERVED_PUSD + SINGLE_PUSD

    # Filtered views read the raw rows and must split the same way as the rollups.
    checkout = queries.window({"since": "1h", "feature": "checkout"}, now=now + 1)
    g = _groups(queries.spend(conn, checkout, "model", 100))
    assert (g["a"]["cost_pusd"], g["a"]["requests"]) == (CUT_PUSD, 0)
    assert (g["b"]["cost_pusd"], g["b"]["requests"]) == (SERVED_PUSD, 1)
    only_a = queries.window({"since": "1h", "model": "a"}, now=now + 1)
    doc = queries.spend(conn, only_a, "feature", 100)
    assert doc["totals"]["cost_pusd"] == CUT_PUSD and _groups(doc)["checkout"]["cost_pusd"] == CUT_PUSD
    only_b = queries.window({"since": "1h", "model": "b"}, now=now + 1)
    doc = queries.spend(conn, only_b, "feature", 100)
    assert {k: v["cost_pusd"] for k, v in _groups(doc).items()} == {"checkout": SERVED_PUSD, "search": SINGLE_PUSD}
    assert doc["totals"]["requests"] == 2 and sum(sum(s["requests"]) for s in doc["series"].values()) == 2
    search = queries.window({"since": "1h", "feature": "search"}, now=now + 1)
    g = _groups(queries.spend(conn, search, "model", 100))
    assert g["route"]["requests"] == 1 and g["c"]["cost_usd"] is None and g["b"]["cost_pusd"] == SINGLE_PUSD

    # Monitors' spend split by model reads the attempts too.
    end = int((now + 1) * 1000)
    spent = monitor_queries.spend_by_window(conn, [monitor_queries.Window(0, end - 3_600_000, end)], "model")
    assert {r.value: r.pico for r in spent if r.pico} == {"a": CUT_PUSD, "b": SERVED_PUSD + SINGLE_PUSD}
    spent = monitor_queries.spend_by_window(
        conn, [monitor_queries.Window(0, end - 3_600_000, end)], "feature", [("model", "a")]
    )
    assert [(r.value, r.pico) for r in spent] == [("checkout", CUT_PUSD)]


def _scrape(m: Metrics) -> dict:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def test_metrics_give_each_attempt_its_own_model():
    m = Metrics(MetricsConfig())
    for rec in _workload(time.time()):
        m(rec)
    fams = _scrape(m)
    cost: dict[str, Decimal] = {}
    for s in fams["relaycast_cost_usd"].samples:  # one series per (model, provider, key, feature)
        cost[s.labels["model"]] = cost.get(s.labels["model"], Decimal(0)) + Decimal(str(s.value))
    assert cost == {"a": Decimal(CUT_PUSD) / 10**12, "b": Decimal(SERVED_PUSD + SINGLE_PUSD) / 10**12}
    prompt: dict[str, float] = {}
    for s in fams["relaycast_tokens"].samples:
        if s.labels["type"] == "prompt":
            prompt[s.labels["model"]] = prompt.get(s.labels["model"], 0) + s.value
    assert prompt == {"a": 100, "b": 210, "c": 10}
    unpriced = {s.labels["model"]: s.value for s in fams["relaycast_unpriced_requests"].samples}
    assert unpriced == {"c": 1}
    served: dict[str, float] = {}
    for s in fams["relaycast_requests"].samples:
        served[s.labels["model"]] = served.get(s.labels["model"], 0) + s.value
    assert served == {"b": 2, "c": 1, "route": 1}  # a request counts for where it ended


def test_metrics_sum_200000_small_costs_exactly():
    """The issue's case: 200,000 records of about $0.00059 each. Summed as floats they drift; here the exposition
    text is the exact decimal of the integer sum."""
    m = Metrics(MetricsConfig())
    costs = [590_000_000 + (i * 7919) % 1_000_003 for i in range(200_000)]  # pico-dollars, all different
    for i, c in enumerate(costs):
        m(_request(f"r{i}", (_attempt("m", c, "computed"),), 0.0))
    exact = sum(costs)
    floats = 0.0
    for c in costs:
        floats += c / 10**12
    assert Decimal(repr(floats)) != Decimal(exact) / 10**12  # the workload is one floats get wrong
    text = m.render().decode()
    line = re.search(r'^relaycast_cost_usd_total\{model="m",[^}]*\} (\S+)$', text, re.M)
    assert line is not None, text[:2000]
    assert Decimal(line.group(1)) == Decimal(exact) / 10**12, (line.group(1), exact)
    assert "e" not in line.group(1).lower()  # plain decimal text, no exponent
    small = Metrics(MetricsConfig())
    small(_request("tiny", (_attempt("m", 123, "computed"),), 0.0))
    assert re.search(r'^relaycast_cost_usd_total\{model="m",[^}]*\} 0\.000000000123$', small.render().decode(), re.M)
