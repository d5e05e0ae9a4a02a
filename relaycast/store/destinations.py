"""Broadcast destinations saved from the dashboard, the admin API or the CLI, in the store every replica shares
(SQLite or Postgres), and the Broadcast toggle. Secrets arrive here sealed (`relaycast.sealed`); this module never
sees them in the clear.

Every change writes a new value under `broadcast.changed`: replicas poll that one row and reload when it moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relaycast.store import marks
from relaycast.store.db import Connection

MAX_DESTINATIONS = 32
CHANGED = "broadcast.changed"
ENABLED = "broadcast.enabled"
_COLS = (
    "name",
    "kind",
    "settings",
    "secrets",
    "created_ms",
    "updated_ms",
    "tested_ms",
    "test_ok",
    "test_message",
)


class TooMany(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    kind: str
    settings: dict[str, Any]
    sealed: str | None  # the secret settings, as one sealed JSON object
    created_ms: int
    updated_ms: int
    tested_ms: int | None
    test_ok: bool | None
    test_message: str | None


def rows(conn: Connection) -> list[Row]:
    found = conn.query(f"SELECT {', '.join(_COLS)} FROM broadcast_destinations ORDER BY created_ms, name")
    return [_row(r) for r in found]


def find(conn: Connection, name: str) -> Row | None:
    found = conn.query(f"SELECT {', '.join(_COLS)} FROM broadcast_destinations WHERE name = ?", (name,))
    return _row(found[0]) if found else None


def _row(r: tuple[Any, ...]) -> Row:
    d = dict(zip(_COLS, r, strict=True))
    return Row(
        name=d["name"],
        kind=d["kind"],
        settings=orjson.loads(d["settings"]),
        sealed=d["secrets"],
        created_ms=int(d["created_ms"]),
        updated_ms=int(d["updated_ms"]),
        tested_ms=int(d["tested_ms"]) if d["tested_ms"] is not None else None,
        test_ok=bool(d["test_ok"]) if d["test_ok"] is not None else None,
        test_message=d["test_message"],
    )


def state(conn: Connection) -> tuple[bool, list[Row]]:
    """(the Broadcast toggle, every saved destination)."""
    return enabled(conn), rows(conn)


def save(
    conn: Connection,
    name: str,
    kind: str,
    settings: dict[str, Any],
    sealed: str | None,
    now_ms: int,
    test: tuple[bool, str] | None,
) -> bool:
    """Create or replace a destination (one statement: two replicas saving the same name at once both succeed,
    the last one wins); True when it is new."""
    with conn.transaction():
        found = conn.query_in_tx("SELECT 1 FROM broadcast_destinations WHERE name = ?", (name,))
        if not found:
            n = conn.query_in_tx("SELECT count(*) FROM broadcast_destinations")[0][0]
            if int(n) >= MAX_DESTINATIONS:
                raise TooMany(f"at most {MAX_DESTINATIONS} destinations can be saved")
        row = (
            name,
            kind,
            orjson.dumps(settings).decode(),
            sealed,
            now_ms,
            now_ms,
            now_ms if test is not None else None,
            int(test[0]) if test is not None else None,
            test[1][:500] if test is not None else None,
        )
        kept = ("name", "created_ms")
        conn.execute(
            f"INSERT INTO broadcast_destinations ({', '.join(_COLS)}) VALUES ({', '.join('?' for _ in _COLS)}) "
            f"ON CONFLICT (name) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLS if c not in kept)}",
            row,
        )
        marks.touch(conn, CHANGED, now_ms)
    return not found


def delete(conn: Connection, name: str, now_ms: int) -> bool:
    with conn.transaction():
        n = conn.execute("DELETE FROM broadcast_destinations WHERE name = ?", (name,))
        if n:
            marks.touch(conn, CHANGED, now_ms)
    return n == 1


def set_enabled(conn: Connection, on: bool, now_ms: int) -> None:
    with conn.transaction():
        marks.put(conn, ENABLED, "true" if on else "false", now_ms)
        marks.touch(conn, CHANGED, now_ms)


def enabled(conn: Connection) -> bool:
    return marks.get(conn, ENABLED) != "false"


def marker(conn: Connection) -> str:
    """What replicas poll: it changes with every save, delete and toggle."""
    return marks.get(conn, CHANGED) or ""
