"""Monitor rules evaluated against a store written directly: the same-hour baseline of a spend spike, its floor,
and its `by` scope naming the value that grew (the end-to-end monitor tests cover the `previous` baseline)."""

from __future__ import annotations

from relaycast import config as config_mod
from relaycast.monitors.engine import evaluate
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import rows
from relaycast.store.db import Connection
from relaycast.store.settings import StoreConfig
from relaycast.store.writer import write_batch

NOW = 1_790_000_000.0
DAY = 86400


def _rec(i: int, at: float, user: str, pico: int) -> RequestRecord:
    a = Attempt(
        target="p/m",
        provider="p",
        model="m",
        started_ns=0,
        duration_ns=1_000_000,
        usage=Usage(prompt_tokens=10),
        cost_pusd=pico,
        cost_source="computed",
    )
    return RequestRecord(
        request_id=f"r{i}",
        endpoint="chat.completions",
        model_requested="m",
        stream=False,
        started_unix_ns=int(at * 1e9),
        duration_ns=1_000_000,
        status_code=200,
        attribution=Attribution(user=user),
        attempts=(a,),
    )


def _rule(text: str):
    cfg = config_mod.parse(f"providers: [{{name: p, kind: openai, api_key: k}}]\nmonitors: {{rules: [{text}]}}", env={})
    return cfg.monitors.rules[0]


def test_same_hour_baseline_floor_and_scope(tmp_path):
    conn = Connection(StoreConfig(path=str(tmp_path / "s.db")))
    conn.migrate()
    recs, i = [], 0
    for d in (1, 2, 3):  # the same hour on three earlier days: $1 each day, from alice
        for _ in range(4):
            recs.append(_rec(i, NOW - d * DAY - 1200, "alice", 250_000_000_000))
            i += 1
    for h in range(1, 6):  # the hours just before now are busy ($5 an hour): not the same-hour baseline
        for _ in range(5):
            recs.append(_rec(i, NOW - h * 3600 - 600, "bob", 1_000_000_000_000))
            i += 1
    for _ in range(4):  # this hour: $4, three of it from mallory
        recs.append(_rec(i, NOW - 300, "mallory", 750_000_000_000))
        i += 1
    recs.append(_rec(i, NOW - 200, "alice", 1_000_000_000_000))
    write_batch(conn, rows.build(recs, Redactor(()), False))

    same = _rule(
        "{name: s, kind: spend_spike, window: 1h, baseline: same_hour, baseline_windows: 3, threshold_pct: 200, min_usd: 1}"
    )
    (f,) = evaluate(conn, same, NOW)
    # $4 now against a mean of $1 at this hour on the three days before: +300%, over the +200% threshold.
    assert f.firing and f.value == 4.0 and f.details["baseline_usd"] == 1.0 and f.details["growth_pct"] == 300.0
    top = f.details["top_contributors"][0]
    assert (top["dimension"], top["value"]) == ("user", "mallory") and "mallory" in f.message

    prev = _rule(
        "{name: p, kind: spend_spike, window: 1h, baseline: previous, baseline_windows: 5, threshold_pct: 200, min_usd: 1}"
    )
    (g,) = evaluate(conn, prev, NOW)
    assert not g.firing and g.details["baseline_usd"] == 5.0  # against the busy previous hours it is no spike

    floor = _rule(
        "{name: f, kind: spend_spike, window: 1h, baseline: same_hour, baseline_windows: 3, threshold_pct: 200, min_usd: 10}"
    )
    assert not evaluate(conn, floor, NOW)[0].firing  # +300%, but under the $10 floor

    by_user = _rule(
        "{name: u, kind: spend_spike, window: 1h, baseline: same_hour, baseline_windows: 3, threshold_pct: 200, min_usd: 1, by: user}"
    )
    firing = {x.scope for x in evaluate(conn, by_user, NOW) if x.firing}
    assert firing == {"user=mallory"}  # alice spent $1 now against her $1: no growth; mallory grew from nothing
    conn.close()


def test_an_error_rate_rule_counts_provider_failures_and_refuses_a_client_refusal_class():
    import pytest

    from relaycast.config_reader import ConfigError
    from relaycast.monitors import rules
    from relaycast.store.monitor_queries import OutcomeCount

    rule = _rule("{name: e, kind: error_rate, provider: p, threshold_pct: 20, min_requests: 5}")
    refused = [OutcomeCount(None, 2), OutcomeCount("content_policy", 5), OutcomeCount("bad_request", 3)]
    (f,) = rules.error_rate(rule, refused)
    assert not f.firing and f.value == 0.0 and f.details["attempts"] == 10 and f.details["client_refusals"] == 8
    (g,) = rules.error_rate(rule, [OutcomeCount(None, 2), OutcomeCount("upstream_5xx", 8)])
    assert g.firing and g.value == 80.0
    with pytest.raises(ConfigError, match="content_policy' is a refusal the request caused"):
        _rule("{name: e, kind: error_rate, provider: p, error_class: content_policy, threshold_pct: 5}")
