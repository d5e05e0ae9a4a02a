"""`relaycast monitors export`: Datadog monitor definitions validated against the monitor API's schema (the
`datadog-api-client` models), and Prometheus alerting rules checked with `promtool` (Debian's prometheus package)
and evaluated in `promtool test rules` against series shaped like relaycast's /metrics."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CONFIG = """
providers:
  - {name: openai, kind: openai, api_key: sk-test-0123456789}
  - {name: claude, kind: anthropic, api_key: sk-ant-test-0123456789}
models:
  - {name: fast, targets: [openai/gpt-4o-mini, claude/claude-3-5-haiku-latest]}
broadcast:
  destinations:
    - {name: dd, kind: datadog, api_key: dd-key-0123456789abcdef0123456789ab, ml_app: checkout, env: prod}
monitors:
  notify: [{name: hook, kind: webhook, url: 'http://127.0.0.1:9/hook'}]
  rules:
    - {name: hourly-spend-spike, kind: spend_spike, window: 1h, baseline_windows: 6, threshold_pct: 200, min_usd: 5}
    - {name: user-spike, kind: spend_spike, window: 1h, by: user, baseline: same_hour, baseline_windows: 3, threshold_pct: 300}
    - {name: fast-p99, kind: latency_sla, route: fast, metric: p99, threshold_ms: 2000, window: 5m}
    - {name: mini-ttft, kind: latency_sla, model: gpt-4o-mini, metric: ttft_p99, threshold_ms: 800, window: 10m}
    - {name: openai-errors, kind: error_rate, provider: openai, threshold_pct: 5, min_requests: 20}
    - {name: openai-429s, kind: error_rate, provider: openai, error_class: rate_limit, threshold_pct: 10}
    - {name: team-a-daily, kind: budget, key: team-a, period: day, limit_usd: 50}
    - {name: gpt4o-monthly, kind: budget, model: gpt-4o, period: month, limit_usd: 3000}
"""


def _export(tmp_path: Path, fmt: str) -> tuple[str, str]:
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(CONFIG)
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "monitors", "export", "--config", str(cfg), "--format", fmt],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


def test_datadog_export_is_valid_for_the_monitor_api(tmp_path):
    from datadog_api_client.configuration import Configuration
    from datadog_api_client.model_utils import validate_and_convert_types
    from datadog_api_client.v1.model.monitor import Monitor
    from datadog_api_client.v1.model.monitor_options import MonitorOptions
    from datadog_api_client.v1.model.monitor_thresholds import MonitorThresholds
    from datadog_api_client.v1.model.monitor_type import MonitorType

    out, notes = _export(tmp_path, "datadog")
    monitors = json.loads(out)
    assert len(monitors) == 8  # one per configured rule
    for m in monitors:
        # Types through the client's own deserializer; names of fields, options and thresholds against its models.
        validate_and_convert_types(m, (Monitor,), ["monitor"], True, True, Configuration())
        assert set(m) <= set(Monitor.openapi_types) and m["type"] in MonitorType.allowed_values
        assert set(m["options"]) <= set(MonitorOptions.openapi_types)
        assert set(m["options"]["thresholds"]) <= set(MonitorThresholds.openapi_types)
        # The query's threshold and the critical threshold agree, and the scope is the broadcast's ml_app and env.
        assert m["query"].rsplit(">", 1)[1].strip() == f"{m['options']['thresholds']['critical']:g}"
        assert "ml_app:checkout" in m["query"] and "env:prod" in m["query"]
        assert "dd-key-0123456789" not in json.dumps(m)
    by_name = {m["name"]: m for m in monitors}
    spike = by_name["[relaycast] hourly-spend-spike"]["query"]
    assert spike.startswith("pct_change(sum(last_1h),last_1h):sum:ml_obs.span.llm.total.cost{") and spike.endswith(
        "> 200"
    )
    assert by_name["[relaycast] user-spike"]["query"].startswith("pct_change(sum(last_1h),last_1d):")
    p99 = by_name["[relaycast] fast-p99"]["query"]
    assert p99.startswith("percentile(last_5m):p99:ml_obs.span.duration{") and p99.endswith("> 2")
    errs = by_name["[relaycast] openai-errors"]["query"]
    assert "ml_obs.span.error{" in errs and "model_provider:openai" in errs and errs.endswith("* 100 > 5")
    # What Datadog cannot express is said, not hidden.
    assert "user-spike: Datadog's LLM Observability metrics have no user tag" in notes
    assert "no user tag" in by_name["[relaycast] user-spike"]["message"]


PROMTOOL = shutil.which("promtool") or next(
    (p for p in ("/opt/prometheus-deb/usr/bin/promtool",) if os.path.exists(p)), None
)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus package) is not at hand")
def test_prometheus_rules_pass_promtool_and_fire_on_matching_series(tmp_path):
    out, notes = _export(tmp_path, "prometheus")
    rules = tmp_path / "rules.yml"
    rules.write_text(out)
    check = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 8 rules found" in check.stdout
    assert "no calendar month" in notes

    # Unit test the error-rate rule with promtool: 10% errors on openai over 5 minutes fires, 2% does not.
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'relaycast_attempts_total{provider="openai",model="gpt-4o-mini",target="openai/gpt-4o-mini",outcome="ok"}',
                        "values": "0+90x10",
                    },
                    {
                        "series": 'relaycast_attempts_total{provider="openai",model="gpt-4o-mini",target="openai/gpt-4o-mini",outcome="upstream_5xx"}',
                        "values": "0+10x10",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "Relaycast_openai_errors",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "relaycast_rule": "openai-errors",
                                    "relaycast_kind": "error_rate",
                                },
                                "exp_annotations": {
                                    "summary": "openai error rate over 5%",
                                    "relaycast_rule": "openai-errors",
                                },
                            }
                        ],
                    },
                    {"eval_time": "10m", "alertname": "Relaycast_openai_429s", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    run = subprocess.run(
        [PROMTOOL, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_export_refuses_a_config_without_rules(tmp_path):
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text("providers: [{name: openai, kind: openai, api_key: k}]\n")
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "monitors", "export", "--config", str(cfg), "--format", "prometheus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "no monitor rules" in r.stderr


def test_a_provider_rule_is_scoped_by_the_vendor_datadog_spans_carry(tmp_path):
    """Spans carry the vendor as `model_provider`: a rule on a provider named `gpt` (kind openai) is scoped as
    `model_provider:openai`, and the export says so."""
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(
        CONFIG.replace("{name: openai, kind: openai", "{name: gpt, kind: openai")
        .replace("openai/gpt-4o-mini", "gpt/gpt-4o-mini")
        .replace("provider: openai", "provider: gpt")
    )
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "monitors", "export", "--config", str(cfg), "--format", "datadog"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    errs = {m["name"]: m for m in json.loads(r.stdout)}["[relaycast] openai-errors"]
    assert "model_provider:openai" in errs["query"] and "model_provider:gpt" not in errs["query"]
    assert "provider gpt is scoped as openai" in r.stderr
