"""The store below the API: migrations, retention, privacy mode, text Postgres refuses, and a database that is
down (the gateway keeps serving, the records wait in the bounded queue, the password never shows)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import rows
from relaycast.store.db import Connection
from relaycast.store.schema import LATEST
from relaycast.store.settings import StoreConfig
from relaycast.store.writer import delete_older_than, write_batch
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
        assert out == "ab" and user == "xy" and "hello" in messages
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
    gw = GatewayProcess(standard_config(fake.url, f"store: {{url: '{url}'}}"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
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
        client.chat.completions.create(
            model="fakeai/gpt-4o-mini",
            messages=[{"role": "user", "content": "my secret plan"}],
            extra_headers={"x-request-id": "private-1"},
        )
        req = wait_stored(gw.url, ["private-1"])["private-1"]["request"]
        assert req["input_messages"] is None and req["output_text"] is None and req["prompt_tokens"] > 0
        assert (gw.config_path.parent / "relaycast.db").exists()  # the default: a SQLite file beside the config
    finally:
        gw.stop()
