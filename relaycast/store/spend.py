"""What a scope (key, user or feature) has spent since a moment, from the hourly rollups: budgets start from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from relaycast.log import EventLog
from relaycast.store.db import Connection
from relaycast.store.reader import StoreReader


def spend_since(conn: Connection, scope: str, name: str, start_s: int) -> int:
    """Pico-dollars spent by `scope`=`name` in the hours starting at or after `start_s` (unix seconds)."""
    row = conn.query(
        "SELECT sum(cost_pusd) FROM usage_hourly WHERE dim = ? AND value = ? AND hour >= ?", (scope, name, start_s)
    )
    return int(row[0][0] or 0)


def spend_loader(reader: Callable[[], StoreReader | None], log: EventLog) -> Callable[[str, str, int], Awaitable[int]]:
    """What the store says a scope spent since a time, in pico-dollars, read through `reader()` (0 without a store
    or when it is down: the limiter then counts from zero, and the log says so)."""

    async def load(scope: str, name: str, start_s: int) -> int:
        r = reader()
        if r is None:
            return 0
        try:
            return await r.run(spend_since, scope, name, start_s)
        except Exception as e:  # noqa: BLE001 - a store that is down
            log.error("limits_spend_unknown", scope=scope, scope_name=name, error=type(e).__name__)
            return 0

    return load
