"""`relaycast prices update` against a local HTTP server serving genai-prices-format data (never the internet), what it
says changed, the file it stores, `relaycast prices show` reading it, and a gateway pricing requests with it from its
start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from relaycast.costs.money import pico_from_usd
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config


def provider(pid: str, match: dict[str, Any], models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": pid,
        "name": pid.title(),
        "api_pattern": f"https://api\\.{pid}\\.example",
        "model_match": match,
        "models": [{"id": m, "match": {"equals": m}, "prices": p} for m, p in models.items()],
    }


ANTHROPIC = provider(
    "anthropic",
    {"contains": "claude"},
    {
        "claude-3-5-haiku-latest": {
            "input_mtok": "0.8",
            "output_mtok": "4",
            "cache_read_mtok": "0.08",
            "cache_write_mtok": "1",
            "cache_write_1h_mtok": "1.6",
        }
    },
)
BEFORE = [
    provider(
        "openai",
        {"starts_with": "gpt-"},
        {
            "gpt-4o-mini": {"input_mtok": "0.15", "output_mtok": "0.6", "cache_read_mtok": "0.075"},
            "gpt-4o": {"input_mtok": "2.5", "output_mtok": "10"},
            "gpt-3.5-turbo": {"input_mtok": "0.5", "output_mtok": "1.5"},
        },
    ),
    ANTHROPIC,
]
AFTER = [
    provider(
        "openai",
        {"starts_with": "gpt-"},
        {
            # ten times the price, with a long-context tier: unmistakably this file's
            "gpt-4o-mini": {
                "input_mtok": {"base": "1.5", "tiers": [{"start": 1000, "price": "3"}]},
                "output_mtok": "6",
                "cache_read_mtok": "0.75",
            },
            "gpt-4o": {"input_mtok": "2.5", "output_mtok": "10"},
            "gpt-5": {"input_mtok": "1.25", "output_mtok": "10"},
        },
    ),
    ANTHROPIC,
]


class DataServer:
    """Serves `body` at /data.json on loopback; counts requests."""

    def __init__(self) -> None:
        self.body = b""
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200 if self.path == "/data.json" else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, data: Any) -> None:
        self.body = data if isinstance(data, bytes) else json.dumps(data).encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def data_server() -> Iterator[DataServer]:
    s = DataServer()
    yield s
    s.stop()


def relaycast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relaycast", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_update_says_what_changed_and_show_reads_the_stored_data(data_server: DataServer, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    data_server.serve(BEFORE)
    first = relaycast("prices", "update", "--url", data_server.url, "--prices-file", str(path))
    assert first.returncode == 0, first.stderr
    stored = json.loads(path.read_text())
    assert stored["url"] == data_server.url and stored["data"] == BEFORE and stored["format"] == 1

    data_server.serve(AFTER)
    second = relaycast("prices", "update", "--url", data_server.url, "--prices-file", str(path))
    assert second.returncode == 0, second.stderr
    out = second.stdout
    assert "2 providers, 4 models" in out
    assert f"compared with genai-prices data fetched from {data_server.url}" in out
    assert "1 added, 1 changed, 1 removed" in out
    lines = {line.strip() for line in out.splitlines()}
    assert {"added: openai/gpt-5", "changed: openai/gpt-4o-mini", "removed: openai/gpt-3.5-turbo"} <= lines
    assert data_server.hits == 2

    shown = relaycast("prices", "show", "gpt-4o-mini", "-p", "openai", "--prices-file", str(path), "--json")
    assert shown.returncode == 0, shown.stderr
    (d,) = json.loads(shown.stdout)
    assert d["source"] == "catalog" and d["catalog_model"] == "openai/gpt-4o-mini"
    assert d["catalog"].startswith(f"genai-prices data fetched from {data_server.url} at ")
    assert d["usd_per_million_tokens"]["input"] == "1.5" and d["usd_per_million_tokens"]["cached input"] == "0.75"
    assert d["above_prompt_tokens"] == {
        "1000": {"input": "3", "cached input": "0.75", "cache write": "3", "output": "6", "reasoning": "6"}
    }
    gone = relaycast("prices", "show", "gpt-3.5-turbo", "-p", "openai", "--prices-file", str(path))
    assert gone.returncode == 1 and "unpriced" in gone.stdout


def test_a_failed_update_keeps_the_stored_data(data_server: DataServer, tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    data_server.serve(BEFORE)
    assert relaycast("prices", "update", "--url", data_server.url, "--prices-file", str(path)).returncode == 0
    before = path.read_bytes()
    for bad in (b"<html>not json</html>", json.dumps([{"id": "x"}]).encode(), b"[]"):
        data_server.serve(bad)
        r = relaycast("prices", "update", "--url", data_server.url, "--prices-file", str(path))
        assert r.returncode == 1 and "could not update prices" in r.stderr, r.stderr
        assert path.read_bytes() == before
    unreachable = relaycast("prices", "update", "--url", "http://127.0.0.1:9/data.json", "--prices-file", str(path))
    assert unreachable.returncode == 1 and path.read_bytes() == before


def test_the_gateway_prices_with_the_fetched_data_from_its_start(
    fake: Fake, data_server: DataServer, tmp_path: Path
) -> None:
    path = tmp_path / "prices.json"
    data_server.serve(AFTER)
    assert relaycast("prices", "update", "--url", data_server.url, "--prices-file", str(path)).returncode == 0
    records = tmp_path / "records.jsonl"
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: local, kind: file, path: "{records}", flush_interval: 0.1}}
"""
    gw = GatewayProcess(
        standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "RELAYCAST_PRICES_FILE": str(path)}
    ).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (records.exists() and records.read_text().strip()):
            time.sleep(0.1)
    finally:
        gw.stop()
    (rec,) = map(json.loads, records.read_text().splitlines())
    u = rec["attempts"][-1]["usage"]
    assert u["prompt_tokens"] <= 1000  # under the file's tier
    want = (
        (u["prompt_tokens"] - u["cached_tokens"]) * Decimal("1.5")
        + u["cached_tokens"] * Decimal("0.75")
        + u["completion_tokens"] * Decimal("6")
    ) / 10**6
    assert rec["attempts"][-1]["cost_source"] == "computed"
    assert pico_from_usd(rec["cost_usd"], exact=True) == pico_from_usd(want, exact=True) > 0
    assert data_server.hits == 1  # the gateway itself fetched nothing
