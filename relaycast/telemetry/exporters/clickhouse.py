"""ClickHouse: request records as rows of a table, inserted over the HTTP interface in batches.

    POST <url>/?query=INSERT INTO `db`.`table` FORMAT JSONEachRow     (one JSON object per line, one per request)
    X-ClickHouse-User: <user>
    X-ClickHouse-Key: <password>

(https://clickhouse.com/docs/interfaces/http: the query in the URL and the data in the body; the credential headers
work from 18.x on.) Before its first insert the exporter asks `EXISTS TABLE` and creates the table only when it is
missing (again after a failure, and again if the table disappears), so a fresh database needs nothing from the user
and a user who may insert but not create (a GRANT INSERT only, or a profile with `allow_ddl = 0`) writes to a table
an administrator made: ClickHouse checks the CREATE privilege before it looks at IF NOT EXISTS, so an unconditional
`CREATE TABLE IF NOT EXISTS` would fail for that user even when the table is there.

The table (`ddl`) keeps what a user queries as columns, in types that exist from ClickHouse 18.16 to today (no
DateTime64, Map, JSON or LowCardinality): times in UTC, tokens summed over the request's attempts (as its cost is),
`cost_pusd` exact integer pico-dollars (so `sum(cost_pusd)` agrees to the pico-dollar with every other sink) and
`cost_usd` the same as Decimal(38, 12), tags as a Nested key/value pair of arrays
(`tags.value[indexOf(tags.key, 'team')]`), and `record`, the whole `relaycast.request.v1` JSON record (prompt and
completion left out in privacy mode). ReplacingMergeTree ordered by (started_at, request_id): a batch sent twice (a
retry after a timeout, a replay from the spool) collapses to one row when parts merge; `SELECT ... FINAL` or
`uniqExact(request_id)` counts exactly before that.

Errors are ClickHouse's own (`Code: 516. DB::Exception: ...` in the body, `X-ClickHouse-Exception-Code` in newer
versions): a wrong password or a missing grant is said plainly and never retried; overload and timeouts are.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import orjson

from relaycast.costs.money import format_usd
from relaycast.records import RequestRecord
from relaycast.telemetry import spans
from relaycast.telemetry.exporters.base import ExportError, TestResult, display_url
from relaycast.telemetry.exporters.jsonrecord import record_json, rfc3339
from relaycast.telemetry.kinds.clickhouse import ClickHouseOptions
from relaycast.telemetry.settings import DestinationConfig
from relaycast.version import __version__

MiB = 1024 * 1024
RECORD_MAX_BYTES = 4 * MiB  # a larger record keeps its metadata; its prompt and completion become DROPPED_IO

# ClickHouse error codes (ClickHouse/ClickHouse, src/Common/ErrorCodes.cpp) and what each means for a sender.
AUTH_CODES = frozenset(
    {192, 193, 194, 195, 516}
)  # UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, IP_ADDRESS_..., AUTHENTICATION_FAILED
DENIED_CODES = frozenset(
    {164, 291, 392, 497}
)  # READONLY, DATABASE_ACCESS_DENIED, QUERY_IS_PROHIBITED (allow_ddl = 0), ACCESS_DENIED
UNKNOWN_DATABASE = 81
UNKNOWN_TABLE = 60
SCHEMA_CODES = frozenset({8, 16, 26, 27, 41, 53, 70, 72, 117, 349})  # a table whose columns are not ours
RETRY_CODES = frozenset(
    {159, 202, 209, 210, 218, 236, 241, 242, 252, 285, 319, 364, 394, 425, 999}
)  # TIMEOUT_EXCEEDED, TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT, NETWORK_ERROR, TABLE_IS_DROPPED, ABORTED,
# MEMORY_LIMIT_EXCEEDED, TABLE_IS_READ_ONLY, TOO_MANY_PARTS, TOO_FEW_LIVE_REPLICAS, UNKNOWN_STATUS_OF_INSERT,
# RECEIVED_ERROR_TOO_MANY_REQUESTS, QUERY_WAS_CANCELLED, SYSTEM_ERROR, KEEPER_EXCEPTION
_CODE = re.compile(rb"Code:\s*(\d+)")


class ClickHouseError(ExportError):
    """An export error with ClickHouse's error code, when it gave one."""

    def __init__(self, message: str, *, retryable: bool, status: int | None, code: int | None, said: str = "") -> None:
        super().__init__(message, retryable=retryable, status=status)
        self.code = code
        self.said = said  # ClickHouse's own words


COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "String"),
    ("client_request_id", "String"),
    ("trace_id", "String"),
    ("started_at", "DateTime('UTC')"),
    ("started_unix_ns", "Int64"),
    ("endpoint", "String"),
    ("model_requested", "String"),
    ("model", "String"),
    ("provider", "String"),
    ("vendor", "String"),
    ("status_code", "UInt16"),
    ("error_class", "String"),
    ("user", "String"),
    ("session_id", "String"),
    ("feature", "String"),
    ("key_name", "String"),
    ("stream", "UInt8"),
    ("duration_ms", "Float64"),
    ("ttft_ms", "Nullable(Float64)"),
    ("prompt_tokens", "UInt64"),
    ("completion_tokens", "UInt64"),
    ("cached_tokens", "UInt64"),
    ("cache_write_tokens", "UInt64"),
    ("reasoning_tokens", "UInt64"),
    ("cost_pusd", "Nullable(Int64)"),
    ("cost_usd", "Nullable(Decimal(38, 12))"),
    ("cost_source", "String"),
    ("attempts", "UInt16"),
    ("finish_reason", "String"),
    ("tags", "Nested(key String, value String)"),
    ("record", "String"),
)


def qualified(o: ClickHouseOptions) -> str:
    """`db`.`table`: the names are plain identifiers (checked when the config is read), quoted all the same."""
    return f"`{o.database}`.`{o.table}`"


def ddl(o: ClickHouseOptions) -> str:
    cols = ",\n  ".join(f"`{name}` {kind}" for name, kind in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(o)} (\n  {cols}\n)\n"
        "ENGINE = ReplacingMergeTree()\nPARTITION BY toYYYYMM(started_at)\nORDER BY (started_at, request_id)"
    )


def insert_columns() -> list[str]:
    """The columns an insert names: a Nested column is inserted as its arrays (`tags.key`, `tags.value`)."""
    out: list[str] = []
    for name, kind in COLUMNS:
        if kind.startswith("Nested("):
            out.extend(f"{name}.{sub.split()[0]}" for sub in kind[len("Nested(") : -1].split(","))
        else:
            out.append(name)
    return out


def insert_query(o: ClickHouseOptions) -> str:
    """The insert names its columns: a table that lacks one is refused at once (Code 16), before any data."""
    cols = ", ".join(f"`{c}`" for c in insert_columns())
    return f"INSERT INTO {qualified(o)} ({cols}) FORMAT JSONEachRow"


def row(record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """One table row (keys are the columns). DateTime as 'YYYY-MM-DD hh:mm:ss', read in the column's UTC zone;
    the decimal cost as an unquoted JSON number, which ClickHouse parses exactly (18.16 refuses a quoted one)."""
    a = record.attribution
    last = record.final_attempt
    cost, cost_source = record.cost
    usages = [x.usage for x in record.attempts if x.usage is not None]
    merged = {**record.all_tags(), **dict(tags)}  # the destination's own tags (the operator's) win
    started = spans.trace_ids(record)
    return {
        "request_id": record.request_id,
        "client_request_id": record.client_request_id or "",
        "trace_id": started.trace_id,
        "started_at": _datetime(record.started_unix_ns),
        "started_unix_ns": record.started_unix_ns,
        "endpoint": record.endpoint,
        "model_requested": record.model_requested,
        "model": (last.response_model or last.model) if last else "",
        "provider": last.provider if last else "",
        "vendor": last.vendor if last else "",
        "status_code": max(0, min(record.status_code, 65535)),
        "error_class": record.error_class or "",
        "user": a.user or "",
        "session_id": a.session_id or "",
        "feature": a.feature or "",
        "key_name": a.key_name or "",
        "stream": 1 if record.stream else 0,
        "duration_ms": record.duration_ns / 1e6,
        "ttft_ms": None if last is None or last.ttft_ns is None else last.ttft_ns / 1e6,
        "prompt_tokens": sum(u.prompt_tokens for u in usages),
        "completion_tokens": sum(u.completion_tokens for u in usages),
        "cached_tokens": sum(u.cached_tokens for u in usages),
        "cache_write_tokens": sum(u.cache_write_tokens for u in usages),
        "reasoning_tokens": sum(u.reasoning_tokens for u in usages),
        "cost_pusd": cost,
        "cost_usd": None if cost is None else orjson.Fragment(format_usd(cost) or "0"),
        "cost_source": cost_source,
        "attempts": len(record.attempts),
        "finish_reason": (last.finish_reason or "") if last else "",
        "tags.key": list(merged),
        "tags.value": list(merged.values()),
        "record": record_json(record, privacy, tags, max_bytes=RECORD_MAX_BYTES).decode(),
    }


def _datetime(unix_ns: int) -> str:
    text = rfc3339(unix_ns)  # 2025-10-09T08:53:20.123456Z
    return text[:10] + " " + text[11:19]


def error_code(body: bytes, headers: Any = None) -> int | None:
    """ClickHouse's error code: the `X-ClickHouse-Exception-Code` header (newer servers), else `Code: N` in the
    body (every version)."""
    if headers is not None:
        v = headers.get("X-ClickHouse-Exception-Code")
        if v and v.strip().isdigit():
            return int(v.strip())
    m = _CODE.search(body[:4096])
    return int(m.group(1)) if m else None


def first_line(body: bytes) -> str:
    """The exception's own words, short: 'DB::Exception: ...' without the stack or version suffix."""
    text = body[:2000].decode("utf-8", "replace").strip().splitlines()
    line = text[0] if text else ""
    line = re.sub(r"^Code:\s*\d+[.,]?\s*", "", line)
    line = line.replace("e.displayText() = ", "").replace("DB::Exception: ", "")
    line = re.sub(r",?\s*e\.what\(\) = DB::Exception$", "", line)
    line = re.sub(r"\s*\(version [^()]*(\([^()]*\))?\)\s*$", "", line)  # "(version 24.8.4.13 (official build))"
    return line[:300]


class ClickHouseExporter:
    """Items are rows already ending in their newline, so a request body is exactly the sum of its items and never
    passes `max_batch_bytes`."""

    kind = "clickhouse"
    max_batch_bytes = 16 * MiB  # one INSERT's body; ClickHouse takes far more, this keeps a retry cheap
    max_age_s = None

    def __init__(self, dest: DestinationConfig, session: aiohttp.ClientSession) -> None:
        assert isinstance(dest.options, ClickHouseOptions)
        self.dest = dest
        self.o: ClickHouseOptions = dest.options
        self._session = session
        self._where = display_url(self.o.url, with_path=False)
        self._headers = {
            "X-ClickHouse-User": self.o.user,
            "user-agent": f"relaycast/{__version__}",
        }
        if self.o.password:
            self._headers["X-ClickHouse-Key"] = self.o.password
        self._table_ready = False
        self._table_lock = asyncio.Lock()

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        """One JSONEachRow line, its newline included (the pipeline sizes batches by their items' lengths)."""
        return [orjson.dumps(row(record, privacy, tags), default=str, option=orjson.OPT_APPEND_NEWLINE)]

    @staticmethod
    def body(items: list[bytes]) -> bytes:
        return b"".join(items)

    async def send(self, items: list[bytes]) -> None:
        if not items:
            return
        await self.ensure_table()
        try:
            await self._query(insert_query(self.o), self.body(items))
        except ExportError as e:
            if isinstance(e, ClickHouseError) and e.code == UNKNOWN_TABLE:
                self._table_ready = False  # dropped since: looked for (and made) again on the retry
            raise

    async def ensure_table(self) -> None:
        """Once per exporter: the table is looked for, and created only when missing. A failure leaves it to the
        next send."""
        if self._table_ready:
            return
        async with self._table_lock:
            if not self._table_ready:
                if not await self._table_exists():
                    await self._create_table()
                self._table_ready = True

    async def _table_exists(self) -> bool:
        """`EXISTS TABLE`, which any user with a privilege on the table may ask. Refused (a server that hides the
        table from this user), the table is taken as there: the insert then says what is wrong."""
        try:
            return (await self._query(f"EXISTS TABLE {qualified(self.o)}", None)).strip() == b"1"
        except ClickHouseError as e:
            if e.code in DENIED_CODES:
                return True
            raise

    async def _create_table(self) -> None:
        try:
            await self._query(ddl(self.o), None)
        except ClickHouseError as e:
            if e.code not in DENIED_CODES:
                raise
            raise ClickHouseError(
                f"table {self.o.database}.{self.o.table} does not exist and user '{self.o.user}' may not create it "
                f"({e.said}): have an administrator create it (the CREATE TABLE is in docs/broadcast.md, "
                "ClickHouse), or allow this user to create tables",
                retryable=False,
                status=e.status,
                code=e.code,
                said=e.said,
            ) from None

    async def _query(self, query: str, data: bytes | None, database: str | None = None) -> bytes:
        """Run a statement: in the body when there is no data, else in the URL (`query=`) before the data."""
        params = {"database": database} if database else {}
        if data is None:
            body = query.encode()
        else:
            params["query"] = query
            body = data
        try:
            async with self._session.post(
                self.o.url + "/",
                params=params,
                data=body,
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=self.dest.timeout_s),
                allow_redirects=False,  # the credential headers must not follow one
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise self._error(resp.status, raw, resp.headers)
                return raw
        except ExportError:
            raise
        except TimeoutError:
            raise ExportError(
                f"ClickHouse at {self._where} did not answer within {self.dest.timeout_s:g}s", retryable=True
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            raise ExportError(
                f"could not connect to ClickHouse at {self._where} ({type(e).__name__})", retryable=True
            ) from None

    def _error(self, status: int, body: bytes, headers: Any) -> ClickHouseError:
        code = error_code(body, headers)
        said = first_line(body)
        o = self.o
        if code in AUTH_CODES or (code is None and status in (401, 403)):
            msg, retry = f"ClickHouse rejected user '{o.user}': wrong user or password (Code {code})", False
        elif code in DENIED_CODES:
            msg, retry = f"user '{o.user}' may not write {o.database}.{o.table}: {said}", False
        elif code == UNKNOWN_DATABASE:
            msg, retry = f"database '{o.database}' does not exist: create it (CREATE DATABASE {o.database})", False
        elif code == UNKNOWN_TABLE:
            msg, retry = f"table {o.database}.{o.table} does not exist (it is created again on the next try)", True
        elif code in SCHEMA_CODES:
            msg, retry = f"table {o.database}.{o.table} does not have relaycast's columns: {said}", False
        elif code in RETRY_CODES:
            msg, retry = f"ClickHouse is busy or failing, will retry: {said}", True
        elif code is not None:
            msg, retry = f"ClickHouse refused the insert (Code {code}): {said}", status in (408, 429) or status >= 502
        else:
            msg, retry = f"ClickHouse at {self._where} answered HTTP {status}", status in (408, 429) or status >= 500
        return ClickHouseError(msg, retryable=retry, status=status, code=code, said=said)

    async def test(self) -> TestResult:
        """What a send needs, in its order: `SELECT version()` as the configured user in the configured database
        (the address, the credentials, the database); the table, created as a send would when it is missing; then
        an insert of no rows naming relaycast's columns, which ClickHouse answers with the user's INSERT privilege
        and the table's columns checked and nothing written (an empty HTTP insert is a success, ClickHouse#8599)."""
        table = f"{self.o.database}.{self.o.table}"
        try:
            version = (await self._query("SELECT version()", None, database=self.o.database)).decode().strip()
            created = not await self._table_exists()
            if created:
                await self._create_table()
            await self._query(insert_query(self.o), b"")
        except ExportError as e:
            if e.status is None:
                return TestResult(False, f"unreachable: {e.message}; check url")
            code = e.code if isinstance(e, ClickHouseError) else None
            if code in AUTH_CODES or (code is None and e.status in (401, 403)):
                return TestResult(False, f"invalid credentials: {e.message}")
            return TestResult(False, e.message)
        then = f"created table {table}" if created else f"table {table} exists and takes inserts"
        return TestResult(True, f"ok: ClickHouse {version} at {self._where} accepted user '{self.o.user}'; {then}")

    async def close(self) -> None:
        return None  # the session belongs to the caller
