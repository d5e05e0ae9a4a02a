"""Dashboard sessions ended by a logout, in the store every process and replica shares, so a logout holds on all
of them (each keeps the set in memory and polls the change marker, `dashboard.revoked`, every second).

Rows last until the session would have expired. The table is bounded: when MAX_ROWS sessions are revoked at once,
every session issued so far ends instead (`dashboard.not_before`), and the rows are cleared.
"""

from __future__ import annotations

from relaycast.store import marks
from relaycast.store.db import Connection

MAX_ROWS = 10_000
CHANGED = "dashboard.revoked"
NOT_BEFORE = "dashboard.not_before"


def revoke(conn: Connection, sid: str, expires_s: int, now_s: int) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM dashboard_revoked WHERE expires_s < ?", (now_s,))
        n = int(conn.query_in_tx("SELECT count(*) FROM dashboard_revoked")[0][0])
        if n >= MAX_ROWS:
            conn.execute("DELETE FROM dashboard_revoked")
            marks.put(conn, NOT_BEFORE, str(now_s + 1), now_s * 1000)
        else:
            conn.execute(
                "INSERT INTO dashboard_revoked (sid, expires_s) VALUES (?, ?) ON CONFLICT (sid) DO NOTHING",
                (sid, expires_s),
            )
        marks.touch(conn, CHANGED, now_s * 1000)


def marker(conn: Connection) -> str:
    return marks.get(conn, CHANGED) or ""


def load(conn: Connection, now_s: int) -> tuple[str, dict[str, int], int]:
    """(marker, revoked session id -> its expiry, sessions issued before this are over)."""
    rows = conn.query("SELECT sid, expires_s FROM dashboard_revoked WHERE expires_s >= ?", (now_s,))
    return marker(conn), {str(s): int(e) for s, e in rows}, int(marks.get(conn, NOT_BEFORE) or 0)
