"""Error rates that agree, end to end: a real gateway, the fake upstream and a known mix of answers (successes, 429s,
503s and 400 refusals); `relaycast routes status`, `relaycast report --view errors` and `/admin/analytics/errors`
must count provider failures (the 429s and the 503s) in the error rate and show the refusals apart, with one
formatting of rates and latencies."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess
from tests.store_helpers import admin_get, wait_stored

OK, LIMITED, FAILED, REFUSED = (
    "fakeai/gpt-4o-mini",
    "fakeai/gpt-4o-mini@error=429",
    "fakeai/gpt-4o@error=503",
    ("fakeai/gpt-4o@error=400"),
)
MIX = {OK: 5, LIMITED: 3, FAILED: 2, REFUSED: 3}  # 13 attempts: 5 provider failures (38.5%), 3 refusals (23.1%)


def _config(fake_url: str) -> str:
    return f"""
admin_key: {ADMIN_KEY}
store: {{path: data/requests.db}}
routing:
  window_s: 120
  circuit: {{failures: 1000}}
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: {fake_url}
    api_key: ${{TEST_UPSTREAM_KEY}}
    models: [gpt-4o-mini, gpt-4o]
models:
  - name: fast
    targets: [fakeai/gpt-4o-mini]
"""


@pytest.fixture(scope="module")
def mixed(fake) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        ids: list[str] = []
        for model, n in MIX.items():
            for _ in range(n):
                try:
                    r = c.chat.completions.with_raw_response.create(
                        model=model, messages=[{"role": "user", "content": "hi"}]
                    )
                    ids.append(r.headers["x-request-id"])
                except openai.APIStatusError as e:
                    ids.append(e.response.headers["x-request-id"])
        wait_stored(gw.url, ids)
        yield gw
    finally:
        gw.stop()


def _cli(gw: GatewayProcess, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "relaycast", *args, "--url", gw.url, "--admin-key", ADMIN_KEY],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _row(text: str, target: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(target + " "))
    return re.split(r"\s{2,}", line.strip())


def test_routes_status_is_a_table_whose_error_rate_agrees_with_its_counts(mixed) -> None:
    out = _cli(mixed, "routes", "status")
    assert "targets over the last 2 min (routing.window_s)" in out
    header = re.split(r"\s{2,}", next(ln for ln in out.splitlines() if ln.startswith("TARGET")).strip())
    assert header[:7] == ["TARGET", "STATE", "CIRCUIT", "REQUESTS", "ERROR RATE", "FAILED", "REFUSED"]
    cols = dict(zip(header, _row(out, LIMITED), strict=True))
    # Every 429 is a provider failure: 3 of 3, not "error rate 0.0%" beside "rate_limit 3".
    assert (cols["REQUESTS"], cols["ERROR RATE"], cols["FAILED"], cols["REFUSED"]) == ("3", "100.0%", "3", "0")
    assert cols["ERRORS BY CLASS"] == "rate_limit 3"
    cols = dict(zip(header, _row(out, REFUSED), strict=True))
    assert (cols["ERROR RATE"], cols["FAILED"], cols["REFUSED"]) == ("0.0%", "0", "3")
    assert cols["ERRORS BY CLASS"] == "bad_request 3 (client)"
    cols = dict(zip(header, _row(out, OK), strict=True))
    assert (cols["REQUESTS"], cols["ERROR RATE"]) == ("5", "0.0%")
    # A latency from histogram buckets is a bound with two significant digits, never "163.873 ms".
    assert re.fullmatch(r"≤ (0\.\d{1,2}|\d\.\d|\d+) (ms|s)", cols["P99"]), cols["P99"]
    assert f"{LIMITED}: cooling for" in out


def test_routes_json_serves_the_classification_and_agreeing_numbers(mixed) -> None:
    status, body = admin_get(mixed.url, "/admin/routes")
    assert status == 200 and body["window_s"] == 120
    assert "rate_limit" in body["error_sources"]["provider"] and "bad_request" in body["error_sources"]["client"]
    w = body["targets"][FAILED]["window"]
    assert (w["requests"], w["provider_failures"], w["client_refusals"], w["error_rate"]) == (2, 2, 0, 1.0)
    w = body["targets"][REFUSED]["window"]
    assert (w["provider_failures"], w["client_refusals"], w["error_rate"], w["refusal_rate"]) == (0, 3, 0.0, 1.0)


def test_errors_analytics_separates_provider_failures_from_refusals(mixed) -> None:
    status, doc = admin_get(mixed.url, "/admin/analytics/errors?since=1h")
    assert status == 200
    p = next(x for x in doc["providers"] if x["provider"] == "fakeai")
    assert p["attempts"] == 13
    assert p["by_class"] == {"rate_limit": 3, "bad_request": 3, "upstream_5xx": 2}
    assert (p["errors"], p["refusals"], p["gateway_errors"]) == (5, 3, 0)
    assert (p["error_rate"], p["refusal_rate"]) == (round(5 / 13, 4), round(3 / 13, 4))
    assert doc["classes"] == {"bad_request": "client", "rate_limit": "provider", "upstream_5xx": "provider"}
    s = doc["series"]["fakeai"]
    assert sum(s["errors"]) == 5 and sum(s["refusals"]) == 3 and sum(s["attempts"]) == 13
    assert {c: sum(v) for c, v in s["by_class"].items()} == p["by_class"]
    assert [r for r in s["rate"] if r is not None] == [p["error_rate"]]


def test_report_writes_the_same_rate_as_the_dashboard(mixed) -> None:
    out = _cli(mixed, "report", "--view", "errors", "--since", "1h")
    row = _row(out, "fakeai")
    assert row[:6] == ["fakeai", "13", "5", "38.5%", "3", "23.1%"]
    assert "refusals are client-caused" in out
    lat = _cli(mixed, "report", "--view", "latency", "--by", "model", "--since", "1h")
    assert "successful attempts only" in lat
    cells = _row(lat, "gpt-4o-mini")
    assert cells[1] == "5" and all(re.fullmatch(r"≤ \d+(\.\d+)? (ms|s)", c) for c in cells[2:5]), cells
