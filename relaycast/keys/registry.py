"""Every key the gateway accepts, by hash: the config's, and the store's virtual keys, reloaded when they change.

Lookups are a dict read (no I/O on the request path). A background task polls the store's key version every
half second and reloads on change, so a key created, revoked, rotated or deleted through any replica takes effect
on every replica within a second.

Whether a request needs a key (`required`): once a key exists, in the config or the store, always. When none is
left, the gateway does not silently reopen: a store whose keys were all revoked keeps their rows, and one whose
keys were deleted keeps a mark (`relaycast.store.keys.ISSUED`), so requests without a key are still refused, unless
the config says `keys_required: false` (then it is open again once no key exists). `keys_required: true` refuses
requests without a key even before any key exists.
"""

from __future__ import annotations

import asyncio
import time

from relaycast.keys.policy import KeyPolicy
from relaycast.keys.settings import GatewayKey
from relaycast.log import EventLog
from relaycast.store import keys as key_store
from relaycast.store.db import Connection, is_db_error
from relaycast.store.reader import StoreReader

POLL_S = 0.5


class KeyRegistry:
    def __init__(self, keys: tuple[GatewayKey, ...], log: EventLog, required: bool | None = None) -> None:
        self._config_keys: dict[str, KeyPolicy] = {k.sha256: k.policy for k in keys}
        self._store_keys: dict[str, KeyPolicy] = {}
        self._store_issued = False  # keys were deleted from the store: it had some
        self._required = required  # None: once any key exists or existed in the store
        self._version: tuple[int, int, str] | None = None
        self._reader: StoreReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = log
        self.reloads = 0

    @property
    def required(self) -> bool:
        """Does a request need a key? See the module's docstring. (Every request asks: no work but a few reads.)"""
        return (
            self._required is True
            or bool(self._config_keys)
            or bool(self._store_keys)
            or (self._store_issued and self._required is None)
            or self.unloaded
        )

    @property
    def unloaded(self) -> bool:
        """The store's keys have not been read yet (the store was unreachable at start): the gateway cannot know
        whether keys exist, so it refuses requests it cannot check instead of serving them without a key (unless
        the config says `keys_required: false`)."""
        return self._reader is not None and self._version is None and self._required is not False

    def required_because(self) -> str | None:
        """Why requests need a key, in words; None when the gateway is open."""
        if self._required is True:
            return "keys_required is true in the config"
        if self._config_keys:
            return "the config has keys"
        if self._store_keys:
            if self.live() == 0:
                return "revoked or expired keys remain in the store"
            return "the store has keys"
        if self._store_issued and self._required is None:
            return "keys were issued in this store, and all of them were deleted"
        if self.unloaded:
            return "the store's keys could not be read yet"
        return None

    def live(self, now_ms: int | None = None) -> int:
        """Keys that work now: the config's, and the store's neither revoked nor expired."""
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        return len(self._config_keys) + sum(
            1
            for p in self._store_keys.values()
            if p.revoked_ms is None and (p.expires_ms is None or now < p.expires_ms)
        )

    def lookup(self, sha256: str) -> KeyPolicy | None:
        return self._config_keys.get(sha256) or self._store_keys.get(sha256)

    async def start(self, reader: StoreReader) -> None:
        self._reader = reader
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="relaycast-keys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def refresh(self) -> None:
        if self._reader is None:
            return
        try:
            changed = await self._reader.run(self._reload_if_changed)
        except Exception as e:
            if not is_db_error(e):
                raise
            self._log.error("keys_reload_failed", error=str(e).splitlines()[0][:200])
            return
        if changed:
            self.reloads += 1

    def _reload_if_changed(self, conn: Connection) -> bool:
        v = key_store.version(conn)
        if v == self._version:
            return False
        # Keys read before the mark (a deletion between the two leaves the old keys or the mark), and the mark set
        # first (it only ever turns true): no reader sees the store empty and unmarked while it is marked.
        keys = dict(key_store.load(conn))
        self._store_issued = key_store.issued(conn)
        self._store_keys = keys  # one assignment: readers see the old dict or the new one
        self._version = v
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self.refresh()
