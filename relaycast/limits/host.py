"""Limits shared by the workers of one host without Redis: the telemetry process keeps them (one in-memory
limiter, `HostLimits`), and each worker asks it (`RemoteLimiter`) over the telemetry channel. One limiter for the
host, so N requests per minute admit N across all workers, never N per worker. The telemetry process decides an
admission in the turn of its event loop that read the question (`admit_now`: no task, no turn waited for), unless
a budget must be loaded from the store first.

While the telemetry process is away (it is restarted within about a second) or does not answer within
`ADMIT_TIMEOUT_S`, a request with limits is refused with 503 `limiter_unavailable`: a limit is never exceeded, and no
worker guesses alone. A restarted telemetry process starts its windows afresh (budgets reload from the store).

Reservation ids are the worker's (a random prefix per process and a counter), so they stay unique across restarts
of either process. A worker that stops waiting for an admission (a timeout, the client gone) releases it; a
release that arrives before its admission is remembered (bounded), and the admission is then undone at once. With
Redis (`redis_url`), workers share limits through it as replicas do, and none of this is used.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
from typing import Any, Protocol

import msgspec

from relaycast.errors import LimiterUnavailable, LimitExceeded, RemoteError, RequestTooLarge, TelemetryUnavailable
from relaycast.limits.base import Check, Limiter, Reservation
from relaycast.limits.memory import MemoryLimiter

MAX_HELD = 100_000  # reservations in flight for the whole host
MAX_RELEASED = 10_000  # releases remembered that came before their admission
ADMIT_TIMEOUT_S = 2.0


class Link(Protocol):
    async def query(self, op: str, arg: Any = None, timeout_s: float = ..., after_records: bool = ...) -> Any: ...

    def settle(self, reservation: str, tokens: int, nano: int) -> bool: ...


class RemoteLimiter:
    """A worker's view of the host's limits."""

    def __init__(self, link: Link, timeout_s: float = ADMIT_TIMEOUT_S) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._prefix = os.urandom(6).hex() + "-"
        self._ids = itertools.count(1)
        self.unavailable = 0
        self.unsettled = 0

    async def admit(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation:
        rid = f"{self._prefix}{next(self._ids)}"
        try:
            # Not after the records waiting in this worker: an admission reads none of them.
            await self._link.query(
                "limit_admit", [rid, checks, est_tokens, est_nano, now], self._timeout_s, after_records=False
            )
        except TelemetryUnavailable:
            self.unavailable += 1
            self._link.settle(rid, 0, 0)  # if it was admitted after all, undone
            raise LimiterUnavailable(
                "The limits of this host cannot be checked now: its telemetry process did not answer in time "
                "(restarting or overloaded). Retry shortly."
            ) from None
        except RemoteError as e:
            raise refusal(e.detail) from None
        except asyncio.CancelledError:
            self._link.settle(rid, 0, 0)  # the client went away while it waited: nothing was used
            raise
        return Reservation(checks, est_tokens, est_nano, now, id=rid)

    def settle(self, res: Reservation, tokens: int, nano: int) -> None:
        if res.settled:
            return
        res.settled = True
        if not self._link.settle(res.id, tokens, nano):
            # The telemetry process is away: it settles what this worker held when the link broke.
            self.unsettled += 1

    def status(self) -> dict[str, Any]:
        return {"backend": "host", "unavailable": self.unavailable, "unsettled": self.unsettled}

    async def close(self) -> None:
        return None


def refusal(detail: Any) -> Exception:
    """The error the host's limiter raised, made again in the worker."""
    if isinstance(detail, list) and detail:
        if detail[0] == "too_large":
            return RequestTooLarge(str(detail[1]))
        if detail[0] == "limit":
            return LimitExceeded(str(detail[1]), limit=str(detail[2]), retry_after_s=float(detail[3]))
    return LimiterUnavailable("The limits of this host could not be checked.")


_CHECKS = tuple[Check, ...]


class HostLimits:
    """The telemetry process's side: one limiter, and the reservations each worker holds."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        # The in-memory limiter (the only one kept here) decides nearly every admission without an await.
        self._now = limiter.admit_now if isinstance(limiter, MemoryLimiter) else None
        self._held: dict[str, tuple[int, Reservation]] = {}  # the worker's id -> (connection, reservation)
        self._by_conn: dict[int, set[str]] = collections.defaultdict(set)
        self._released: dict[str, None] = {}  # settled before admitted, oldest first
        self.undone = 0

    async def admit(self, conn: int, arg: list[Any]) -> None:
        rid, checks, est_tokens, est_nano, now = self._parsed(arg)
        self._hold(conn, rid, await self.limiter.admit(checks, est_tokens, est_nano, now))

    def admit_now(self, conn: int, arg: list[Any]) -> bool:
        """`admit` at once, in the turn of the event loop that read the question (no task, no await), when the
        limiter can decide without loading a budget: True when decided (admitted, or its refusal raised); False,
        having changed nothing, when `admit` must be awaited."""
        if self._now is None:
            return False
        rid, checks, est_tokens, est_nano, now = self._parsed(arg)
        res = self._now(checks, est_tokens, est_nano, now)
        if res is None:
            return False
        self._hold(conn, rid, res)
        return True

    def _parsed(self, arg: list[Any]) -> tuple[str, _CHECKS, int, int, float]:
        rid, checks_raw, est_tokens, est_nano, now = arg
        if len(self._held) >= MAX_HELD:
            raise LimiterUnavailable("Too many requests with limits are in flight on this host.")
        return str(rid), msgspec.convert(checks_raw, _CHECKS), int(est_tokens), int(est_nano), float(now)

    def _hold(self, conn: int, rid: str, res: Reservation) -> None:
        if self._released.pop(rid, 0) is None:  # the worker gave up waiting: nothing ran
            self.undone += 1
            self.limiter.settle(res, 0, 0)
            return
        self._held[rid] = (conn, res)
        self._by_conn[conn].add(rid)

    def settle(self, rid: str, tokens: int, nano: int) -> None:
        held = self._held.pop(rid, None)
        if held is None:
            self._released[rid] = None
            if len(self._released) > MAX_RELEASED:
                del self._released[next(iter(self._released))]
            return
        self._by_conn[held[0]].discard(rid)
        pending = self.limiter.settle(held[1], int(tokens), int(nano))
        assert pending is None  # the in-memory limiter settles at once

    def gone(self, conn: int) -> None:
        """A worker's connection broke: what it held is charged as reserved (its requests' real use is unknown)."""
        for rid in self._by_conn.pop(conn, set()):
            held = self._held.pop(rid, None)
            if held is not None:
                res = held[1]
                self.limiter.settle(res, res.est_tokens, res.est_nano)

    def status(self) -> dict[str, Any]:
        return {**self.limiter.status(), "held": len(self._held), "undone": self.undone}


__all__ = ["HostLimits", "RemoteLimiter", "refusal"]
