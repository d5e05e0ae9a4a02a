"""Limits shared by the workers of one host without Redis: the host's state process keeps them (one in-memory
limiter, `HostLimits`; `relaycast.server.state_process`), and each worker asks it (`RemoteLimiter`) over the host's
channel. One limiter for the host, so N requests per minute admit N across all workers, never N per worker. The
state process decides an admission in the turn of its event loop that read the question (`admit_now`: no task,
no turn waited for), unless a budget must be loaded from the store first.

Far from its limits, a scope's requests are admitted by the worker itself, under a lease (`relaycast.limits.lease`):
with an admission the host may lend the worker capacity for more requests like it, for `LEASE_S`, taking at most
1/(`LEASE_SHARE` x workers) of what each limit has left, and counting it at once as used at the lease's end; the
worker gives back what it did not use. Near a limit no lease is made (fewer than `MIN_GRANT` requests would fit)
and every request is decided by the host, exactly. Capacity lent and not yet given back is not available to the
other workers meanwhile: a request another worker sends may so be refused up to `LEASE_S` early, never admitted
past a limit.

While the state process is away (it is restarted within about a second) or does not answer within
`ADMIT_TIMEOUT_S`, a request with limits is refused with 503 `limiter_unavailable`, unless a lease granted before
still covers it: a limit is never exceeded, and no worker guesses alone. A restarted state process starts its
windows afresh (budgets reload from the store).

Reservation and lease ids are the worker's (a random prefix per process and a counter), so they stay unique across
restarts of either process. A worker that stops waiting for an admission (a timeout, the client gone) releases it
and the lease asked with it; a release that arrives before its admission is remembered (bounded), and the
admission is then undone at once. With Redis (`redis_url`), workers share limits through it as replicas do, and
none of this is used.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
from collections.abc import Callable
from typing import Any, Protocol

import msgspec

from relaycast.errors import LimiterUnavailable, LimitExceeded, RemoteError, RequestTooLarge, TelemetryUnavailable
from relaycast.limits.base import Check, Limiter, Reservation
from relaycast.limits.lease import MIN_WANT, Lease, Report
from relaycast.limits.memory import Grant, MemoryLimiter

MAX_HELD = 100_000  # reservations and leases in flight for the whole host
MAX_RELEASED = 10_000  # releases remembered that came before their admission
MAX_LEASES = 1024  # leases a worker holds at once (one per set of checks)
ADMIT_TIMEOUT_S = 2.0
LEASE_S = 1.0
LEASE_SHARE = 4


class Link(Protocol):
    connects: int  # connections made so far: a lease is void on another

    async def query(self, op: str, arg: Any = None, timeout_s: float = ..., after_records: bool = ...) -> Any: ...

    def settle(self, reservation: str, tokens: int, nano: int) -> bool: ...

    def give_back(self, report: Report) -> bool: ...


class RemoteLimiter:
    """A worker's view of the host's limits."""

    def __init__(self, link: Link, timeout_s: float = ADMIT_TIMEOUT_S) -> None:
        self._link = link
        self._timeout_s = timeout_s
        self._prefix = os.urandom(6).hex() + "-"
        self._ids = itertools.count(1)
        self._leases: dict[tuple[Check, ...], Lease] = {}
        self._asking: set[tuple[Check, ...]] = set()  # a lease asked for and not yet answered
        self._tasks: set[asyncio.Task[None]] = set()
        self.unavailable = 0
        self.unsettled = 0
        self.local = 0  # admitted under a lease, without asking

    async def admit(self, checks: tuple[Check, ...], est_tokens: int, est_nano: int, now: float) -> Reservation:
        lease = self._leases.get(checks)
        if lease is not None and lease.take(est_tokens, est_nano, now, self._link.connects):
            self.local += 1
            if lease.due(now) and checks not in self._asking:
                self._renew(checks, lease, est_tokens, est_nano, now)
            return Reservation(checks, est_tokens, est_nano, now, lease=lease)
        if lease is not None and lease.spent_out(now, self._link.connects):
            self._retire(self._leases.pop(checks))  # what it has left goes back now, not when the next arrives
            lease = None
        rid = f"{self._prefix}{next(self._ids)}"
        lid, want = "", 0
        if checks not in self._asking:  # one lease asked for at a time per set of checks
            self._asking.add(checks)
            lid, want = f"{self._prefix}L{next(self._ids)}", lease.want(now) if lease is not None else MIN_WANT
        try:
            # Not after the records waiting in this worker: an admission reads none of them.
            grant = await self._link.query(
                "limit_admit",
                [rid, checks, est_tokens, est_nano, now, lid, want],
                self._timeout_s,
                after_records=False,
            )
        except TelemetryUnavailable:
            self.unavailable += 1
            self._release(rid, lid)  # if it was admitted after all, undone
            raise LimiterUnavailable(
                "The limits of this host cannot be checked now: its state process did not answer in time "
                "(restarting or overloaded). Retry shortly."
            ) from None
        except RemoteError as e:
            raise refusal(e.detail) from None
        except asyncio.CancelledError:
            self._release(rid, lid)  # the client went away while it waited: nothing was used
            raise
        finally:
            if lid:
                self._asking.discard(checks)
        if grant:
            self._install(checks, Lease(lid, self._link.connects, now, grant))
        return Reservation(checks, est_tokens, est_nano, now, id=rid)

    def _release(self, rid: str, lid: str) -> None:
        self._link.settle(rid, 0, 0)
        if lid:
            self._link.give_back([lid])

    def _renew(self, checks: tuple[Check, ...], lease: Lease, est_tokens: int, est_nano: int, now: float) -> None:
        self._asking.add(checks)
        task = asyncio.ensure_future(self._renewal(checks, lease, est_tokens, est_nano, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _renewal(
        self, checks: tuple[Check, ...], lease: Lease, est_tokens: int, est_nano: int, now: float
    ) -> None:
        lid = f"{self._prefix}L{next(self._ids)}"
        try:
            grant = await self._link.query(
                "limit_lease",
                [lid, checks, est_tokens, est_nano, now, lease.want(now)],
                self._timeout_s,
                after_records=False,
            )
        except TelemetryUnavailable:
            self._link.give_back([lid])  # if it was granted after all, given back
            return
        except asyncio.CancelledError:
            self._link.give_back([lid])
            raise
        except RemoteError:
            return
        finally:
            self._asking.discard(checks)
        if grant:
            self._install(checks, Lease(lid, self._link.connects, now, grant))

    def _install(self, checks: tuple[Check, ...], lease: Lease) -> None:
        old = self._leases.pop(checks, None)
        if old is not None:
            self._retire(old)
        elif len(self._leases) >= MAX_LEASES:
            self._retire(self._leases.pop(next(iter(self._leases))))
        self._leases[checks] = lease
        # At its end, what it has left goes back even if no request comes to find it over.
        asyncio.get_running_loop().call_later(max(0.0, lease.until - lease.began), self._expire, checks, lease)

    def _expire(self, checks: tuple[Check, ...], lease: Lease) -> None:
        if self._leases.get(checks) is lease:
            self._retire(self._leases.pop(checks))

    def _retire(self, lease: Lease) -> None:
        lease.retired = True
        if lease.epoch == self._link.connects:  # else granted by a connection since broken: the host charged it
            self._link.give_back(lease.report())

    def settle(self, res: Reservation, tokens: int, nano: int) -> None:
        if res.settled:
            return
        res.settled = True
        lease = res.lease
        if lease is not None:
            if lease.ended(res.est_tokens, res.est_nano, tokens, nano):
                self._retire(lease)
            return
        if not self._link.settle(res.id, tokens, nano):
            # The state process is away: it settles what this worker held when the link broke.
            self.unsettled += 1

    def status(self) -> dict[str, Any]:
        return {
            "backend": "host",
            "unavailable": self.unavailable,
            "unsettled": self.unsettled,
            "local": self.local,
            "leases": len(self._leases),
        }

    async def close(self) -> None:
        """Give back what the leases hold unused (what their requests used follows as they end)."""
        for task in list(self._tasks):
            task.cancel()
        for lease in self._leases.values():
            self._retire(lease)
        self._leases.clear()


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
    """The state process's side: one limiter, and the reservations and leases each worker holds."""

    def __init__(self, limiter: Limiter, workers: Callable[[], int] = lambda: 1) -> None:
        self.limiter = limiter
        # The in-memory limiter (the only one kept here) decides nearly every admission without an await.
        self._memory = limiter if isinstance(limiter, MemoryLimiter) else None
        self._workers = workers
        self._held: dict[str, tuple[int, Reservation]] = {}  # the worker's id -> (connection, reservation)
        self._leases: dict[str, tuple[int, Grant]] = {}  # the worker's lease id -> (connection, grant)
        self._by_conn: dict[int, set[str]] = collections.defaultdict(set)
        self._released: dict[str, None] = {}  # settled before admitted, oldest first
        self.undone = 0

    async def admit(self, conn: int, arg: list[Any]) -> Any:
        """Admit (or raise its refusal), and answer with a lease when one was asked for and is granted."""
        rid, checks, est_tokens, est_nano, now = self._parsed(arg)
        if self._hold(conn, rid, await self.limiter.admit(checks, est_tokens, est_nano, now)):
            return self._lend(conn, arg[5:], checks, est_tokens, est_nano, now)
        return None

    def admit_now(self, conn: int, arg: list[Any]) -> tuple[bool, Any]:
        """`admit` at once, in the turn of the event loop that read the question (no task, no await), when the
        limiter can decide without loading a budget: (True, the answer) when decided (or its refusal raised);
        (False, None), having changed nothing, when `admit` must be awaited."""
        if self._memory is None:
            return False, None
        rid, checks, est_tokens, est_nano, now = self._parsed(arg)
        res = self._memory.admit_now(checks, est_tokens, est_nano, now)
        if res is None:
            return False, None
        if self._hold(conn, rid, res):
            return True, self._lend(conn, arg[5:], checks, est_tokens, est_nano, now)
        return True, None

    def lease(self, conn: int, arg: list[Any]) -> Any:
        """A lease asked for ahead of need: [id, checks, est tokens, est nano, now, want] -> the grant or None."""
        lid, checks_raw, est_tokens, est_nano, now, want = arg
        if self._full():
            return None
        checks = msgspec.convert(checks_raw, _CHECKS)
        return self._lend(conn, [lid, want], checks, int(est_tokens), int(est_nano), float(now))

    def _lend(
        self, conn: int, ask: list[Any], checks: _CHECKS, est_tokens: int, est_nano: int, now: float
    ) -> list[float] | None:
        if len(ask) < 2 or not ask[0] or self._memory is None:
            return None
        lid, want = str(ask[0]), int(ask[1])
        if self._released.pop(lid, 0) is None:  # the worker stopped waiting for it
            return None
        until = now + LEASE_S
        share = LEASE_SHARE * max(1, self._workers())
        g = self._memory.grant(checks, want, est_tokens, est_nano, now, until, share)
        if g is None:
            return None
        self._leases[lid] = (conn, g)
        self._by_conn[conn].add(lid)
        return [g.requests, g.tokens, g.nano, until]

    def _parsed(self, arg: list[Any]) -> tuple[str, _CHECKS, int, int, float]:
        rid, checks_raw, est_tokens, est_nano, now = arg[:5]
        if self._full():
            raise LimiterUnavailable("Too many requests with limits are in flight on this host.")
        return str(rid), msgspec.convert(checks_raw, _CHECKS), int(est_tokens), int(est_nano), float(now)

    def _full(self) -> bool:
        """MAX_HELD reservations and leases are in flight: no more until some end."""
        return len(self._held) + len(self._leases) >= MAX_HELD

    def _hold(self, conn: int, rid: str, res: Reservation) -> bool:
        """Keep the reservation for its settlement; False when the worker already gave it up (undone)."""
        if self._released.pop(rid, 0) is None:  # the worker gave up waiting: nothing ran
            self.undone += 1
            self.limiter.settle(res, 0, 0)
            return False
        self._held[rid] = (conn, res)
        self._by_conn[conn].add(rid)
        return True

    def _remember_released(self, rid: str) -> None:
        self._released[rid] = None
        if len(self._released) > MAX_RELEASED:
            del self._released[next(iter(self._released))]

    def settle(self, rid: str, tokens: int, nano: int) -> None:
        held = self._held.pop(rid, None)
        if held is None:
            self._remember_released(rid)
            return
        self._by_conn[held[0]].discard(rid)
        pending = self.limiter.settle(held[1], int(tokens), int(nano))
        assert pending is None  # the in-memory limiter settles at once

    def give_back(self, report: list[Any]) -> None:
        """A lease's report (`Lease.report`), or [id] alone: the worker stopped waiting for it (all given back)."""
        lid = str(report[0])
        held = self._leases.get(lid)
        if held is None:
            if len(report) == 1:
                self._remember_released(lid)
            return
        assert self._memory is not None
        conn, g = held
        if len(report) == 1:
            self._memory.give_back(g, g.requests, g.tokens, g.nano, 0, 0, 0)
            final = True
        else:
            _, requests, tokens, nano, token_delta, spent, settled, final = report
            self._memory.give_back(g, int(requests), int(tokens), int(nano), int(token_delta), int(spent), int(settled))
        if final:
            del self._leases[lid]
            self._by_conn[conn].discard(lid)
            self._memory.end_grant(g, charge=False)

    def gone(self, conn: int) -> None:
        """A worker's connection broke: what it held is charged as reserved (its requests' real use is unknown)."""
        for rid in self._by_conn.pop(conn, set()):
            held = self._held.pop(rid, None)
            if held is not None:
                res = held[1]
                self.limiter.settle(res, res.est_tokens, res.est_nano)
            lent = self._leases.pop(rid, None)
            if lent is not None and self._memory is not None:
                self._memory.end_grant(lent[1], charge=True)

    def status(self) -> dict[str, Any]:
        return {**self.limiter.status(), "held": len(self._held), "leases": len(self._leases), "undone": self.undone}


__all__ = ["HostLimits", "RemoteLimiter", "refusal"]
