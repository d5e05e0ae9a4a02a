"""A refused config value is named in the message, and a near-miss name gets a "did you mean"."""

from __future__ import annotations

import pytest

from relaycast.config import ConfigError, parse
from relaycast.config_reader import did_you_mean

PROVIDER = """
providers:
  - name: openai
    kind: openai
    api_key: sk-test-0123456789
"""


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text, env={})
    return str(e.value)


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        # unknown keys, at any level
        ("servr: {port: 8080}\n" + PROVIDER, "servr: unknown setting; did you mean 'server'?"),
        ("server: {prot: 8080}\n" + PROVIDER, "server.prot: unknown setting; did you mean 'port'?"),
        (PROVIDER + "routing: {circiut: {failures: 3}}\n", "routing.circiut: unknown setting; did you mean 'circuit'?"),
        # unknown kinds and names
        ("providers:\n  - {name: x, kind: opanai, api_key: k}\n", "unknown kind 'opanai'; did you mean 'openai'?"),
        ("providers:\n  - {name: x, kind: OpenAI, api_key: k}\n", "did you mean 'openai'?"),
        (
            PROVIDER + "models:\n  - {name: fast, targets: [opnai/gpt-4o]}\n",
            "unknown provider 'opnai'; did you mean 'openai'?",
        ),
        (
            PROVIDER + "models:\n  - {name: fast, targets: [openai/gpt-4o], strategy: weigthed}\n",
            "unknown strategy 'weigthed'; did you mean 'weighted'?",
        ),
        (
            PROVIDER + "broadcast:\n  destinations:\n    - {kind: dataodg, api_key: k}\n",
            "unknown kind 'dataodg'; did you mean 'datadog'?",
        ),
        (
            PROVIDER + "broadcast:\n  destinations:\n    - {kind: file, path: /tmp/x, pathh: y}\n",
            "unknown setting for a file destination; did you mean 'path'?",
        ),
        (
            PROVIDER + "monitors:\n  rules:\n    - {name: r, kind: budgte, key: k, limit_usd: 5}\n",
            "got 'budgte'; did you mean 'budget'?",
        ),
        (
            PROVIDER
            + "monitors:\n  rules:\n    - {name: r, kind: latency_sla, route: f, metric: p95, threshold_ms: 5}\n",
            "got 'p95'",
        ),
        # the bad value, shown
        (
            PROVIDER + "limits: {on_redis_error: robot}\n",
            "limits.on_redis_error: must be 'open' or 'closed', got 'robot'",
        ),
        (
            PROVIDER + "server: {header_timeout: -5}\n",
            "server.header_timeout: expected a positive number of seconds, got -5",
        ),
        (PROVIDER + "server: {port: -5}\n", "server.port: -5 is out of range"),
        (PROVIDER + "monitors: {interval_s: 0.5}\n", "must be at least 1 second, got 0.5"),
        (
            PROVIDER + "monitors:\n  rules:\n    - {name: r, kind: budget, key: k, limit_usd: -5}\n",
            "limit_usd: must be more than 0, got -5",
        ),
        (
            PROVIDER + "monitors:\n  rules:\n    - {name: r, kind: budget, key: k, period: week, limit_usd: 5}\n",
            "must be 'day' or 'month', got 'week'",
        ),
        (PROVIDER + "limits: {per_user: {rpm: -5}}\n", "got -5"),
    ],
)
def test_the_message_names_the_bad_value_or_the_likely_one(yaml: str, expected: str) -> None:
    assert expected in _error(yaml)


def test_secrets_in_refused_urls_are_not_repeated() -> None:
    msg = _error(PROVIDER + "limits: {redis_url: 'http://user:hunter2@redis:6379'}\n")
    assert "got scheme 'http'" in msg
    assert "hunter2" not in msg
    msg = _error(PROVIDER + "monitors:\n  notify:\n    - {kind: slack, url: 'hooks.slack.com/services/T0/B0/s3cr3t'}\n")
    assert "s3cr3t" not in msg
    assert "got scheme '(none)'" in msg


def test_did_you_mean_only_for_a_near_miss() -> None:
    assert did_you_mean("stratgy", {"strategy", "targets"}) == "; did you mean 'strategy'?"
    assert did_you_mean("zzz", {"strategy", "targets"}) == ""
    assert did_you_mean(5, {"strategy"}) == ""


def test_a_provider_key_or_header_with_a_line_break_is_refused_without_repeating_it() -> None:
    with pytest.raises(ConfigError) as e:  # a key read from a file with its trailing newline
        parse("providers:\n  - {name: openai, kind: openai, api_key: '${KEY}'}\n", env={"KEY": "sk-secret-0123\n"})
    assert "providers[0].api_key: holds a line break" in str(e.value) and "sk-secret" not in str(e.value)
    msg = _error(PROVIDER.replace("api_key:", 'headers: {x-team: "ml\\r\\nx-evil: 1"}\n    api_key:'))
    assert "providers[0].headers.x-team: holds a line break" in msg
    msg = _error(PROVIDER.replace("api_key:", 'headers: {x-team: "équipe ✓"}\n    api_key:'))
    assert "providers[0].headers.x-team: holds a character outside Latin-1" in msg
