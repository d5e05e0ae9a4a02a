"""Where the dashboard's logouts are shared, so that a session one process ended is refused by every other:

- `StoreShare`: in the store (`store/sessions.py`), which every worker and replica that shares it reads;
- `HostShare`: without a store, in the host's state process (`RevokedSessions`, in its memory), which every
  worker of `relaycast serve --workers N` reads.

Each gateway polls the marker every second and loads the set when it changed (`server.dashboard.Dashboard.sync`).
The state process's set lives as long as that process: a worker keeps what it loaded when it restarts, and
the sessions themselves end with the host (their secret is the host's: `server.host.SESSION_SECRET_ENV`).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Protocol

from relaycast.store import sessions
from relaycast.store.reader import StoreReader

if TYPE_CHECKING:
    from relaycast.telemetry.channel import HostClient

MAX_REVOKED = sessions.MAX_ROWS
MAX_SID = 64
QUERY_TIMEOUT_S = 2.0


class SessionShare(Protocol):
    async def revoke(self, sid: str, expires_s: int, now_s: int) -> None: ...

    async def marker(self) -> str: ...

    async def load(self, now_s: int) -> tuple[str, dict[str, int], int]:
        """(marker, revoked session id -> its expiry, sessions issued before this are over)."""
        ...


class StoreShare:
    def __init__(self, reader: StoreReader) -> None:
        self._reader = reader

    async def revoke(self, sid: str, expires_s: int, now_s: int) -> None:
        await self._reader.run(sessions.revoke, sid, expires_s, now_s)

    async def marker(self) -> str:
        m: str = await self._reader.run(sessions.marker)
        return m

    async def load(self, now_s: int) -> tuple[str, dict[str, int], int]:
        got: tuple[str, dict[str, int], int] = await self._reader.run(sessions.load, now_s)
        return got


class HostShare:
    """Through the host's state process (`HostClient`); its questions read no records."""

    def __init__(self, host: HostClient, timeout_s: float = QUERY_TIMEOUT_S) -> None:
        self._host = host
        self._timeout_s = timeout_s

    async def revoke(self, sid: str, expires_s: int, now_s: int) -> None:
        await self._host.query("session_revoke", [sid, expires_s, now_s], self._timeout_s, after_records=False)

    async def marker(self) -> str:
        m: str = await self._host.query("session_marker", None, self._timeout_s, after_records=False)
        return m

    async def load(self, now_s: int) -> tuple[str, dict[str, int], int]:
        m, revoked, not_before = await self._host.query("session_load", now_s, self._timeout_s, after_records=False)
        return m, revoked, not_before


class RevokedSessions:
    """The state process's set of ended sessions, as `store/sessions.py` keeps them in a store: each until it
    would have expired; when MAX_REVOKED are ended at once, every session issued so far ends instead."""

    def __init__(self, max_revoked: int = MAX_REVOKED) -> None:
        self._revoked: dict[str, int] = {}
        self._max = max_revoked
        self._not_before = 0
        self._instance = secrets.token_hex(4)  # a process started again has another marker
        self._version = 0

    def revoke(self, arg: Any) -> None:
        sid, expires_s, now_s = arg
        if not (isinstance(sid, str) and 0 < len(sid) <= MAX_SID and type(expires_s) is int and type(now_s) is int):
            raise ValueError("a revoked session is its id, its expiry and the time, in unix seconds")
        self._revoked = {s: e for s, e in self._revoked.items() if e >= now_s}
        if len(self._revoked) >= self._max:
            self._revoked.clear()
            self._not_before = now_s + 1
        else:
            self._revoked.setdefault(sid, expires_s)
        self._version += 1

    def marker(self) -> str:
        return f"{self._instance}:{self._version}"

    def load(self, now_s: Any) -> list[Any]:
        now = now_s if type(now_s) is int else 0
        return [self.marker(), {s: e for s, e in self._revoked.items() if e >= now}, self._not_before]
