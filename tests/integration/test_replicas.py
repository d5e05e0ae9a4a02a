"""Two gateway replicas (separate processes, different ports) sharing this machine's Redis and Postgres, traffic
split across them with the `openai` SDK: limits, budgets, routing health, monitors and keys hold across both."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.capture import CaptureServer
from tests.conftest import ADMIN_KEY, GUARDED_ALIAS, UPSTREAM_KEY, GatewayProcess
from tests.store_helpers import admin_get, postgres_database, wait_stored

REDIS_DB = "redis://127.0.0.1:6379/5"
RPM_KEY = "rk-test-rpm-key-0123456789"
BUDGET_KEY = "rk-test-budget-key-0123456789"
OPEN_KEY = "rk-test-open-key-0123456789"
BUDGET_USD = 0.01

CONFIG = (
    """
admin_key: {admin}
store: {{url: '{pg}'}}
redis_url: {redis}
routing: {{circuit: {{failures: 3, cooldown_s: 60}}}}
keys:
  - {{name: rpm-limited, secret: {rpm_key}, rpm: 10}}
  - {{name: budgeted, secret: {budget_key}, budget_day_usd: {budget}}}
  - {{name: open, secret: {open_key}, models: ['fakeai/*', guarded]}}
providers:
  - {{name: fakeai, kind: openai_compatible, base_url: '{fake}', api_key: '{upstream}', models: [gpt-4o-mini, gpt-4o]}}
"""
    + GUARDED_ALIAS
    + """monitors:
  interval_s: 1
  notify: [{{name: hook, kind: webhook, url: '{hook}/hook'}}]
  rules:
    - {{name: bad-errors, kind: error_rate, provider: bad, threshold_pct: 20, min_requests: 3, window: 5m}}
"""
)


@pytest.fixture(scope="module")
def replicas(fake) -> Iterator[dict]:
    import redis

    r = redis.Redis.from_url(REDIS_DB)
    r.flushdb()
    hook = CaptureServer().start()
    gen = postgres_database()
    pg = next(gen)
    text = CONFIG.format(
        admin=ADMIN_KEY,
        pg=pg,
        redis=REDIS_DB,
        rpm_key=RPM_KEY,
        budget_key=BUDGET_KEY,
        open_key=OPEN_KEY,
        budget=BUDGET_USD,
        fake=fake.url,
        upstream=UPSTREAM_KEY,
        hook=hook.url,
    )
    a = GatewayProcess(text).wait_ready()
    b = GatewayProcess(text).wait_ready()
    yield {"a": a, "b": b, "pg": pg, "hook": hook, "redis": r}
    a.stop()
    b.stop()
    hook.stop()
    gen.close()
    r.flushdb()


def _client(gw: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=30)


def _call(client: openai.OpenAI, model: str = "fakeai/gpt-4o-mini", **kw) -> tuple[int, dict]:
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}], **kw
        )
        return raw.status_code, {"headers": dict(raw.headers)}
    except openai.APIStatusError as e:
        return e.status_code, {"body": e.response.json(), "headers": dict(e.response.headers)}


def test_a_rate_limit_of_n_per_minute_admits_n_across_both_replicas(replicas):
    a, b = replicas["a"], replicas["b"]
    clients = [_client(a, RPM_KEY), _client(b, RPM_KEY)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: _call(clients[i % 2]), range(30)))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    refused = next(d for s, d in results if s == 429)
    err = refused["body"]["error"]
    assert err["type"] == "requests" and err["code"] == "rate_limit_exceeded"
    assert "rpm-limited" in err["message"] and "10 requests per minute" in err["message"]
    assert 1 <= int(refused["headers"]["retry-after"]) <= 60


def test_a_budget_is_not_overshot_by_more_than_one_estimate_under_concurrency(replicas):
    a, b = replicas["a"], replicas["b"]
    clients = [_client(a, BUDGET_KEY), _client(b, BUDGET_KEY)]
    model = "fakeai/gpt-4o@tokens=100"  # about $0.001 a request: 100 output tokens at $10 per million
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda i: _call(clients[i % 2], model, max_tokens=100, extra_headers={"x-request-id": f"budget-{i}"}),
                range(40),
            )
        )
    ok = [i for i, (s, _) in enumerate(results) if s == 200]
    refused = [d for s, d in results if s == 429]
    assert refused and ok
    err = refused[0]["body"]["error"]
    assert err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota" and "budgeted" in err["message"]
    wait_stored(a.url, [results[i][1]["headers"]["x-relaycast-request-id"] for i in ok])
    _, spend = admin_get(a.url, "/admin/analytics/spend?by=key&since=1h")
    spent = Decimal(next(g for g in spend["groups"] if g["key"] == "budgeted")["cost_usd"])
    one_estimate = Decimal("0.00103")  # ~3 prompt tokens at $2.50 + 100 output tokens at $10, per million
    assert spent <= Decimal(str(BUDGET_USD)) + one_estimate, spent
    assert spent >= Decimal(str(BUDGET_USD)) - 2 * one_estimate  # and the budget was used, not refused early


def test_a_target_failing_on_one_replica_is_avoided_by_the_other(replicas):
    a, b = replicas["a"], replicas["b"]
    ca, cb = _client(a, OPEN_KEY), _client(b, OPEN_KEY)
    for _ in range(3):  # replica A: three 503s from `bad` open its circuit (each request fails over and succeeds)
        status, d = _call(ca, "guarded")
        assert status == 200 and d["headers"]["x-relaycast-attempts"] == "2"
    # Within a second or so (each replica shares every 0.5 s) B holds the circuit A opened, and says so.
    deadline = time.monotonic() + 5
    while "bad/gpt-4o-mini" not in admin_get(b.url, "/admin/routes")[1]["shared"]["open"]:
        assert time.monotonic() < deadline, "replica B never learned of A's open circuit"
        time.sleep(0.1)
    # B's first request skips `bad` without trying it: B never saw it fail (three failures of its own would have
    # opened its own circuit).
    status, d = _call(cb, "guarded")
    assert status == 200 and d["headers"]["x-relaycast-attempts"] == "1"
    assert d["headers"]["x-relaycast-target"] == "fakeai/gpt-4o-mini"


def test_monitors_on_both_replicas_alert_once(replicas):
    a, hook = replicas["a"], replicas["hook"]
    ca = _client(a, OPEN_KEY)
    for _ in range(3):
        _call(ca, "bad/gpt-4o-mini")  # 503s on the bad provider, whatever its circuit says
    hook.wait_for(
        lambda: len([p for p in hook.posts("/hook") if json.loads(p.body)["rule"] == "bad-errors"]) >= 1, timeout=15
    )
    time.sleep(3)  # three more evaluation rounds on each replica
    alerts = [json.loads(p.body) for p in hook.posts("/hook") if json.loads(p.body)["rule"] == "bad-errors"]
    assert [x["event"] for x in alerts] == ["alert"]


def test_keys_are_hashed_and_revocation_reaches_every_replica_within_a_second(replicas):
    import psycopg

    a, b = replicas["a"], replicas["b"]
    req = urllib.request.Request(
        a.url + "/admin/keys",
        method="POST",
        headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        data=json.dumps(
            {"name": "team-b", "owner": "b@example.com", "models": ["fakeai/*"], "user": "svc-b", "rpm": 1000}
        ).encode(),
    )
    with urllib.request.urlopen(req) as r:
        assert r.status == 201
        created = json.loads(r.read())
    secret = created["secret"]
    assert secret.startswith("rk-") and created["key"]["prefix"] == secret[:8]
    # The secret is nowhere in the database: only its hash.
    with psycopg.connect(replicas["pg"]) as c:
        rows = c.execute("SELECT * FROM gateway_keys").fetchall()
        dump = repr(rows)
    assert secret not in dump and __import__("hashlib").sha256(secret.encode()).hexdigest() in dump
    # Usable on the other replica within a second; attribution defaults apply; a model it may not use is a 403.
    cb = _client(b, secret)
    deadline = time.monotonic() + 1.5
    while (status := _call(cb)[0]) == 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert status == 200
    status, d = _call(cb, "guarded")
    assert (
        status == 403 and d["body"]["error"]["type"] == "permission_error" and "team-b" in d["body"]["error"]["message"]
    )
    # Revoked through A: 401 on B within a second.
    rv = urllib.request.Request(
        a.url + "/admin/keys/team-b/revoke", method="POST", data=b"", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    urllib.request.urlopen(rv).close()
    t0 = time.monotonic()
    while (status := _call(cb)[0]) == 200:
        assert time.monotonic() - t0 < 1.0, "revocation took longer than a second"
        time.sleep(0.02)
    status, d = _call(cb)
    assert status == 401 and d["body"]["error"]["code"] == "unauthorized" and "revoked" in d["body"]["error"]["message"]
    assert _call(_client(b, "rk-not-a-key-at-all-000000"))[0] == 401
    # Nothing secret in either replica's log, nor in the key listing.
    _, listing = admin_get(b.url, "/admin/keys")
    assert secret not in json.dumps(listing) and any(
        k["name"] == "team-b" and k["state"] == "revoked" for k in listing["keys"]
    )
    for gw in (a, b):
        assert secret not in gw.log() and RPM_KEY not in gw.log()


def test_keys_admin_api_needs_the_admin_key(replicas):
    a = replicas["a"]
    req = urllib.request.Request(a.url + "/admin/keys", headers={"authorization": f"Bearer {OPEN_KEY}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401
