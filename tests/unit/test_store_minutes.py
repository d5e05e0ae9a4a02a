"""Minute resolution in the store, on SQLite and on this machine's Postgres: the per-minute rollups are written with
the hourly ones and agree with them, are deleted after MINUTE_RETENTION_S, and the analytics read them for recent
ranges (the bucket size and range each document states); the explorer's filters (model asked for or upstream,
prefix, status code, error class, session)."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import msgspec
import pytest

from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.store import queries, rows
from relaycast.store.db import Connection
from relaycast.store.schema import MINUTE_RETENTION_S
from relaycast.store.writer import delete_older_than, write_batch
from tests.store_helpers import migrated_store


@pytest.fixture(params=["sqlite", "postgres"])
def conn(request, tmp_path) -> Iterator[Connection]:
    yield from migrated_store(request.param, tmp_path)


def _rec(
    rid: str,
    ts: float,
    *,
    route: str = "fast",
    model: str = "gpt-4o-mini",
    provider: str = "fakeai",
    error: str | None = None,
    status: int = 200,
    user: str = "alice",
    session: str | None = None,
    ms: float = 20.0,
) -> RequestRecord:
    at = Attempt(
        target=f"{provider}/{model}",
        provider=provider,
        model=model,
        started_ns=0,
        duration_ns=int(ms * 1e6),
        ttft_ns=None,
        usage=None if error else Usage(prompt_tokens=10, completion_tokens=5),
        cost_pusd=None if error else 1_000_000,
        cost_source="none" if error else "computed",
        error_class=error,
        upstream_status=status if error else 200,
    )
    return RequestRecord(
        request_id=rid,
        endpoint="chat.completions",
        model_requested=route,
        stream=False,
        started_unix_ns=int(ts * 1e9),
        duration_ns=int(ms * 1e6),
        status_code=status,
        attribution=Attribution(user=user, feature="search", session_id=session),
        attempts=(at,),
        error_class=error,
    )


def _write(conn: Connection, recs: list[RequestRecord]) -> None:
    write_batch(conn, rows.build(recs, Redactor(()), privacy=False))


def test_minute_rollups_agree_with_the_hourly_ones_and_are_kept_48_hours(conn):
    now = time.time()
    recs = [_rec(f"r{i}", now - i * 50) for i in range(12)]  # 12 requests over ten minutes, many minutes
    recs += [_rec("old", now - MINUTE_RETENTION_S - 7200), _rec("err", now - 30, error="rate_limit", status=429)]
    _write(conn, recs)
    hourly = dict(
        conn.query("SELECT hour, sum(requests) FROM usage_hourly WHERE dim = 'model' GROUP BY hour ORDER BY hour")
    )
    folded: dict[int, int] = {}
    for minute, n in conn.query("SELECT minute, requests FROM usage_minute WHERE dim = 'model'"):
        folded[minute - minute % 3600] = folded.get(minute - minute % 3600, 0) + n
    assert folded == hourly and sum(hourly.values()) == 14
    assert len(conn.query("SELECT DISTINCT minute FROM usage_minute")) >= 10
    for table, col in (("attempts", "n"), ("latency", "n")):
        h = conn.query(f"SELECT sum({col}) FROM {table}_hourly")[0][0]
        m = conn.query(f"SELECT sum({col}) FROM {table}_minute")[0][0]
        assert h == m and h > 0, table

    # Retention: minute rows past MINUTE_RETENTION_S go; hourly rows and requests within retention_days stay.
    delete_older_than(conn, int((now - 30 * 86400) * 1000), None, int(now * 1000))
    oldest = conn.query("SELECT min(minute) FROM usage_minute")[0][0]
    assert oldest >= now - MINUTE_RETENTION_S - 60
    assert conn.query("SELECT sum(requests) FROM usage_minute WHERE dim = 'all'")[0][0] == 13
    assert conn.query("SELECT sum(requests) FROM usage_hourly WHERE dim = 'all'")[0][0] == 14
    assert conn.query("SELECT count(*) FROM requests")[0][0] == 14


def test_recent_ranges_read_minute_buckets(conn):
    now = time.time()
    _write(conn, [_rec(f"a{i}", now - 150 + i) for i in range(3)] + [_rec("b", now - 20, model="gpt-4o")])
    _write(
        conn,
        [_rec("e", now - 10, error="upstream_5xx", status=503), _rec("r", now - 5, error="bad_request", status=400)],
    )
    w = queries.window({"since": "15m"}, now)
    assert w.bucket == "minute" and w.bucket_s == 60 and 15 <= len(w.buckets()) <= 16
    doc = queries.spend(conn, w, "model")
    assert doc["bucket"] == "minute" and doc["bucket_s"] == 60
    assert doc["range"]["end"] == pytest.approx(now) and doc["range"]["start"] == pytest.approx(now - 900)
    busy = [i for i, n in enumerate(doc["series"]["gpt-4o-mini"]["requests"]) if n]
    assert len(busy) >= 2  # 150 seconds apart: two minutes at least
    assert sum(doc["series"]["gpt-4o-mini"]["requests"]) == doc["groups"][0]["requests"] == 5
    # Filtered (read from the raw rows) is bucketed by minute too.
    f = queries.spend(conn, queries.window({"since": "15m", "user": "alice"}, now), "model")
    assert f["series"]["gpt-4o-mini"]["requests"] == doc["series"]["gpt-4o-mini"]["requests"]

    lat = queries.latency(conn, queries.window({"since": "1h"}, now), "model")
    assert lat["bucket"] == "minute" and len(lat["series"]["gpt-4o"]["total_p50"]) == len(lat["buckets"]) >= 60
    err = queries.error_rates(conn, queries.window({"since": "6h"}, now))
    assert err["bucket"] == "minute" and err["totals"]["errors"] == 1 and err["totals"]["refusals"] == 1
    assert sum(err["by_class"]["upstream_5xx"]) == 1 and sum(err["by_class"]["bad_request"]) == 1
    assert err["classes"] == {"bad_request": "client", "upstream_5xx": "provider"}
    # Longer ranges keep hours and days, from the hourly rollups: the same totals.
    day = queries.spend(conn, queries.window({"since": "24h"}, now), "model")
    assert day["bucket"] == "hour" and day["totals"] == doc["totals"]
    assert queries.window({"since": "30d"}, now).bucket == "day"
    assert queries.window({"since": "6h", "bucket": "hour"}, now).bucket == "hour"
    old = queries.window({"since": str(now - 4 * 86400), "until": str(now - 4 * 86400 + 3600)}, now)
    assert old.bucket == "hour"  # an hour long ago: its minutes are no longer kept


def test_bad_buckets_are_refused():
    now = time.time()
    for params in ({"bucket": "week"}, {"since": "7d", "bucket": "minute"}, {"since": "3d", "bucket": "minute"}):
        with pytest.raises(queries.BadQuery) as e:
            queries.window(params, now)
        assert e.value.param == "bucket"


def test_explorer_filters(conn):
    now = time.time()
    _write(
        conn,
        [
            _rec("x1", now - 60, route="fast", model="gpt-4o-mini"),
            _rec("x2", now - 50, route="fakeai/gpt-4o", model="gpt-4o", user="bob", session="s-1"),
            _rec("x3", now - 40, route="smart", model="gpt-4o", error="rate_limit", status=429),
            _rec("x4", now - 30, route="fast", model="gpt-4o-mini", error="bad_request", status=400),
        ],
    )

    def ids(**params: str) -> list[str]:
        return sorted(r["request_id"] for r in queries.requests(conn, {"since": "1h", **params}, now)["requests"])

    assert ids(model="fast") == ["x1", "x4"]  # the model asked for
    assert ids(model="gpt-4o") == ["x2", "x3"]  # the upstream model, exactly
    assert ids(model="gpt-4o*") == ["x1", "x2", "x3", "x4"]  # a prefix
    assert ids(model="fakeai/*") == ["x1", "x2", "x3", "x4"]  # a prefix of the target
    assert ids(model="fakeai/gpt-4o") == ["x2", "x3"]  # the target (what the explorer's Model column shows)
    assert ids(route="fast") == ["x1", "x4"]
    assert ids(status="429") == ["x3"] and ids(status="error") == ["x3", "x4"] and ids(status="ok") == ["x1", "x2"]
    assert ids(error_class="bad_request") == ["x4"]
    assert ids(session="s-1") == ["x2"] and ids(user="bob") == ["x2"]
    assert ids(provider="fakeai", target="fakeai/gpt-4o") == ["x2", "x3"]
    assert ids(since=str(now - 45), until=str(now - 35)) == ["x3"]  # a chart bucket's window
    with pytest.raises(queries.BadQuery):
        queries.requests(conn, {"status": "teapot"}, now)


def test_a_store_from_before_minute_rollups_reads_recent_ranges_by_the_hour(conn):
    now = time.time()
    _write(conn, [_rec("r1", now - 600)])
    # As a store migrated from a version without minute rollups: hours with data the minutes never saw.
    with conn.transaction():
        conn.execute("DELETE FROM usage_minute")
    w = queries.fitted(conn, queries.window({"since": "1h"}, now))
    assert w.bucket == "hour"  # not an empty chart of minutes
    assert queries.spend(conn, queries.window({"since": "1h"}, now))["totals"]["requests"] == 1
    # With minute rows covering the data, minutes; asked for explicitly, as asked.
    _write(conn, [_rec("r2", now - 60)])
    with conn.transaction():
        conn.execute("DELETE FROM usage_hourly WHERE hour < ?", (int(now - 60) // 3600 * 3600,))
    assert queries.fitted(conn, queries.window({"since": "15m"}, now)).bucket == "minute"
    assert queries.fitted(conn, queries.window({"since": "1h", "bucket": "minute"}, now)).bucket == "minute"


@pytest.mark.parametrize(
    "params",
    [{"since": "nan"}, {"since": "-inf"}, {"until": "1e400"}, {"since": "99999999999999"}],
)
def test_times_that_are_not_times_are_bad_queries(params):
    with pytest.raises(queries.BadQuery):
        queries.window(params, time.time())


@pytest.mark.parametrize("params", [{"status": "²²²"}, {"status": "999"}, {"before": "١٢٣:4"}])
def test_explorer_values_that_are_not_numbers_are_bad_queries(conn, params):
    with pytest.raises(queries.BadQuery):
        queries.requests(conn, params)


def test_requests_of_one_millisecond_never_share_a_row_id_in_a_batch(conn):
    # A generator that draws the same bits twice in a row: the second record redraws instead of colliding.
    draws = iter([5, 5, 9, 5, 7, 11])
    batch = rows.Batch()
    now = time.time()
    for i in range(4):
        rows.add(batch, _rec(f"same-ms-{i}", now), Redactor(()), False, randbits=lambda _n: next(draws))
    ids = [r[0] for r in batch.requests]
    assert len(set(ids)) == 4
    write_batch(conn, batch)  # the database agrees: no UNIQUE failure
    assert conn.query("SELECT count(*) FROM requests")[0][0] == 4


def test_a_batch_rolls_up_exactly_what_its_records_roll_up_one_by_one():
    """Records of several minutes, keys, users, routes and models, one of them with a billed failed attempt before
    its answer: the rollups of one batch are the sums of the rollups of each record alone."""
    now = 1_760_000_000.0
    recs = [
        _rec(f"r{i}", now + 50 * (i % 3), user=("alice", "bob", "")[i % 3], model=("m1", "m2")[i % 2]) for i in range(9)
    ]
    recs.append(_rec("failed", now + 10, route="slow", error="server_error", status=503))
    ok, failed = _rec("ok", now + 70, model="m2"), recs[-1]
    billed = msgspec.structs.replace(
        failed.attempts[0], usage=Usage(prompt_tokens=4), cost_pusd=7, cost_source="computed"
    )
    recs.append(msgspec.structs.replace(ok, attempts=(billed, *ok.attempts), attribution=Attribution(key_name="k")))
    red = Redactor(())

    def rollups(batches: list[rows.Batch]) -> dict[str, dict[tuple, list[int]]]:
        out: dict[str, dict[tuple, list[int]]] = {"minute": {}, "hour": {}}
        for b in batches:
            for name, got in (("minute", b.usage_minute_rows()), ("hour", b.usage_rows())):
                for r in got:
                    sums = out[name].setdefault(r[:3], [0] * len(r[3:]))
                    out[name][r[:3]] = [x + y for x, y in zip(sums, r[3:], strict=True)]
        return out

    one = rows.Batch()
    for r in recs:
        rows.add(one, r, red, False)
    alone = []
    for r in recs:
        b = rows.Batch()
        rows.add(b, r, red, False)
        alone.append(b)
    together = rollups([one])
    assert together == rollups(alone)
    per_minute = collections.Counter(r.started_unix_ns // 60_000_000_000 * 60 for r in recs)
    assert len(per_minute) == 3
    assert {m: together["minute"][("all", m, "")][0] for m in per_minute} == per_minute
    assert {k[0] for k in together["hour"]} == {"all", "key", "user", "feature", "route", "model", "provider", "target"}
