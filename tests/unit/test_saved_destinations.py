"""Secrets sealed at rest, saved destinations in a real SQLite store, and a running broadcaster taking saved
destinations in and out while records flow (file destinations on a temporary disk: real writes)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import stat
import threading
from pathlib import Path

import aiohttp
import pytest

from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.sealed import Sealer, SealError, load_sealer
from relaycast.store import destinations as table
from relaycast.store.db import Connection
from relaycast.store.settings import StoreConfig
from relaycast.telemetry import saved
from relaycast.telemetry.pipeline import Broadcaster
from relaycast.telemetry.settings import BroadcastConfig
from tests.sample_records import sample_record

KEY = b"k" * 40


def test_sealed_values_open_only_with_their_key_and_owner() -> None:
    s = Sealer(KEY, "test")
    sealed = s.seal("dd-secret-value-123", "datadog")
    assert "dd-secret-value-123" not in sealed and sealed.startswith(f"v1.{s.key_id}.")
    assert s.open(sealed, "datadog") == "dd-secret-value-123"
    assert s.seal("x", "a") != s.seal("x", "a")  # a fresh nonce each time
    with pytest.raises(SealError, match="another owner"):
        s.open(sealed, "langfuse")  # copied onto another row
    with pytest.raises(SealError, match="another key"):
        Sealer(b"z" * 40, "other").open(sealed, "datadog")
    with pytest.raises(SealError):
        s.open(sealed[:-4] + "AAAA", "datadog")
    with pytest.raises(SealError):
        s.open("plain text", "datadog")


def _load(base: str, start: threading.Barrier, out: multiprocessing.Queue[str]) -> None:
    start.wait(30)
    try:
        out.put(load_sealer({}, Path(base)).key_id)
    except (OSError, ValueError) as e:  # the test names the failure instead of waiting on an empty queue
        out.put(f"failed: {e}")


def test_the_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    q: multiprocessing.Queue[str] = ctx.Queue()
    start = ctx.Barrier(6)  # all load at once: none may read the file half written
    procs = [ctx.Process(target=_load, args=(str(tmp_path), start, q)) for _ in range(6)]
    for p in procs:
        p.start()
    ids = {q.get(timeout=60) for _ in procs}
    for p in procs:
        p.join(30)
    assert len(ids) == 1  # processes starting together end up with one key
    key_file = tmp_path / ".relaycast" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [f.name for f in key_file.parent.iterdir()] == ["secret.key"]  # no draft left behind
    assert load_sealer({}, tmp_path).key_id in ids
    env_key = load_sealer({"RELAYCAST_SECRET_KEY": "e" * 32}, tmp_path)
    assert env_key.key_id not in ids and env_key.source == "$RELAYCAST_SECRET_KEY"
    with pytest.raises(ValueError, match="at least 32"):
        load_sealer({"RELAYCAST_SECRET_KEY": "short"}, tmp_path)


def test_forms_split_secrets_from_settings() -> None:
    settings, hidden = saved.split("langfuse", {"public_key": "pk-lf-1", "secret_key": "sk-lf-2", "region": ""})
    assert settings == {"public_key": "pk-lf-1"} and hidden == {"secret_key": "sk-lf-2"}
    settings, hidden = saved.split("otlp", {"endpoint": "http://x/v1/traces", "headers": {"x-key": "v"}})
    assert hidden == {"headers": {"x-key": "v"}}
    with pytest.raises(saved.Invalid) as e:
        saved.build("bad name!", "file", {"path": "/tmp/x"}, Path("."))
    assert e.value.field == "name"
    with pytest.raises(saved.Invalid) as e:
        saved.build("f", "file", {"path": "/tmp/x", "max_bytes": -5}, Path("."))
    assert e.value.field == "max_bytes" and "-5" in str(e.value)


def test_the_store_keeps_sealed_secrets_and_a_change_marker(tmp_path: Path) -> None:
    conn = Connection(StoreConfig(path=str(tmp_path / "s.db")))
    conn.migrate()
    s = Sealer(KEY, "test")
    assert table.marker(conn) == "" and table.enabled(conn)
    sealed = saved.seal(s, "dd", {"api_key": "dd-key-0123456789"})
    assert table.save(conn, "dd", "datadog", {"ml_app": "a"}, sealed, 1000, (True, "ok"))
    first = table.marker(conn)
    assert not table.save(conn, "dd", "datadog", {"ml_app": "b"}, sealed, 2000, None)  # replaced, not new
    assert table.marker(conn) != first
    (row,) = table.rows(conn)
    assert row.created_ms == 1000 and row.updated_ms == 2000 and row.settings == {"ml_app": "b"}
    assert saved.opened(row, s) == {"ml_app": "b", "api_key": "dd-key-0123456789"}
    assert b"dd-key-0123456789" not in (tmp_path / "s.db").read_bytes()
    table.set_enabled(conn, False, 3000)
    assert not table.enabled(conn)
    assert table.delete(conn, "dd", 4000) and not table.delete(conn, "dd", 4000)
    for i in range(table.MAX_DESTINATIONS):
        table.save(conn, f"d{i}", "file", {"path": "/tmp/x"}, None, 5000, None)
    with pytest.raises(table.TooMany):
        table.save(conn, "one-more", "file", {"path": "/tmp/x"}, None, 5000, None)
    conn.close()


def test_apply_adds_replaces_and_removes_saved_destinations(tmp_path: Path) -> None:
    async def run() -> None:
        red = Redactor()
        fixed = saved.build("archive", "file", {"path": str(tmp_path / "archive.jsonl")}, tmp_path)
        cfg = BroadcastConfig(destinations=(fixed,), spool_dir=str(tmp_path / "spool"))
        async with aiohttp.ClientSession() as session:
            b = Broadcaster(cfg, session, red, EventLog(red))
            b.start()
            one = saved.build("ui", "file", {"path": str(tmp_path / "one.jsonl"), "flush_interval": 0.05}, tmp_path)
            assert await b.apply([one]) == (["+ui"], {})
            assert await b.apply([one]) == ([], {})  # the same settings: left running
            b(sample_record(1))
            await b.flush()
            two = saved.build("ui", "file", {"path": str(tmp_path / "two.jsonl"), "flush_interval": 0.05}, tmp_path)
            assert await b.apply([two]) == (["-ui", "+ui"], {})
            b(sample_record(2))
            await b.flush()
            # A saved destination cannot take a config destination's name; an empty list removes the saved ones.
            clash = saved.build("archive", "file", {"path": str(tmp_path / "x.jsonl")}, tmp_path)
            assert await b.apply([clash]) == (["-ui"], {})
            assert set(b.destinations) == {"archive"}
            b(sample_record(3))
            await b.stop(2)

        def ids(name: str) -> list[str]:
            p = tmp_path / name
            return [json.loads(line)["request_id"] for line in p.read_text().splitlines()] if p.exists() else []

        assert ids("one.jsonl") == [sample_record(1).request_id]
        assert ids("two.jsonl") == [sample_record(2).request_id]
        assert len(ids("archive.jsonl")) == 3 and not (tmp_path / "x.jsonl").exists()

    asyncio.run(run())


def test_saved_secrets_go_only_where_they_were_saved_for() -> None:
    kept = {"api_key": "dd-key-0123456789", "ml_app": "a", "api_url": "https://api.example.com"}
    # The secret left empty is kept while the address stays.
    same = saved.merge_kept("datadog", {"ml_app": "b", "api_url": "https://api.example.com"}, kept)
    assert same["api_key"] == "dd-key-0123456789" and same["ml_app"] == "b"
    # Pointing it elsewhere asks for the secret again.
    with pytest.raises(saved.Invalid) as e:
        saved.merge_kept("datadog", {"ml_app": "a", "api_url": "http://attacker.example"}, kept)
    assert e.value.field == "api_key" and "api_url" in str(e.value)
    with pytest.raises(saved.Invalid):
        saved.merge_kept("datadog", {"ml_app": "a", "api_url": "https://api.example.com", "site": "datadoghq.eu"}, kept)
    # Typed again, it goes.
    moved = saved.merge_kept("datadog", {"api_key": "new-key-0123456789", "api_url": "http://elsewhere"}, kept)
    assert moved["api_key"] == "new-key-0123456789"


def test_a_url_with_credentials_is_sealed_and_shown_masked() -> None:
    url = "https://user:pw-0123456789@hooks.example.com/x?token=tok-0123456789&a=1"
    settings, hidden = saved.split("webhook", {"url": url})
    assert settings == {} and hidden == {"url": url}
    shown = saved.shown("webhook", {"url": url, "secret": "whsec-0123456789"})
    assert shown == {"url": "https://user:****@hooks.example.com/x?token=****&a=1"}
    # The masked URL sent back by the page means the saved one.
    assert saved.merge_kept("webhook", {"url": shown["url"]}, {"url": url})["url"] == url
    plain, _ = saved.split("webhook", {"url": "https://hooks.example.com/x"})
    assert plain == {"url": "https://hooks.example.com/x"}
    with pytest.raises(saved.Invalid):
        saved.build("o", "opik", {"url": "http://[::1"}, Path("."))  # unparsable: a 400, not a crash


def test_records_offered_while_a_destination_is_replaced_all_arrive(tmp_path: Path) -> None:
    async def run() -> int:
        red = Redactor()
        cfg = BroadcastConfig(destinations=(), spool_dir=str(tmp_path / "spool"))
        async with aiohttp.ClientSession() as session:
            b = Broadcaster(cfg, session, red, EventLog(red))
            b.start()
            first = saved.build("ui", "file", {"path": str(tmp_path / "a.jsonl"), "flush_interval": 0.05}, tmp_path)
            await b.apply([first])
            offered = 0
            stop = asyncio.Event()

            async def feed() -> None:
                nonlocal offered
                while not stop.is_set():
                    offered += 1
                    b(sample_record(offered))
                    await asyncio.sleep(0.001)

            feeder = asyncio.create_task(feed())
            await asyncio.sleep(0.1)
            for i, name in enumerate(("b.jsonl", "c.jsonl", "d.jsonl")):
                nxt = saved.build("ui", "file", {"path": str(tmp_path / name), "flush_interval": 0.05 + i}, tmp_path)
                changes, failed = await b.apply([nxt])
                assert changes == ["-ui", "+ui"] and not failed
                await asyncio.sleep(0.05)
            stop.set()
            await feeder
            await b.stop(5)
            return offered

    offered = asyncio.run(run())
    lines = [line for p in tmp_path.glob("*.jsonl") for line in p.read_text().splitlines()]
    ids = {json.loads(line)["request_id"] for line in lines}
    assert len(lines) == offered == len(ids)  # every record offered went to exactly one of the four
    assert len(list((tmp_path / "spool").glob("saved-ui-*"))) <= 1  # the replaced ones' spools are gone


def test_each_configured_destination_says_where_it_comes_from(tmp_path: Path) -> None:
    from relaycast import config as config_mod

    text = f"""
providers:
  - name: fakeai
    kind: openai_compatible
    base_url: http://127.0.0.1:9/v1
broadcast:
  destinations:
    - name: archive
      kind: file
      path: {tmp_path}/records.jsonl
"""
    env = {"DD_API_KEY": "dd0123456789abcdef0123456789abcd", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    cfg = config_mod.parse(text, env=env, source=str(tmp_path / "relaycast.yaml"))
    assert cfg.broadcast is not None
    sources = {d.name: d.source for d in cfg.broadcast.destinations}
    assert sources == {"archive": "config file", "datadog": "DD_* variables", "otlp": "OTEL_* variables"}
