"""Limits in one process (in memory), keys through the CLI, and Redis being unreachable, failing open and closed."""

from __future__ import annotations

import os
import subprocess
import sys

import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import admin_get

KEY = "rk-limits-test-key-000000001"
KEYS = f"""
keys:
  - {{name: small, secret: {KEY}, rpm: 3}}
limits:
  per_user: {{rpm: 2}}
"""


def _call(gw: GatewayProcess, key: str, **kw) -> tuple[int, dict, dict]:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=kw.pop("model", "fakeai/gpt-4o-mini"), messages=[{"role": "user", "content": "hi"}], **kw
        )
        return raw.status_code, {}, dict(raw.headers)
    except openai.APIStatusError as e:
        return e.status_code, e.response.json(), dict(e.response.headers)


@pytest.fixture(scope="module")
def limited(fake):
    gw = GatewayProcess(standard_config(fake.url, KEYS), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield gw
    gw.stop()


def test_requests_per_minute_per_key_and_per_user_in_memory(limited):
    assert _call(limited, KEY, user="u1")[0] == 200
    assert _call(limited, KEY, user="u1")[0] == 200
    status, body, headers = _call(limited, KEY, user="u1")  # the user's limit (2) before the key's (3)
    assert status == 429 and "user 'u1'" in body["error"]["message"] and int(headers["retry-after"]) >= 1
    assert _call(limited, KEY, user="u2")[0] == 200  # another user: the key's third request
    status, body, _ = _call(limited, KEY, user="u3")
    assert (
        status == 429
        and "key 'small'" in body["error"]["message"]
        and "3 requests per minute" in body["error"]["message"]
    )
    _, stats = admin_get(limited.url, "/admin/stats")
    assert stats["limits"]["backend"] == "memory" and stats["limits"]["rejected"]["rpm"] == 2


def test_tokens_per_minute_counts_real_usage(fake):
    gw = GatewayProcess(
        standard_config(fake.url, f"keys: [{{name: t, secret: {KEY}, tpm: 300}}]"),
        env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    ).wait_ready()
    try:
        # The first request of a window may not be larger than the whole minute: 429, and retrying cannot help.
        status, body, headers = _call(gw, KEY, model="fakeai/gpt-4o-mini@tokens=5", max_tokens=400)
        assert status == 429 and "Request too large" in body["error"]["message"] and "retry-after" not in headers
        assert "Limit 300, Requested 4" in body["error"]["message"]
        assert _call(gw, KEY, model="fakeai/gpt-4o-mini@tokens=150", max_tokens=150)[0] == 200
        status, body, _ = _call(gw, KEY, model="fakeai/gpt-4o-mini@tokens=150", max_tokens=150)
        assert (
            status == 429 and body["error"]["type"] == "tokens" and "300 tokens per minute" in body["error"]["message"]
        )
        assert _call(gw, KEY, model="fakeai/gpt-4o-mini@tokens=5", max_tokens=5)[0] == 200  # a small one still fits
    finally:
        gw.stop()


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_unreachable_keeps_limits_in_the_replica_or_fails_closed_and_budgets_fail_closed(fake, mode):
    budget_key = "rk-limits-budget-key-0000001"
    extra = (
        f"keys: [{{name: k, secret: {KEY}, rpm: 2}}, {{name: b, secret: {budget_key}, budget_day_usd: 5}}]\n"
        f"limits: {{redis_url: 'redis://127.0.0.1:1/0', on_redis_error: {mode}, redis_timeout_ms: 100}}"
    )
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        statuses = [_call(gw, KEY)[0] for _ in range(3)]
        # open: this replica's own limits stand in (2 a minute), never no limit at all; closed: 503.
        assert statuses == ([200, 200, 429] if mode == "open" else [503, 503, 503])
        status, body, _ = _call(gw, budget_key)  # budgets fail closed unless budgets_on_redis_error: open
        assert status == 503 and body["error"]["code"] == "limiter_unavailable"
        assert ("budgets fail closed" if mode == "open" else "fail closed") in body["error"]["message"]
        _, stats = admin_get(gw.url, "/admin/stats")
        assert stats["limits"]["redis_errors"] >= 4
        assert stats["limits"]["admitted_while_redis_down"] == (2 if mode == "open" else 0)
        assert "limiter_redis_unavailable" in gw.log() and "mode=" + mode in gw.log()
    finally:
        gw.stop()


def test_keys_cli_create_list_rotate_revoke(fake):
    gw = GatewayProcess(standard_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    env = {**os.environ, "RELAYCAST_ADMIN_KEY": ADMIN_KEY}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "relaycast", "keys", *args, "--url", gw.url],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    try:
        assert _call(gw, "anything")[0] == 200  # no keys yet: the gateway is open
        made = cli(
            "create", "team-c", "--owner", "c@example.com", "--models", "fakeai/*", "--rpm", "100", "--budget-day", "5"
        )
        assert made.returncode == 0, made.stderr
        secret = made.stdout.strip()
        assert secret.startswith("rk-") and "shown once" in made.stderr
        assert _call(gw, secret)[0] == 200
        assert _call(gw, "anything")[0] == 401  # once a key exists, keys are required
        listed = cli("list")
        assert "team-c" in listed.stdout and secret[:8] in listed.stdout and secret not in listed.stdout
        assert "rpm 100" in listed.stdout and "budget_day_usd 5" in listed.stdout
        rotated = cli("rotate", "team-c")
        new = rotated.stdout.strip()
        assert rotated.returncode == 0 and new != secret
        assert _call(gw, secret)[0] == 401 and _call(gw, new)[0] == 200
        assert cli("revoke", "team-c").returncode == 0
        status, body, _ = _call(gw, new)
        assert status == 401 and "revoked" in body["error"]["message"]
        again = cli("revoke", "team-c")
        assert again.returncode == 1 and "No active key" in again.stderr
        dup = cli("create", "team-c")
        assert dup.returncode == 1 and "exists already" in dup.stderr
        assert secret not in gw.log() and new not in gw.log()
        # A key past its expiry: 401, saying so.
        import json
        import time
        import urllib.request

        req = urllib.request.Request(
            gw.url + "/admin/keys",
            method="POST",
            data=json.dumps({"name": "brief", "expires_in_s": 1}).encode(),
            headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:
            brief = json.loads(r.read())["secret"]
        assert _call(gw, brief)[0] == 200
        time.sleep(1.1)
        status, body, _ = _call(gw, brief)
        assert status == 401 and "expired" in body["error"]["message"]
    finally:
        gw.stop()
