"""One formatting of money: the CLI's `fmt_money` (relaycast/cli/report_format.py) writes what the dashboard's
`money()` (relaycast/dashboard/static/app.js) writes, checked against that very function run by Node when Node is
installed, and against fixed expectations always."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from relaycast.cli.report import _usd
from relaycast.cli.report_format import fmt_money

APP_JS = Path(__file__).resolve().parents[2] / "relaycast" / "dashboard" / "static" / "app.js"

EXPECTED = {
    "0": "$0.00",
    "0.000000": "$0.00",
    "1": "$1.00",
    "1.005": "$1.01",
    "12.3456": "$12.35",
    "1234.5": "$1,234.50",
    "1234567.891": "$1,234,567.89",
    "0.5": "$0.50",
    "0.123456": "$0.123",
    "0.1": "$0.10",
    "0.01": "$0.01",
    "0.0123": "$0.0123",
    "0.00024": "$0.00024",
    "0.000027": "$0.000027",
    "0.0000271828": "$0.0000272",
    "0.00238": "$0.00238",
    "0.0009996": "$0.001",
    "0.000000000001": "$<0.0000000001",
    "-0.5": "-$0.50",
    "-12.3": "-$12.30",
}


def test_fmt_money_rules():
    for text, want in EXPECTED.items():
        assert fmt_money(text) == want, text
        assert fmt_money(Decimal(text)) == want, text
    assert fmt_money(None) == "-" and fmt_money("") == "-" and fmt_money("n/a") == "n/a"
    assert _usd(None) == "unpriced" and _usd("0.00024") == "$0.00024" and _usd("1234.5") == "$1,234.50"


def _js_money() -> str:
    src = APP_JS.read_text()
    m = re.search(r"^function money\(v\) \{.*?^\}", src, re.S | re.M)
    assert m, "app.js has no money() function"
    return m.group(0)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_fmt_money_is_the_dashboards_money():
    script = (
        _js_money()
        + f"\nconst xs = {json.dumps(list(EXPECTED))};"
        + "\nprocess.stdout.write(JSON.stringify(xs.map((x) => money(x))));"
    )
    out = subprocess.run(
        ["node", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"LANG": "en_US.UTF-8", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    js = json.loads(out.stdout)
    assert dict(zip(EXPECTED, js, strict=True)) == {k: fmt_money(k) for k in EXPECTED}
