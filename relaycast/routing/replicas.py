"""Routing health shared across replicas through Redis: each replica publishes the circuits it has opened and the
targets it has demoted (with until when), and adopts the others', every half second. A provider failing on one
replica is avoided by all of them within a second, without each having to fail on it first.

One hash, `relaycast:health`; fields `<replica>|open|<target>` and `<replica>|demoted|<route>|<target>`, values
`{"until": <unix s>, "reason": ...}`. A replica rewrites only its own fields; entries past `until` are ignored and
removed by whoever sees them. Latency windows stay per replica; decisions made from them are what is shared.
Each sync is one pipelined round trip on relaycast's Redis client (`relaycast.redis`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson

from relaycast.log import EventLog
from relaycast.redis import RedisReplyError, RespClient
from relaycast.routing.health import HealthBoard

KEY = "relaycast:health"
DEMOTION_HOLD_S = 3.0  # a published demotion stands this long unless republished


class SharedHealth:
    def __init__(
        self, url: str, board: HealthBoard, log: EventLog, interval_s: float = 0.5, timeout_s: float = 0.5
    ) -> None:
        self._redis = RespClient(url, timeout_s)
        self._board = board
        self._log = log
        self.replica = secrets.token_hex(4)
        self._interval = interval_s
        self._mine: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.errors = 0
        self._last_error_log = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relaycast-shared-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            if self._mine:
                await self._redis.call("HDEL", KEY, *self._mine)
        except Exception:  # noqa: BLE001 - leaving: entries expire by their own `until`
            pass
        await self._redis.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as e:  # noqa: BLE001 - Redis down: routing goes on with local health only
                self.errors += 1
                if time.monotonic() - self._last_error_log > 10:
                    self._last_error_log = time.monotonic()
                    self._log.error("shared_health_unavailable", error=type(e).__name__)
            await asyncio.sleep(self._interval)

    def _local(self, wall: float, mono: float) -> dict[str, bytes]:
        b = self._board
        out: dict[str, bytes] = {}
        for name, t in list(b.targets().items()):
            if t.circuit == "open":
                until = wall + max(0.0, b.settings.circuit_cooldown_s - (mono - t.opened_at))
                out[f"{self.replica}|open|{name}"] = orjson.dumps(
                    {"until": until, "reason": f"circuit open after {t.consecutive_failures} failures"}
                )
        for (route, name), why in list(b.demoted.items()):
            if b.demoted_source.get((route, name)) != "local":
                continue  # another replica's or a monitor's: republishing it would keep it alive forever
            out[f"{self.replica}|demoted|{route}|{name}"] = orjson.dumps(
                {"until": wall + DEMOTION_HOLD_S, "reason": why}
            )
        return out

    async def sync(self) -> None:
        wall, mono = time.time(), time.monotonic()
        mine = self._local(wall, mono)
        gone = self._mine - set(mine)
        commands: list[tuple[Any, ...]] = []
        if mine:
            commands.append(("HSET", KEY, *(x for kv in mine.items() for x in kv)))
        if gone:
            commands.append(("HDEL", KEY, *gone))
        commands.append(("HGETALL", KEY))
        results = await self._redis.pipeline(commands)
        for r in results:
            if isinstance(r, RedisReplyError):
                raise r
        self._mine = set(mine)
        flat: list[bytes] = results[-1]
        everything = dict(zip(flat[::2], flat[1::2], strict=True))
        shared_open: dict[str, float] = {}
        shared_demoted: dict[tuple[str, str], str] = {}
        stale = []
        for f, v in everything.items():
            field = f.decode()
            replica, kind, rest = field.split("|", 2)
            try:
                doc: dict[str, Any] = orjson.loads(v)
            except orjson.JSONDecodeError:
                stale.append(field)
                continue
            if doc.get("until", 0) < wall:
                stale.append(field)
                continue
            if replica == self.replica:
                continue
            if kind == "open":
                shared_open[rest] = mono + (doc["until"] - wall)
            elif kind == "demoted":
                route, _, target = rest.partition("|")
                shared_demoted[(route, target)] = f"{doc.get('reason')} (another replica)"
        self._board.shared_open = shared_open
        self._board.shared_demoted = shared_demoted
        if stale:
            await self._redis.call("HDEL", KEY, *stale)
