"""The store below the API: migrations, retention, privacy mode, records the database could not take as they are
(NUL in text, JSON nested past orjson's limit, numbers past BIGINT) written anyway, a database that is down
(the gateway keeps serving, the records wait in the bounded queue, the password never shows), and the store's
threads: calls abandoned at their deadline, a bounded queue, a shutdown that does not wait on a failing store."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import openai
import orjson
import pytest

from relaycast.config_reader import ConfigError, Reader
from relaycast.log import EventLog
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import rows
from relaycast.store.db import Connection, StoreThreads, StoreTimeout, StoreUnavailable
from relaycast.store.schema import LATEST
from relaycast.store.settings import StoreConfig, parse_store
from relaycast.store.writer import StoreWriter, delete_older_than, write_batch
from tests.conftest import UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import admin_get, postgres_database, wait_stored


@pytest.fixture(params=["sqlite", "postgres"])
def store_cfg(request, tmp_path) -> Iterator[StoreConfig]:
    if request.param == "sqlite":
        yield StoreConfig(path=str(tmp_path / "s.db"))
    else:
        gen = postgres_database()
        yield StoreConfig(url=next(gen))
        gen.close()


def _record(rid: str, started_s: float, output: str = "fine", user: str = "u") -> RequestRecord:
    a = Attempt(
        target="p/m",
        provider="p",
        model="m",
        started_ns=0,
        duration_ns=5_000_000,
        ttft_ns=1_000_000,
        usage=Usage(prompt_tokens=10, completion_tokens=5),
        cost_pusd=1_500_000,
        cost_source="computed",
    )
    return RequestRecord(
        request_id=rid,
        endpoint="chat.completions",
        model_requested="m",
        stream=True,
        started_unix_ns=int(started_s * 1e9),
        duration_ns=6_000_000,
        status_code=200,
        attribution=Attribution(user=user),
        attempts=(a,),
        input_messages=({"role": "user", "content": "hello\x00"},),
        output_text=output,
    )


def test_migrations_apply_once_and_retention_deletes_old_rows(store_cfg):
    conn = Connection(store_cfg)
    try:
        assert conn.migrate() == LATEST
        assert conn.migrate() == LATEST  # idempotent: a restart, or a second replica
        now = time.time()
        batch = rows.build([_record("old", now - 40 * 86400), _record("new", now - 60)], Redactor(()), privacy=False)
        write_batch(conn, batch)
        assert conn.query("SELECT count(*) FROM requests")[0][0] == 2
        assert delete_older_than(conn, int((now - 30 * 86400) * 1000)) == 1
        assert [r[0] for r in conn.query("SELECT request_id FROM requests")] == ["new"]
        assert conn.query("SELECT count(*) FROM attempts")[0][0] == 1
        assert conn.query("SELECT count(*) FROM usage_hourly WHERE hour < ?", (int(now - 30 * 86400),))[0][0] == 0
    finally:
        conn.close()


def test_text_with_nul_characters_is_stored(store_cfg):
    """Postgres refuses NUL in TEXT: such a record must still be stored, not retried forever."""
    conn = Connection(store_cfg)
    try:
        conn.migrate()
        write_batch(
            conn, rows.build([_record("nul", time.time(), output="a\x00b", user="x\x00y")], Redactor(()), False)
        )
        out, user, messages = conn.query("SELECT output_text, user_id, input_messages FROM requests")[0]
        assert out == "a\ufffdb" and user == "x\ufffdy" and "hello" in messages
    finally:
        conn.close()


def _nested(depth: int) -> Any:
    v: Any = {"leaf": "bottom"}
    for _ in range(depth):
        v = {"a": [v]}
    return v


def _odd_record(rid: str) -> RequestRecord:
    """What upstreams and clients can put in a record that no database column takes as it is."""
    rec = _record(rid, time.time(), output="upstream said \x00 then \ud800 then more")
    deep = _nested(600)  # 1,200 levels of JSON: orjson refuses more than 254
    bad = msgspec.structs.replace(
        rec.attempts[0],
        finish_reason="stop\x00",
        error_message="err\x00or",
        usage=Usage(prompt_tokens=10**23, completion_tokens=-5),  # an upstream's usage, taken as reported
    )
    return msgspec.structs.replace(
        rec,
        attribution=Attribution(user="u\x00", feature="f\udc80", trace={"deep": deep, "tag": "t\x00"}),
        params={"response_format": deep, 3: "non-string key"},
        input_messages=({"role": "user", "content": [deep]},),
        attempts=(bad,),
        error_message="\x00",
    )


def _writer(cfg: StoreConfig) -> StoreWriter:
    red = Redactor(())
    return StoreWriter(dataclasses.replace(cfg, flush_interval_s=0.05), red, EventLog(red))


async def _write_through(cfg: StoreConfig, records: list[RequestRecord]) -> dict[str, Any]:
    w = _writer(cfg)
    await w.start()
    for rec in records:
        w(rec)
    await w.flush()
    await w.stop()
    return w.status()


def test_a_record_no_column_takes_as_it_is_is_stored_with_its_batch_neighbours(store_cfg):
    """NUL and a lone surrogate in upstream text, JSON nested 1,200 levels deep, a usage past BIGINT: the
    record and the records batched with it are all stored whole, none as a minimal row, none rejected."""
    recs = [_record("before", time.time()), _odd_record("odd"), _record("after", time.time())]
    status = asyncio.run(_write_through(store_cfg, recs))
    assert status["written"] == 3 and status["minimal"] == 0 and status["dropped"] == {}, status
    conn = Connection(store_cfg)
    try:
        got = {r[0]: r[1:] for r in conn.query("SELECT request_id, output_text, params, input_messages FROM requests")}
        assert set(got) == {"before", "odd", "after"}
        out, params, messages = got["odd"]
        assert out == "upstream said \ufffd then \ufffd then more"
        assert "nested deeper than" in params and "non-string key" in orjson.loads(params)["3"]
        assert "bottom" not in messages and orjson.loads(messages)[0]["role"] == "user"
        finish, prompt = conn.query(
            "SELECT a.finish_reason, a.prompt_tokens FROM attempts a JOIN requests r "
            "ON a.request_row = r.id WHERE r.request_id = 'odd'"
        )[0]
        assert finish == "stop\ufffd" and prompt == rows.MAX_TOKENS
        spent = conn.query(
            "SELECT requests, prompt_tokens FROM usage_hourly WHERE dim = 'user' AND value = ?", ("u\ufffd",)
        )
        assert spent == [(1, rows.MAX_TOKENS)]
    finally:
        conn.close()


def test_a_record_the_database_refuses_whole_is_kept_as_a_minimal_row_and_counted(store_cfg):
    """Whatever the database still refuses in a record, its ids, status, tokens and cost are written (and count
    against budgets through the rollups); only a record refused even so is lost, and counted."""
    rec = _record("refused", time.time())
    refused = msgspec.structs.replace(rec, attempts=(msgspec.structs.replace(rec.attempts[0], upstream_status=2**70),))
    hopeless = msgspec.structs.replace(_record("hopeless", time.time()), status_code=2**70)
    recs = [_record("n1", time.time()), refused, hopeless, _record("n2", time.time())]
    status = asyncio.run(_write_through(store_cfg, recs))
    assert status["written"] == 3 and status["minimal"] == 1 and status["dropped"] == {"rejected": 1}, status
    conn = Connection(store_cfg)
    try:
        got = {
            r[0]: r[1:]
            for r in conn.query("SELECT request_id, status, cost_pusd, prompt_tokens, output_text FROM requests")
        }
        assert set(got) == {"n1", "refused", "n2"}
        assert got["refused"] == (200, 1_500_000, 10, None)
        assert conn.query("SELECT requests, cost_pusd FROM usage_hourly WHERE dim = 'all'")[0] == (3, 4_500_000)
    finally:
        conn.close()


def test_privacy_mode_stores_no_prompts_and_secrets_are_masked(tmp_path):
    cfg = StoreConfig(path=str(tmp_path / "p.db"))
    conn = Connection(cfg)
    conn.migrate()
    secret = "sk-live-0123456789abcdef"
    rec = _record("priv", time.time(), output=f"the key is {secret}")
    write_batch(conn, rows.build([rec], Redactor((secret,)), privacy=True))
    write_batch(
        conn, rows.build([_record("open", time.time(), output=f"the key is {secret}")], Redactor((secret,)), False)
    )
    got = dict((r[0], r[1:]) for r in conn.query("SELECT request_id, input_messages, output_text FROM requests"))
    assert got["priv"] == (None, None)
    assert got["open"][0] is not None and secret not in got["open"][1] and "the key is" in got["open"][1]
    conn.close()


def test_a_store_that_is_down_never_fails_requests(fake):
    url = "postgresql://relaycast:hunter2-store-password@127.0.0.1:1/relaycast"  # nothing listens on port 1
    # keys_required: false: a keyless gateway (one whose store may hold keys fails closed until it reads them:
    # test_keys_lifecycle)
    extra = f"store: {{url: '{url}'}}\nkeys_required: false\n"
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    try:
        gw.wait_ready()
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        for _ in range(5):
            assert client.chat.completions.create(
                model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        status, body = admin_get(gw.url, "/admin/store")
        assert status == 200
        store = body["store"]
        assert store["written"] == 0 and store["queued"] == 5 and store["failures"] >= 1 and store["last_error"]
        status, body = admin_get(gw.url, "/admin/analytics/spend")
        assert status == 503 and body["error"]["code"] == "store_unavailable"
        everything = gw.log() + str(store) + str(body)
        assert "hunter2-store-password" not in everything
    finally:
        gw.stop()


def test_privacy_mode_through_the_gateway(fake):
    gw = GatewayProcess(
        standard_config(fake.url, "store: {privacy_mode: true}"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    )
    try:
        gw.wait_ready()
        client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "my secret plan"}]
        )
        rid = raw.headers["x-relaycast-request-id"]  # the gateway's id keys the record
        req = wait_stored(gw.url, [rid])[rid]["request"]
        assert req["input_messages"] is None and req["output_text"] is None and req["prompt_tokens"] > 0
        assert (gw.config_path.parent / "relaycast.db").exists()  # the default: a SQLite file beside the config
    finally:
        gw.stop()


FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"  # never ends


def test_store_timeouts_are_configured_with_defaults(tmp_path):
    r = Reader({})
    cfg = parse_store(r, {"read_timeout_s": 2, "write_timeout_s": 4.5, "keepalive_idle_s": 30}, {}, None)
    assert cfg is not None and (cfg.read_timeout_s, cfg.write_timeout_s, cfg.keepalive_idle_s) == (2, 4.5, 30)
    assert (cfg.connect_timeout_s, cfg.lock_timeout_s, cfg.keepalive_interval_s, cfg.keepalive_count) == (5, 10, 5, 3)
    with pytest.raises(ConfigError, match="store.read_timeout_s"):
        parse_store(r, {"read_timeout_s": 0}, {}, None)
    with pytest.raises(ConfigError, match="store.keepalive_count"):
        parse_store(r, {"keepalive_count": 0}, {}, None)


def test_a_call_past_its_deadline_is_abandoned_and_its_thread_serves_the_next(tmp_path):
    """The caller gets StoreTimeout at its deadline, and the statement is interrupted: the one thread answers the
    next call at once instead of waiting for a query that never ends."""
    cfg = StoreConfig(path=str(tmp_path / "t.db"))

    async def run() -> None:
        threads = StoreThreads("test", 1, lambda: Connection(cfg))
        t0 = time.monotonic()
        with pytest.raises(StoreTimeout):
            await threads.call(Connection.query, FOREVER, timeout_s=0.3)
        assert time.monotonic() - t0 < 5
        assert await threads.call(Connection.query, "SELECT 1", timeout_s=5) == [(1,)]
        assert threads.timeouts == 1
        assert await threads.close(5) == 0

    asyncio.run(run())


def test_calls_never_pile_up_and_close_ends_every_call(tmp_path):
    """A full queue refuses at once; closing aborts the running call, fails the waiting one, ends the thread."""
    cfg = StoreConfig(path=str(tmp_path / "t.db"))

    async def run() -> None:
        threads = StoreThreads("test", 1, lambda: Connection(cfg), max_waiting=1)
        running = asyncio.ensure_future(threads.call(Connection.query, FOREVER, timeout_s=60))
        await asyncio.sleep(0.2)  # the thread took it
        waiting = asyncio.ensure_future(threads.call(Connection.query, "SELECT 1", timeout_s=60))
        await asyncio.sleep(0)
        with pytest.raises(StoreUnavailable, match="not keeping up"):
            await threads.call(Connection.query, "SELECT 1", timeout_s=60)
        assert await threads.close(5) == 0
        with pytest.raises(sqlite3.OperationalError, match="interrupted"):
            await running
        with pytest.raises(StoreUnavailable, match="closed"):
            await waiting
        with pytest.raises(StoreUnavailable, match="closed"):
            await threads.call(Connection.query, "SELECT 1", timeout_s=60)

    asyncio.run(run())


def test_a_store_that_fails_at_shutdown_is_not_retried_and_what_is_left_is_counted(tmp_path):
    """Another process holds the SQLite file's write lock: stop() tries once, gives up long before its deadline,
    counts every queued record as `shutdown_deadline`, and leaves no store thread behind."""
    cfg = StoreConfig(path=str(tmp_path / "locked.db"), lock_timeout_s=0.2, flush_interval_s=0.05)

    async def run() -> None:
        w = _writer(cfg)
        await w.start()  # migrated while the file is free
        holder = sqlite3.connect(cfg.path or "", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            for i in range(25):
                w(_record(f"r{i}", time.time()))
            t0 = time.monotonic()
            await w.stop(30)
            assert time.monotonic() - t0 < 10
        finally:
            holder.close()
        status = w.status()
        assert status["written"] == 0 and status["dropped"] == {"shutdown_deadline": 25}, status
        assert "locked" in (status["last_error"] or "")

    asyncio.run(run())
    assert not [t for t in threading.enumerate() if t.name.startswith("relaycast-store-")]
