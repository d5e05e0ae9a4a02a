"""The `clickhouse` kind: its settings, the row a record becomes, and how the exporter talks to ClickHouse's HTTP
interface (against a capture server answering as ClickHouse does; the real server is in
tests/integration/test_broadcast_clickhouse.py)."""

from __future__ import annotations

import json
from decimal import Decimal

import aiohttp
import pytest

from relaycast.config_reader import ConfigError, Reader
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.server.runner import free_port
from relaycast.telemetry.exporters.base import ExportError
from relaycast.telemetry.exporters.clickhouse import COLUMNS, ClickHouseExporter, ddl, error_code, first_line, row
from relaycast.telemetry.kinds.clickhouse import ClickHouseOptions, parse
from relaycast.telemetry.settings import DestinationConfig, parse_broadcast
from tests.capture import AsyncCapture
from tests.capture import run_with_capture as run

PASSWORD = "ch-password-0123456789"
T0 = 1_760_000_000_123_456_789  # 2025-10-09T08:53:20.123456789Z


def _parse(m: dict, env: dict[str, str] | None = None) -> ClickHouseOptions:
    return parse(Reader(env or {}), m, "broadcast.destinations[0]", env or {}, None)  # type: ignore[arg-type]


def record(privacy_text: str = "the secret prompt", user: str | None = "alice") -> RequestRecord:
    """A request that failed over: the first attempt a 503 (nothing billed), the second served and priced."""
    return RequestRecord(
        request_id="req-ch-1",
        endpoint="chat.completions",
        model_requested="fast",
        stream=True,
        started_unix_ns=T0,
        duration_ns=805_000_000,
        status_code=200,
        attribution=Attribution(user=user, session_id="s-1", feature="search", key_name="web", tags=(("team", "a"),)),
        attempts=(
            Attempt(
                "fakeai/gpt-4o-mini",
                "fakeai",
                "gpt-4o-mini",
                0,
                10_000_000,
                error_class="upstream_5xx",
                upstream_status=503,
                usage=Usage(prompt_tokens=3),
            ),
            Attempt(
                "fakeai/gpt-4o-mini",
                "fakeai",
                "gpt-4o-mini",
                20_000_000,
                700_000_000,
                ttft_ns=150_000_000,
                usage=Usage(prompt_tokens=11, completion_tokens=7, cached_tokens=4, reasoning_tokens=2),
                finish_reason="stop",
                cost_pusd=1_050_000_001,
                cost_source="computed",
                vendor="openai",
                cost_input_pusd=50_000_001,
                response_model="gpt-4o-mini-2024-07-18",
            ),
        ),
        input_messages=({"role": "user", "content": privacy_text},),
        output_text="the secret answer",
    )


def dest(url: str, **options: str) -> DestinationConfig:
    o = ClickHouseOptions(url=url, user="relay", password=PASSWORD, **options)
    return DestinationConfig(name="ch", kind="clickhouse", options=o, timeout_s=2.0)


# --- settings ---------------------------------------------------------------------------------------------------


def test_defaults_are_clickhouses_own() -> None:
    o = _parse({"url": "http://127.0.0.1:8123/"})
    assert (o.url, o.user, o.password, o.database, o.table) == (
        "http://127.0.0.1:8123",
        "default",
        "",
        "default",
        "relaycast_requests",
    )


def test_user_and_password_come_from_clickhouse_clients_variables() -> None:
    env = {"CLICKHOUSE_USER": "writer", "CLICKHOUSE_PASSWORD": PASSWORD}
    o = _parse({"url": "https://abc.clickhouse.cloud:8443"}, env)
    assert (o.user, o.password) == ("writer", PASSWORD)
    assert _parse({"url": "https://abc.clickhouse.cloud:8443", "user": "me"}, env).user == "me"  # config wins


def test_missing_url_names_the_setting() -> None:
    with pytest.raises(ConfigError) as e:
        _parse({})
    assert "url" in str(e.value) and "required" in str(e.value)


@pytest.mark.parametrize("name", ["rel`ay", "a b", "1table", "t;DROP", "db.t", ""])
def test_table_and_database_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(ConfigError):
        _parse({"url": "http://h:8123", "table": name})
    with pytest.raises(ConfigError):
        _parse({"url": "http://h:8123", "database": name})


@pytest.mark.parametrize("url", ["http://u:p@h:8123", "http://h:8123/some/path", "http://h:8123/?user=x"])
def test_url_is_only_scheme_host_and_port(url: str) -> None:
    with pytest.raises(ConfigError):
        _parse({"url": url})


def test_the_password_is_a_secret_and_unknown_settings_are_refused() -> None:
    raw = {"destinations": [{"name": "ch", "kind": "clickhouse", "url": "http://h:8123", "password": PASSWORD}]}
    (d,) = parse_broadcast(Reader({}), raw, {}, None).destinations
    assert PASSWORD in d.secrets() and PASSWORD not in repr(d)
    raw["destinations"][0]["token"] = "x"
    with pytest.raises(ConfigError) as e:
        parse_broadcast(Reader({}), raw, {}, None)
    assert "token" in str(e.value)


# --- the table and its rows ---------------------------------------------------------------------------------------


def test_a_row_has_exactly_the_tables_columns() -> None:
    names = {n for n, _ in COLUMNS if n != "tags"} | {"tags.key", "tags.value"}
    assert set(row(record(), False, ()).keys()) == names
    text = ddl(ClickHouseOptions(url="http://h:8123", database="analytics", table="llm"))
    assert text.startswith("CREATE TABLE IF NOT EXISTS `analytics`.`llm` (")
    assert "PARTITION BY toYYYYMM(started_at)" in text and "ORDER BY (started_at, request_id)" in text
    for banned in ("DateTime64", "Map(", "JSON", "LowCardinality"):  # not in ClickHouse 18.16
        assert banned not in text


def test_a_row_holds_what_a_user_queries() -> None:
    line = ClickHouseExporter(dest("http://h:8123"), None).encode(record(), False, (("env", "prod"),))  # type: ignore[arg-type]
    (item,) = line
    r = json.loads(item, parse_float=Decimal)
    assert r["started_at"] == "2025-10-09 08:53:20" and r["started_unix_ns"] == T0
    assert (r["model"], r["provider"], r["vendor"], r["model_requested"]) == (
        "gpt-4o-mini-2024-07-18",
        "fakeai",
        "openai",
        "fast",
    )
    assert (r["user"], r["session_id"], r["feature"], r["key_name"]) == ("alice", "s-1", "search", "web")
    assert (r["prompt_tokens"], r["completion_tokens"], r["cached_tokens"], r["reasoning_tokens"]) == (14, 7, 4, 2)
    assert r["cost_pusd"] == 1_050_000_001  # exact pico-dollars
    assert r["cost_usd"] == Decimal("0.001050000001")  # an unquoted exact decimal
    assert b'"cost_usd":0.001050000001' in item
    assert (r["attempts"], r["status_code"], r["stream"], r["ttft_ms"]) == (2, 200, 1, 150.0)
    assert dict(zip(r["tags.key"], r["tags.value"], strict=True)) == {"team": "a", "env": "prod"}
    inner = json.loads(r["record"])
    assert inner["schema"] == "relaycast.request.v1" and inner["request_id"] == "req-ch-1"
    assert inner["input_messages"][0]["content"] == "the secret prompt"


def test_privacy_mode_leaves_the_prompt_and_completion_out_of_the_record_column() -> None:
    (item,) = ClickHouseExporter(dest("http://h:8123"), None).encode(record(), True, ())  # type: ignore[arg-type]
    assert b"the secret prompt" not in item and b"the secret answer" not in item
    assert json.loads(json.loads(item)["record"])["privacy_mode"] is True


def test_an_unpriced_request_has_null_cost_not_zero() -> None:
    rec = record()
    a = rec.attempts[1]
    unpriced = Attempt(
        a.target, a.provider, a.model, a.started_ns, a.duration_ns, cost_pusd=None, cost_source="unpriced"
    )
    r = row(RequestRecord(**{**_fields(rec), "attempts": (unpriced,)}), False, ())
    assert r["cost_pusd"] is None and r["cost_usd"] is None and r["cost_source"] == "unpriced"


def test_client_metadata_never_takes_the_place_of_the_gateways_own_columns() -> None:
    """Tags and trace metadata come from the client: they land in the tags only, and a destination tag of the same
    name wins over the client's."""
    rec = record()
    forged = Attribution(
        user="alice",
        session_id="s-1",
        feature="search",
        key_name="web",
        tags=(("user", "mallory"), ("key_name", "admin"), ("request_id", "forged"), ("env", "client")),
        trace={"feature": "forged", "model": "forged", "cost_pusd": 0, "trace_id": "f" * 32},
    )
    r = row(RequestRecord(**{**_fields(rec), "attribution": forged}), False, (("env", "prod"),))
    assert (r["request_id"], r["user"], r["key_name"], r["feature"]) == ("req-ch-1", "alice", "web", "search")
    assert r["model"] == "gpt-4o-mini-2024-07-18" and r["cost_pusd"] == 1_050_000_001
    tags = dict(zip(r["tags.key"], r["tags.value"], strict=True))
    assert tags["user"] == "mallory" and tags["request_id"] == "forged" and tags["env"] == "prod"
    inner = json.loads(r["record"])
    assert inner["request_id"] == "req-ch-1" and inner["attribution"]["key_name"] == "web"


def _fields(rec: RequestRecord) -> dict:
    return {f: getattr(rec, f) for f in rec.__struct_fields__}


# --- the HTTP interface ------------------------------------------------------------------------------------------


EXISTS_YES = (200, {}, b"1\n")  # ClickHouse's answer to EXISTS TABLE: 1 or 0, a line in TabSeparated
EXISTS_NO = (200, {}, b"0\n")
DENIED_CREATE = (
    500,
    {"X-ClickHouse-Exception-Code": "497"},
    b"Code: 497. DB::Exception: relay: Not enough privileges. To execute this query, it's necessary to have the "
    b"grant CREATE TABLE ON analytics.llm. (ACCESS_DENIED) (version 24.8.4.13 (official build))",
)


def test_a_missing_table_is_created_once_then_rows_are_inserted_as_json_each_row() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        cap.answers = [EXISTS_NO]
        exp = ClickHouseExporter(dest(cap.url, database="analytics", table="llm"), session)
        items = exp.encode(record(), False, ())
        await exp.send(items)
        await exp.send(items)
        assert [p for p, _, _ in cap.requests] == ["/"] * 4
        exists, create, insert, again = cap.requests
        assert exists[2] == b"EXISTS TABLE `analytics`.`llm`"
        assert create[2].startswith(b"CREATE TABLE IF NOT EXISTS `analytics`.`llm`")
        for _, headers, data in (insert, again):
            assert headers["x-clickhouse-user"] == "relay" and headers["x-clickhouse-key"] == PASSWORD
            assert json.loads(data.splitlines()[0])["request_id"] == "req-ch-1"

    run(body)


def test_a_user_who_may_insert_but_not_create_writes_to_the_existing_table() -> None:
    """ClickHouse checks CREATE before IF NOT EXISTS: a CREATE is never sent for a table that is there."""

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> list[bytes]:
        cap.answers = [EXISTS_YES, 200, 200] + [DENIED_CREATE] * 3  # a CREATE would be refused
        exp = ClickHouseExporter(dest(cap.url), session)
        items = exp.encode(record(), False, ())
        await exp.send(items)
        await exp.send(items)
        return [b[:12] for _, _, b in cap.requests]

    assert run(body) == [b"EXISTS TABLE", b'{"request_id', b'{"request_id']


def test_a_missing_table_the_user_may_not_create_is_said_plainly_and_looked_for_again() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple[ExportError, list[bytes]]:
        cap.answers = [EXISTS_NO, DENIED_CREATE, EXISTS_YES, 200]
        exp = ClickHouseExporter(dest(cap.url, database="analytics", table="llm"), session)
        items = exp.encode(record(), False, ())
        with pytest.raises(ExportError) as e:
            await exp.send(items)
        await exp.send(items)  # an administrator made the table meanwhile
        return e.value, [b[:12] for _, _, b in cap.requests]

    err, sent = run(body)
    assert not err.retryable
    assert err.message.startswith("table analytics.llm does not exist and user 'relay' may not create it (")
    assert "have an administrator create it" in err.message and "(version" not in err.message
    assert sent == [b"EXISTS TABLE", b"CREATE TABLE", b"EXISTS TABLE", b'{"request_id']


def test_a_body_is_exactly_its_items_so_it_never_passes_the_batch_cap() -> None:
    """The pipeline fills a batch up to `max_batch_bytes` by the items' lengths: the body adds nothing to them."""

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple[list[bytes], bytes]:
        cap.answers = [EXISTS_YES]
        exp = ClickHouseExporter(dest(cap.url), session)
        items = [it for i in range(5) for it in exp.encode(record(f"prompt {i}"), False, ())]
        await exp.send(items)
        return items, cap.requests[-1][2]

    items, sent = run(body)
    assert len(sent) == sum(len(it) for it in items)
    lines = sent.decode().splitlines()
    assert len(lines) == 5 and [json.loads(x)["request_id"] for x in lines] == ["req-ch-1"] * 5


def test_the_insert_statement_names_the_table_and_its_columns_in_the_query_parameter() -> None:
    seen: list[str] = []

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        cap.answers = [EXISTS_YES]
        exp = ClickHouseExporter(dest(cap.url), session)
        orig = session.post

        def spy(url: str, **kw):  # type: ignore[no-untyped-def]
            seen.append(kw.get("params", {}).get("query", ""))
            return orig(url, **kw)

        session.post = spy  # type: ignore[method-assign]
        await exp.send(exp.encode(record(), False, ()))

    run(body)
    assert seen[-1].startswith("INSERT INTO `default`.`relaycast_requests` (`request_id`, `client_request_id`, ")
    assert seen[-1].endswith(", `tags.key`, `tags.value`, `record`) FORMAT JSONEachRow")
    names = [c.strip("`") for c in seen[-1].split("(", 1)[1].split(")")[0].split(", ")]
    assert set(names) == set(row(record(), False, ()))  # every key of a row, and nothing else


@pytest.mark.parametrize(
    ("status", "answer", "retryable", "says"),
    [
        (
            401,
            b"Code: 516. DB::Exception: relay: Authentication failed. (AUTHENTICATION_FAILED)",
            False,
            "wrong user or password",
        ),
        (
            401,
            b"Code: 193, e.displayText() = DB::Exception: Wrong password for user relay",
            False,
            "wrong user or password",
        ),
        (500, b"Code: 497. DB::Exception: relay: Not enough privileges. (ACCESS_DENIED)", False, "may not write"),
        (404, b"Code: 81. DB::Exception: Database nodb does not exist. (UNKNOWN_DATABASE)", False, "does not exist"),
        (500, b"Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)", True, "will retry"),
        (500, b"Code: 16. DB::Exception: No such column user in table. (NO_SUCH_COLUMN_IN_TABLE)", False, "columns"),
        (503, b"", True, "HTTP 503"),
    ],
)
def test_clickhouse_errors_are_said_plainly_and_classified(
    status: int, answer: bytes, retryable: bool, says: str
) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> ExportError:
        cap.answers = [EXISTS_YES, (status, {}, answer)]  # the table is there, the INSERT fails
        exp = ClickHouseExporter(dest(cap.url), session)
        with pytest.raises(ExportError) as e:
            await exp.send(exp.encode(record(), False, ()))
        return e.value

    err = run(body)
    assert err.retryable is retryable and says in err.message
    assert PASSWORD not in err.message


def test_a_dropped_table_is_created_again_on_the_retry() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> list[bytes]:
        cap.answers = [
            EXISTS_YES,
            (404, {}, b"Code: 60. DB::Exception: Table default.relaycast_requests doesn't exist."),
            EXISTS_NO,
        ]
        exp = ClickHouseExporter(dest(cap.url), session)
        items = exp.encode(record(), False, ())
        with pytest.raises(ExportError) as e:
            await exp.send(items)
        assert e.value.retryable
        await exp.send(items)
        return [b[:12] for _, _, b in cap.requests]

    assert run(body) == [b"EXISTS TABLE", b'{"request_id', b"EXISTS TABLE", b"CREATE TABLE", b'{"request_id']


def test_a_failed_create_is_tried_again_before_the_next_insert() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> int:
        cap.answers = [EXISTS_NO, (503, {}, b"Code: 202. DB::Exception: Too many simultaneous queries."), EXISTS_NO]
        exp = ClickHouseExporter(dest(cap.url), session)
        items = exp.encode(record(), False, ())
        with pytest.raises(ExportError) as e:
            await exp.send(items)
        assert e.value.retryable
        await exp.send(items)
        return sum(1 for _, _, b in cap.requests if b.startswith(b"CREATE TABLE"))

    assert run(body) == 2


def test_error_code_reads_the_header_then_the_body() -> None:
    assert error_code(b"Code: 516. DB::Exception: x", {"X-ClickHouse-Exception-Code": "194"}) == 194
    assert error_code(b"Code: 516. DB::Exception: x") == 516
    assert error_code(b"<html>bad gateway</html>") is None
    said = first_line(b"Code: 81. DB::Exception: Database nodb does not exist. (UNKNOWN_DATABASE) (version 24.3.1)")
    assert said == "Database nodb does not exist. (UNKNOWN_DATABASE)"
    said = first_line(
        b"Code: 497. DB::Exception: Not enough privileges. (ACCESS_DENIED) (version 24.8.4.13 (official build))"
    )
    assert said == "Not enough privileges. (ACCESS_DENIED)"


def test_test_connection_says_unreachable_plainly() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> str:
        result = await ClickHouseExporter(dest(f"http://127.0.0.1:{free_port()}"), session).test()
        assert not result.ok
        return result.message

    said = run(body)
    assert said.startswith("unreachable: could not connect to ClickHouse at http://127.0.0.1:")
    assert said.count("unreachable") == 1 and said.endswith("(ClientConnectorError); check url")


VERSION = (200, {}, b"24.8.4.13\n")


@pytest.mark.parametrize(
    ("answers", "ok", "says"),
    [
        ([VERSION, EXISTS_YES, 200], True, "accepted user 'relay'; table default.relaycast_requests exists and takes"),
        ([VERSION, EXISTS_NO, 200, 200], True, "accepted user 'relay'; created table default.relaycast_requests"),
        (
            [VERSION, EXISTS_NO, DENIED_CREATE],
            False,
            "table default.relaycast_requests does not exist and user 'relay' may not create it",
        ),
        (
            [VERSION, EXISTS_YES, (500, {}, b"Code: 164. DB::Exception: Cannot insert into table in readonly mode")],
            False,
            "user 'relay' may not write default.relaycast_requests: Cannot insert into table in readonly mode",
        ),
    ],
)
def test_test_connection_proves_the_user_can_insert(answers: list, ok: bool, says: str) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> tuple:
        cap.answers = list(answers)
        result = await ClickHouseExporter(dest(cap.url), session).test()
        return result, cap.requests

    result, requests = run(body)
    assert result.ok is ok and says in result.message, result.message
    assert PASSWORD not in result.message
    if ok:  # the last call is an insert of no rows: privileges and columns checked, nothing written
        assert requests[-1][2] == b""
