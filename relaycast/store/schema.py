"""The store's schema, as numbered migrations applied in order on start (one transaction each, recorded in
`schema_version`; on Postgres under an advisory lock, so replicas starting together migrate once).

Money is integer pico-dollars (BIGINT; NULL = unpriced); times are unix milliseconds, durations microseconds.
Dimensions are '' rather than NULL so they can be part of the rollups' primary keys.

Rollups (`*_hourly`, and `*_minute` for the last MINUTE_RETENTION_S) are upserted with each batch of raw rows, in
the same transaction: the analytics read them, so the dashboard's cost does not grow with the number of stored
requests.
"""

from __future__ import annotations

_DIMS = "model_requested TEXT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, target TEXT NOT NULL"
_TOKENS = (
    "prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, cached_tokens BIGINT NOT NULL, "
    "cache_write_tokens BIGINT NOT NULL, reasoning_tokens BIGINT NOT NULL"
)

# SQLite: an INTEGER PRIMARY KEY is the rowid itself (no second index); Postgres: a 64-bit key.
ID_PRIMARY_KEY = {"sqlite": "INTEGER PRIMARY KEY", "postgres": "BIGINT PRIMARY KEY"}

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""CREATE TABLE requests (
            id {{ID_PRIMARY_KEY}}, request_id TEXT NOT NULL, ts_ms BIGINT NOT NULL, endpoint TEXT NOT NULL, {_DIMS},
            key_name TEXT NOT NULL, user_id TEXT NOT NULL, feature TEXT NOT NULL, app_url TEXT, session_id TEXT,
            tags TEXT, status INTEGER NOT NULL, error_class TEXT, error_message TEXT, stream SMALLINT NOT NULL,
            duration_us BIGINT NOT NULL, ttft_us BIGINT, attempts INTEGER NOT NULL, {_TOKENS},
            cost_pusd BIGINT, cost_source TEXT NOT NULL, params TEXT, input_messages TEXT, output_text TEXT)""",
            "CREATE INDEX requests_ts ON requests (ts_ms)",
            "CREATE INDEX requests_request_id ON requests (request_id)",
            "CREATE INDEX requests_user_ts ON requests (user_id, ts_ms)",
            "CREATE INDEX requests_model_ts ON requests (model, ts_ms)",
            f"""CREATE TABLE attempts (
            request_row BIGINT NOT NULL, idx INTEGER NOT NULL, ts_ms BIGINT NOT NULL, model TEXT NOT NULL,
            provider TEXT NOT NULL, target TEXT NOT NULL, started_us BIGINT NOT NULL, duration_us BIGINT NOT NULL,
            ttft_us BIGINT, upstream_status INTEGER, error_class TEXT, error_message TEXT, finish_reason TEXT,
            {_TOKENS}, cost_pusd BIGINT, cost_source TEXT NOT NULL, PRIMARY KEY (request_row, idx))""",
            "CREATE INDEX attempts_ts ON attempts (ts_ms)",
            f"""CREATE TABLE usage_hourly (
            hour BIGINT NOT NULL, dim TEXT NOT NULL, value TEXT NOT NULL,
            requests BIGINT NOT NULL, errors BIGINT NOT NULL, {_TOKENS}, cost_pusd BIGINT NOT NULL,
            unpriced BIGINT NOT NULL, estimated BIGINT NOT NULL, reported BIGINT NOT NULL,
            PRIMARY KEY (dim, hour, value))""",
            """CREATE TABLE attempts_hourly (
            hour BIGINT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, target TEXT NOT NULL,
            outcome TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (hour, provider, model, target, outcome))""",
            """CREATE TABLE latency_hourly (
            hour BIGINT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, target TEXT NOT NULL,
            kind SMALLINT NOT NULL, bucket INTEGER NOT NULL, n BIGINT NOT NULL,
            PRIMARY KEY (hour, provider, model, target, kind, bucket))""",
        ),
    ),
    (
        2,
        (
            # Monitor incidents. At most one open incident per (rule, scope), enforced by the database: replicas that
            # share a store race to open it, and only the one whose insert succeeds notifies.
            """CREATE TABLE incidents (
            id TEXT PRIMARY KEY, rule TEXT NOT NULL, scope TEXT NOT NULL, kind TEXT NOT NULL, opened_ms BIGINT NOT NULL,
            resolved_ms BIGINT, value DOUBLE PRECISION, threshold DOUBLE PRECISION, message TEXT NOT NULL,
            resolve_message TEXT, details TEXT)""",
            "CREATE UNIQUE INDEX incidents_one_open ON incidents (rule, scope) WHERE resolved_ms IS NULL",
            "CREATE INDEX incidents_opened ON incidents (opened_ms)",
        ),
    ),
    (
        3,
        (
            # Virtual gateway keys: the secret is never stored, only its SHA-256; `prefix` is what lists show.
            """CREATE TABLE gateway_keys (
            name TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, owner TEXT, models TEXT,
            user_id TEXT, feature TEXT, tags TEXT, limits TEXT, created_ms BIGINT NOT NULL, expires_ms BIGINT,
            revoked_ms BIGINT, rotated_ms BIGINT, updated_ms BIGINT NOT NULL)""",
            "CREATE INDEX gateway_keys_updated ON gateway_keys (updated_ms)",
        ),
    ),
    (
        4,
        (
            # Stored responses of the Responses API (`store/responses.py`): the response and its conversation.
            "CREATE TABLE stored_responses (id TEXT PRIMARY KEY, ts_ms BIGINT NOT NULL, body TEXT NOT NULL)",
            "CREATE INDEX stored_responses_ts ON stored_responses (ts_ms)",
        ),
    ),
    (
        5,
        (
            # `split` 1: a request whose tokens or cost are not all its final attempt's (an earlier attempt was
            # billed too). Filtered spend by model, provider or target reads those from their attempts (each
            # attempt's cost belongs to its own model) and every other request from its own row.
            "ALTER TABLE requests ADD COLUMN split SMALLINT NOT NULL DEFAULT 0",
            "CREATE INDEX requests_split ON requests (ts_ms) WHERE split = 1",
        ),
    ),
    (
        6,
        (
            # Broadcast destinations made in the dashboard, the admin API or the CLI (`telemetry/saved.py`):
            # `settings` is the destination's config as JSON without its secrets; `secrets` holds those, encrypted
            # (`relaycast/sealed.py`). `gateway_settings` holds the Broadcast toggle and the change marker that
            # every replica polls (`broadcast.changed`).
            """CREATE TABLE broadcast_destinations (
            name TEXT PRIMARY KEY, kind TEXT NOT NULL, settings TEXT NOT NULL, secrets TEXT,
            created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, tested_ms BIGINT, test_ok SMALLINT,
            test_message TEXT)""",
            "CREATE TABLE gateway_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL, updated_ms BIGINT NOT NULL)",
        ),
    ),
    (
        7,
        (
            # Per-minute twins of the hourly rollups, for the recent ranges (up to MINUTE_RANGE_S) at minute
            # resolution: the same rows with `minute` (unix seconds) for `hour`, kept MINUTE_RETENTION_S.
            f"""CREATE TABLE usage_minute (
            minute BIGINT NOT NULL, dim TEXT NOT NULL, value TEXT NOT NULL,
            requests BIGINT NOT NULL, errors BIGINT NOT NULL, {_TOKENS}, cost_pusd BIGINT NOT NULL,
            unpriced BIGINT NOT NULL, estimated BIGINT NOT NULL, reported BIGINT NOT NULL,
            PRIMARY KEY (dim, minute, value))""",
            """CREATE TABLE attempts_minute (
            minute BIGINT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, target TEXT NOT NULL,
            outcome TEXT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (minute, provider, model, target, outcome))""",
            """CREATE TABLE latency_minute (
            minute BIGINT NOT NULL, model TEXT NOT NULL, provider TEXT NOT NULL, target TEXT NOT NULL,
            kind SMALLINT NOT NULL, bucket INTEGER NOT NULL, n BIGINT NOT NULL,
            PRIMARY KEY (minute, provider, model, target, kind, bucket))""",
        ),
    ),
    (
        8,
        (
            # Dashboard sessions ended by a logout (`store/sessions.py`): every process and replica refuses them.
            "CREATE TABLE dashboard_revoked (sid TEXT PRIMARY KEY, expires_s BIGINT NOT NULL)",
        ),
    ),
)

LATEST = MIGRATIONS[-1][0]

USAGE_SUMS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_pusd",
    "unpriced",
    "estimated",
    "reported",
)
USAGE_KEYS = ("dim", "hour", "value")
# usage_hourly holds one row per hour for each value of each dimension (and dim 'all', value ''), so a grouping
# reads only its own rows: their number grows with distinct users or models per hour, not with requests.
USAGE_DIMS = ("all", "model", "provider", "target", "key", "user", "feature", "route")
ATTEMPT_KEYS = ("hour", "provider", "model", "target", "outcome")
LATENCY_KEYS = ("hour", "provider", "model", "target", "kind", "bucket")
# The per-minute rollups (`*_minute`): the same keys with `minute` for `hour`, kept this long (older rows are
# deleted with the hourly retention); the analytics read them for ranges up to MINUTE_RANGE_S.
MINUTE_RETENTION_S = 48 * 3600
MINUTE_RANGE_S = 6 * 3600


def minute_keys(keys: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("minute" if k == "hour" else k for k in keys)


REQUEST_COLUMNS = (
    "id",
    "request_id",
    "ts_ms",
    "endpoint",
    "model_requested",
    "model",
    "provider",
    "target",
    "key_name",
    "user_id",
    "feature",
    "app_url",
    "session_id",
    "tags",
    "status",
    "error_class",
    "error_message",
    "stream",
    "duration_us",
    "ttft_us",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_pusd",
    "cost_source",
    "params",
    "input_messages",
    "output_text",
    "split",
)
ATTEMPT_COLUMNS = (
    "request_row",
    "idx",
    "ts_ms",
    "model",
    "provider",
    "target",
    "started_us",
    "duration_us",
    "ttft_us",
    "upstream_status",
    "error_class",
    "error_message",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_pusd",
    "cost_source",
)


def upsert_sql(table: str, keys: tuple[str, ...], sums: tuple[str, ...]) -> str:
    cols = keys + sums
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in sums)
    return (
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )
