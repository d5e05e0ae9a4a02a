"""What a scope (key, user or feature) has spent since a moment, from the hourly rollups: budgets start from it."""

from __future__ import annotations

from relaycast.store.db import Connection


def spend_since(conn: Connection, scope: str, name: str, start_s: int) -> int:
    """Pico-dollars spent by `scope`=`name` in the hours starting at or after `start_s` (unix seconds)."""
    row = conn.query(
        "SELECT sum(cost_pusd) FROM usage_hourly WHERE dim = ? AND value = ? AND hour >= ?", (scope, name, start_s)
    )
    return int(row[0][0] or 0)
