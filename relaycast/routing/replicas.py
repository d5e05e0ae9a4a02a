"""Routing health shared by gateways: each publishes the circuits it has opened and the targets it has demoted (with
until when), and adopts the others', every half second. A provider failing on one is avoided by all of them within
a second, without each having to fail on it first. Latency windows stay each gateway's own; decisions made from
them are what is shared.

Entries are fields `<gateway>|open|<target>` and `<gateway>|demoted|<route>|<target>`, values
`{"until": <unix s>, "reason": ...}`; entries past `until` are ignored. They are exchanged in one of two places:

- `RedisExchange`, across replicas (and the workers of each) with `redis_url`: one hash, `relaycast:health`. A
  gateway rewrites only its own fields and removes the stale ones it sees. Each sync is one pipelined round trip
  on relaycast's Redis client (`relaycast.redis`).
- `HostExchange`, across the workers of one host without Redis: the host's state process keeps each worker's
  entries (`HealthTable`) while the worker is connected, and answers each sync with the others'. While it is away
  or slow to answer (it restarts within about a second), each worker routes on what it last learned and its own.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from relaycast.log import EventLog
from relaycast.redis import RedisReplyError, RespClient
from relaycast.routing.health import HealthBoard

if TYPE_CHECKING:
    from relaycast.telemetry.channel import HostClient

KEY = "relaycast:health"
DEMOTION_HOLD_S = 3.0  # a published demotion stands this long unless republished
HOST_SYNC_TIMEOUT_S = 2.0
MAX_ENTRIES = 4096  # one gateway's entries the state process keeps (its board's targets are bounded as well)
MAX_FIELD = 1024  # bytes of an entry's name, and of its value


class Exchange(Protocol):
    via: str  # where the entries are exchanged, as /admin/stats says
    others: str  # who the others are, as a shared demotion's reason says

    async def swap(self, mine: dict[str, bytes], gone: set[str]) -> dict[str, bytes]:
        """Publish `mine` (the fields in `gone` are this gateway's no longer); return what the others publish
        (this gateway's own fields may be among them)."""
        ...

    async def forget(self, stale: list[str]) -> None:
        """Fields seen past their `until`."""
        ...

    async def leave(self, mine: set[str]) -> None:
        """This gateway stops: its fields go."""
        ...

    async def close(self) -> None: ...


class RedisExchange:
    via = "redis"
    others = "another replica"

    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        self._redis = RespClient(url, timeout_s)

    async def swap(self, mine: dict[str, bytes], gone: set[str]) -> dict[str, bytes]:
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
        flat: list[bytes] = results[-1]
        return {f.decode(): v for f, v in zip(flat[::2], flat[1::2], strict=True)}

    async def forget(self, stale: list[str]) -> None:
        await self._redis.call("HDEL", KEY, *stale)

    async def leave(self, mine: set[str]) -> None:
        if mine:
            await self._redis.call("HDEL", KEY, *mine)

    async def close(self) -> None:
        await self._redis.close()


class HostExchange:
    """Through the host's state process (`HostClient`): it forgets a worker's fields when the worker hangs up."""

    via = "state_process"
    others = "another worker"

    def __init__(self, host: HostClient, timeout_s: float = HOST_SYNC_TIMEOUT_S) -> None:
        self._host = host
        self._timeout_s = timeout_s

    async def swap(self, mine: dict[str, bytes], gone: set[str]) -> dict[str, bytes]:
        # It reads no records: not after those waiting in this worker.
        others: dict[str, bytes] = await self._host.query("health_sync", mine, self._timeout_s, after_records=False)
        return others

    async def forget(self, stale: list[str]) -> None:
        return None  # the table holds each worker's current fields only: its own replace them at its next sync

    async def leave(self, mine: set[str]) -> None:
        return None  # its connection closing removes them

    async def close(self) -> None:
        return None  # the connection is the gateway's, closed with it


class HealthTable:
    """The state process's side of `HostExchange`: each connected worker's fields, by its connection."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._by_owner: dict[int, dict[str, bytes]] = {}
        self._max = max_entries
        self.refused = 0  # entries not kept: past the bound, or not a name and a value of bounded size

    def swap(self, owner: int, mine: Any) -> dict[str, bytes]:
        """Replace `owner`'s fields by `mine`; return every other owner's."""
        kept: dict[str, bytes] = {}
        if isinstance(mine, dict):
            for f, v in mine.items():
                if (
                    len(kept) < self._max
                    and isinstance(f, str)
                    and isinstance(v, bytes)
                    and len(f) <= MAX_FIELD
                    and len(v) <= MAX_FIELD
                ):
                    kept[f] = v
                else:
                    self.refused += 1
        if kept:
            self._by_owner[owner] = kept
        else:
            self._by_owner.pop(owner, None)
        out: dict[str, bytes] = {}
        for o, fields in self._by_owner.items():
            if o != owner:
                out.update(fields)
        return out

    def gone(self, owner: int) -> None:
        self._by_owner.pop(owner, None)

    def __len__(self) -> int:
        return sum(len(f) for f in self._by_owner.values())


class SharedHealth:
    def __init__(self, exchange: Exchange, board: HealthBoard, log: EventLog, interval_s: float = 0.5) -> None:
        self._exchange = exchange
        self._board = board
        self._log = log
        self.replica = secrets.token_hex(4)
        self._interval = interval_s
        self._mine: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.syncs = 0
        self.errors = 0
        self._last_error_log = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="relaycast-shared-health")

    def status(self) -> dict[str, Any]:
        """For /admin/stats: where it shares, how often it did and failed to, and what it holds of the others'."""
        b = self._board
        return {
            "via": self._exchange.via,
            "syncs": self.syncs,
            "errors": self.errors,
            "others_open": len(b.shared_open),
            "others_demoted": len(b.shared_demoted),
        }

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self._exchange.leave(self._mine)
        except Exception:  # noqa: BLE001 - leaving: entries expire by their own `until`
            pass
        await self._exchange.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as e:  # noqa: BLE001 - the exchange away: routing goes on with local health only
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
                continue  # another gateway's or a monitor's: republishing it would keep it alive forever
            out[f"{self.replica}|demoted|{route}|{name}"] = orjson.dumps(
                {"until": wall + DEMOTION_HOLD_S, "reason": why}
            )
        return out

    async def sync(self) -> None:
        wall, mono = time.time(), time.monotonic()
        mine = self._local(wall, mono)
        everything = await self._exchange.swap(mine, self._mine - set(mine))
        self._mine = set(mine)
        shared_open: dict[str, float] = {}
        shared_demoted: dict[tuple[str, str], str] = {}
        stale = []
        for field, v in everything.items():
            replica, kind, rest = (field.split("|", 2) + ["", ""])[:3]
            try:
                doc: dict[str, Any] = orjson.loads(v)
                until = float(doc.get("until", 0))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                stale.append(field)
                continue
            if until < wall:
                stale.append(field)
                continue
            if replica == self.replica:
                continue
            if kind == "open":
                shared_open[rest] = mono + (until - wall)
            elif kind == "demoted":
                route, _, target = rest.partition("|")
                shared_demoted[(route, target)] = f"{doc.get('reason')} ({self._exchange.others})"
        self._board.shared_open = shared_open
        self._board.shared_demoted = shared_demoted
        self.syncs += 1
        if stale:
            await self._exchange.forget(stale)
