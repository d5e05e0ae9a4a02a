"""Dashboard logouts shared without a store: the state process's set (`RevokedSessions`), and a worker's
`Dashboard.sync`, which keeps what it loaded when that process starts again with an empty set."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from relaycast.server.dashboard import COOKIE, Dashboard
from relaycast.server.session_share import RevokedSessions

ADMIN_SHA = hashlib.sha256(b"admin-key").hexdigest()


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class Local:
    """The share as a worker sees it (`HostShare`), answered by a `RevokedSessions` in this process."""

    def __init__(self) -> None:
        self.table = RevokedSessions()

    async def revoke(self, sid: str, expires_s: int, now_s: int) -> None:
        self.table.revoke([sid, expires_s, now_s])

    async def marker(self) -> str:
        return self.table.marker()

    async def load(self, now_s: int) -> tuple[str, dict[str, int], int]:
        m, revoked, not_before = self.table.load(now_s)
        return m, revoked, not_before


def headers(token: str) -> dict[bytes, bytes]:
    return {b"cookie": f"{COOKIE}={token}".encode()}


def test_the_set_keeps_each_session_until_it_would_expire_and_ends_all_when_full() -> None:
    t = RevokedSessions(max_revoked=2)
    m0 = t.marker()
    t.revoke(["a", 100, 10])
    assert t.marker() != m0
    t.revoke(["b", 20, 10])
    assert t.load(15) == [t.marker(), {"a": 100, "b": 20}, 0]
    assert t.load(50)[1] == {"a": 100}  # b expired
    t.revoke(["c", 200, 30])  # b is gone (expired at 30), so c fits
    assert t.load(30)[1] == {"a": 100, "c": 200}
    t.revoke(["d", 300, 40])  # full: every session issued until now ends instead
    assert t.load(40) == [t.marker(), {}, 41]
    for bad in (["", 1, 1], ["x" * 65, 1, 1], ["a", "1", 1], ["a", 1, 1.5], ["a", True, 1]):
        with pytest.raises(ValueError):
            t.revoke(bad)
    assert RevokedSessions().marker() != RevokedSessions().marker()  # another process, another marker


async def _a_logout_holds_on_another_worker_after_the_state_process_starts_again() -> None:
    clock = Clock()
    share = Local()
    a, b = Dashboard(ADMIN_SHA, "host-secret-0123456789", clock), Dashboard(ADMIN_SHA, "host-secret-0123456789", clock)
    await a.start(share, None)  # type: ignore[arg-type]
    await b.start(share, None)  # type: ignore[arg-type]
    try:
        token, other = a.new_session(), a.new_session()
        assert b.valid(headers(token)) and b.valid(headers(other))  # one secret: valid on both
        await a.logout(headers(token))
        assert not a.valid(headers(token))
        await b.sync()
        assert not b.valid(headers(token)) and b.valid(headers(other))
        share.table = RevokedSessions()  # the state process started again: it knows of no logout
        await b.sync()
        assert not b.valid(headers(token))  # what b loaded before stays
        clock.t += 13 * 3600  # past its expiry: refused anyway, and forgotten at the next change
        later = a.new_session()
        await a.logout(headers(later))
        await b.sync()
        assert not b.valid(headers(token)) and not b.valid(headers(later))
        assert len(b._shared) == 1
    finally:
        await a.stop()
        await b.stop()


def test_a_logout_holds_on_another_worker_after_the_state_process_starts_again() -> None:
    asyncio.run(_a_logout_holds_on_another_worker_after_the_state_process_starts_again())
