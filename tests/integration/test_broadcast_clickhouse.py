"""The `clickhouse` destination against a real ClickHouse server (Debian's `clickhouse-server`, 18.16 here; CI
installs it with `apt-get install -y clickhouse-server`): a `relaycast serve` creates its table and inserts a row
per request; the rows are read back over HTTP and checked against a file sink fed by the same gateway. Test
Connection is checked through the CLI and the exporter."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest

from relaycast.costs.money import pico_from_usd
from relaycast.server.runner import free_port
from relaycast.telemetry.exporters.clickhouse import ClickHouseExporter
from relaycast.telemetry.kinds.clickhouse import ClickHouseOptions
from relaycast.telemetry.settings import DestinationConfig
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.sample_records import sample_record
from tests.servers import missing

SERVER = shutil.which("clickhouse-server") or "/usr/sbin/clickhouse-server"
USER, PASSWORD = "relay", "ch-pass-0123456789abcdef"
# A user who may insert but not run DDL (`allow_ddl = 0`, which ClickHouse 18.16 already has; newer servers say
# the same with GRANT INSERT only), and a read-only one.
WRITER, READER, OTHER_PASSWORD = "writer", "reader", "ch-other-0123456789"
TABLE = "llm_requests"

CONFIG = """<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{dir}/data/</path>
  <tmp_path>{dir}/tmp/</tmp_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709120</mark_cache_size>
</yandex>
"""
USERS = f"""<yandex>
  <profiles><default></default><no_ddl><allow_ddl>0</allow_ddl></no_ddl><ro><readonly>1</readonly></ro></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile>
      <quota>default</quota></default>
    <{USER}><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile>
      <quota>default</quota></{USER}>
    <{WRITER}><password>{OTHER_PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>no_ddl</profile>
      <quota>default</quota></{WRITER}>
    <{READER}><password>{OTHER_PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>ro</profile>
      <quota>default</quota></{READER}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"""


@dataclass
class ClickHouse:
    url: str

    def query(self, sql: str) -> str:
        req = urllib.request.Request(self.url + "/", data=sql.encode(), method="POST")
        req.add_header("X-ClickHouse-User", USER)
        req.add_header("X-ClickHouse-Key", PASSWORD)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read().decode()

    def rows(self, sql: str) -> list[dict]:
        return [json.loads(line) for line in self.query(sql + " FORMAT JSONEachRow").splitlines()]


@pytest.fixture(scope="module")
def clickhouse() -> Iterator[ClickHouse]:
    if not Path(SERVER).exists():
        missing("clickhouse-server is not installed (apt-get install -y clickhouse-server)")
    with tempfile.TemporaryDirectory(prefix="relaycast-ch-") as d:
        http = free_port()
        (Path(d) / "config.xml").write_text(CONFIG.format(http=http, tcp=free_port(), dir=d))
        (Path(d) / "users.xml").write_text(USERS)
        log = open(Path(d) / "server.log", "wb")
        proc = subprocess.Popen([SERVER, f"--config-file={d}/config.xml"], cwd=d, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{http}"
        try:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, (Path(d) / "server.log").read_text(errors="replace")
                try:
                    with urllib.request.urlopen(url + "/ping", timeout=1) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    assert time.monotonic() < deadline, "clickhouse-server did not start"
                    time.sleep(0.1)
            yield ClickHouse(url)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            log.close()


def _destination_yaml(url: str, password: str = PASSWORD) -> str:
    return (
        f'{{name: ch, kind: clickhouse, url: "{url}", user: {USER}, password: "{password}", table: {TABLE}, '
        "flush_interval: 0.1}"
    )


def test_requests_become_rows_that_agree_with_another_sink(fake: Fake, clickhouse: ClickHouse, tmp_path: Path) -> None:
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {_destination_yaml(clickhouse.url)}
    - {{name: local, kind: file, path: "{tmp_path / "records.jsonl"}", flush_interval: 0.1}}
"""
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        ids = []
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hello there"}], user="alice"
        )
        ids.append(raw.headers["x-request-id"])
        raw = c.chat.completions.with_raw_response.create(
            model="fakeai/gpt-4o", messages=[{"role": "user", "content": "and again"}], user="bob"
        )
        ids.append(raw.headers["x-request-id"])
        deadline = time.monotonic() + 15
        count = 0
        while time.monotonic() < deadline:
            try:
                count = int(clickhouse.query(f"SELECT count() FROM default.{TABLE}").strip())
            except urllib.error.HTTPError:
                count = 0  # the table is not there yet
            lines = (
                (tmp_path / "records.jsonl").read_text().splitlines() if (tmp_path / "records.jsonl").exists() else []
            )
            if count >= 2 and len(lines) >= 2:
                break
            time.sleep(0.1)
        assert count == 2, gw.log()
    finally:
        gw.stop()

    records = {r["request_id"]: r for r in map(json.loads, (tmp_path / "records.jsonl").read_text().splitlines())}
    rows = {
        r["request_id"]: r
        for r in clickhouse.rows(
            "SELECT request_id, model_requested, model, provider, user, attempts, error_class, prompt_tokens, "
            f"completion_tokens, cost_pusd, toString(cost_usd) AS cost_text, cost_source, record FROM default.{TABLE}"
        )
    }
    assert set(rows) == set(ids) == set(records)
    for rid, r in rows.items():
        rec = records[rid]
        served = rec["attempts"][-1]
        assert r["user"] == rec["attribution"]["user"]
        assert (r["model_requested"], r["model"], r["provider"]) == (
            rec["model_requested"],
            served["response_model"] or served["model"],
            served["provider"],
        )
        assert r["attempts"] == len(rec["attempts"])
        assert int(r["prompt_tokens"]) == sum((a["usage"] or {}).get("prompt_tokens", 0) for a in rec["attempts"])
        assert int(r["completion_tokens"]) == sum(
            (a["usage"] or {}).get("completion_tokens", 0) for a in rec["attempts"]
        )
        assert int(r["completion_tokens"]) > 0  # UInt64 comes quoted in JSON output
        assert int(r["cost_pusd"]) == pico_from_usd(rec["cost_usd"], exact=True)
        assert pico_from_usd(r["cost_text"], exact=True) == int(r["cost_pusd"])  # Decimal(38, 12) holds it exactly
        assert json.loads(r["record"])["request_id"] == rid
    assert rows[ids[0]]["user"] == "alice" and rows[ids[0]]["attempts"] == 2  # "fast" failed over once
    total = int(clickhouse.query(f"SELECT sum(cost_pusd) FROM default.{TABLE}").strip())
    assert total == sum(pico_from_usd(r["cost_usd"], exact=True) for r in records.values()) and total > 0
    ddl = clickhouse.query(f"SHOW CREATE TABLE default.{TABLE}")
    assert "PARTITION BY toYYYYMM(started_at)" in ddl and "ORDER BY (started_at, request_id)" in ddl


def test_broadcast_test_cli_gives_a_plain_verdict(fake: Fake, clickhouse: ClickHouse, tmp_path: Path) -> None:
    outs = {}
    for label, password in (("good", PASSWORD), ("bad", "not-the-password-42")):
        extra = f"\nbroadcast:\n  destinations:\n    - {_destination_yaml(clickhouse.url, password)}\n"
        path = tmp_path / f"{label}.yaml"
        path.write_text(standard_config(fake.url, extra))
        outs[label] = subprocess.run(
            [sys.executable, "-m", "relaycast", "broadcast", "test", "ch", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "PATH": "/usr/bin:/bin"},
            cwd=tmp_path,
        )
    good, bad = outs["good"], outs["bad"]
    assert good.returncode == 0, good.stdout + good.stderr
    assert "OK   ch (clickhouse): ok: ClickHouse " in good.stdout
    assert f"accepted user '{USER}'" in good.stdout
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL ch (clickhouse): invalid credentials" in bad.stdout and "wrong user or password" in bad.stdout
    assert PASSWORD not in good.stdout + good.stderr and "not-the-password-42" not in bad.stdout + bad.stderr


def test_test_connection_names_an_unknown_database(clickhouse: ClickHouse) -> None:
    async def main() -> str:
        o = ClickHouseOptions(url=clickhouse.url, user=USER, password=PASSWORD, database="no_such_db")
        async with aiohttp.ClientSession() as session:
            r = await ClickHouseExporter(DestinationConfig(name="ch", kind="clickhouse", options=o), session).test()
        assert not r.ok
        return r.message

    assert asyncio.run(main()) == "database 'no_such_db' does not exist: create it (CREATE DATABASE no_such_db)"


def test_a_user_who_may_not_create_tables_writes_to_one_an_administrator_made(clickhouse: ClickHouse) -> None:
    """ClickHouse refuses `CREATE TABLE IF NOT EXISTS` to a user without DDL rights even when the table exists, so
    the exporter looks first and only creates a missing table; Test Connection says which case it is."""
    table = "insert_only"

    def exporter(session: aiohttp.ClientSession, user: str, password: str) -> ClickHouseExporter:
        o = ClickHouseOptions(url=clickhouse.url, user=user, password=password, table=table)
        return ClickHouseExporter(DestinationConfig(name="ch", kind="clickhouse", options=o, timeout_s=10), session)

    async def main() -> tuple[str, str, str]:
        async with aiohttp.ClientSession() as session:
            writer = exporter(session, WRITER, OTHER_PASSWORD)
            missing = await writer.test()
            assert not missing.ok
            await exporter(session, USER, PASSWORD).ensure_table()  # the administrator makes it
            ready = await writer.test()
            assert ready.ok, ready.message
            rec = sample_record(1, user="carol")
            await writer.send(writer.encode(rec, False, ()))
            await writer.send(writer.encode(sample_record(2), False, ()))
            reader = await exporter(session, READER, OTHER_PASSWORD).test()
            assert not reader.ok
            return missing.message, ready.message, reader.message

    missing, ready, reader = asyncio.run(main())
    assert missing.startswith(f"table default.{table} does not exist and user '{WRITER}' may not create it (")
    assert ready.endswith(f"accepted user '{WRITER}'; table default.{table} exists and takes inserts")
    assert reader.startswith(f"user '{READER}' may not write default.{table}: ") and "readonly" in reader
    rows = clickhouse.rows(f"SELECT user, request_id FROM default.{table} ORDER BY request_id")
    assert len(rows) == 2 and rows[0]["user"] == "carol"
