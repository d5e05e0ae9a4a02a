"""Named values in the store's `gateway_settings` table, shared by every process and replica: flags (the Broadcast
toggle, whether keys were ever issued) and change markers, which a change rewrites with a new random value and
which pollers compare with the value they last saw (replicas' clocks never enter into it)."""

from __future__ import annotations

import secrets

from relaycast.store.db import Connection


def get(conn: Connection, name: str) -> str | None:
    """A value, outside a transaction."""
    found = conn.query("SELECT value FROM gateway_settings WHERE name = ?", (name,))
    return str(found[0][0]) if found else None


def put(conn: Connection, name: str, value: str, now_ms: int, *, keep: bool = False) -> None:
    """Set a value, inside a transaction; `keep`: only if it has none yet."""
    conn.execute(
        "INSERT INTO gateway_settings (name, value, updated_ms) VALUES (?, ?, ?) ON CONFLICT (name) DO "
        + ("NOTHING" if keep else "UPDATE SET value = excluded.value, updated_ms = excluded.updated_ms"),
        (name, value, now_ms),
    )


def touch(conn: Connection, name: str, now_ms: int) -> None:
    """Move a change marker, inside the transaction of the change."""
    put(conn, name, secrets.token_hex(8), now_ms)
