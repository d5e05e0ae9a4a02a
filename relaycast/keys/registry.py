"""Every key the gateway accepts, by hash: the config's, and the store's virtual keys, reloaded when they change.

Lookups are a dict read (no I/O on the request path). A background task polls the store's key version every
half second and reloads on change, so a key created, revoked or rotated through any replica takes effect on
every replica within a second.
"""

from __future__ import annotations

import asyncio

from relaycast.keys.policy import KeyPolicy
from relaycast.keys.settings import GatewayKey
from relaycast.log import EventLog
from relaycast.store import keys as key_store
from relaycast.store.db import Connection, is_db_error
from relaycast.store.reader import StoreReader

POLL_S = 0.5


class KeyRegistry:
    def __init__(self, keys: tuple[GatewayKey, ...], log: EventLog) -> None:
        self._config_keys: dict[str, KeyPolicy] = {k.sha256: k.policy for k in keys}
        self._store_keys: dict[str, KeyPolicy] = {}
        self._version: tuple[int, int] | None = None
        self._reader: StoreReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._log = log
        self.reloads = 0

    @property
    def required(self) -> bool:
        """Keys are required once any exists: in the config, or issued through the admin API."""
        return bool(self._config_keys) or bool(self._store_keys)

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
        self._store_keys = dict(key_store.load(conn))  # one assignment: readers see the old dict or the new one
        self._version = v
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            await self.refresh()
