"""Workers of one host admitting under leases of the host's limits (`relaycast.limits.host`), over the real
telemetry channel (a Unix socket): far from a limit most requests are admitted without asking, two workers
together never pass a limit, what a lease did not use and what its requests really used go back to the host, and
near a limit every request is asked."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

import relaycast.limits.host as host_module
from relaycast.errors import LimitExceeded
from relaycast.keys.policy import Limits
from relaycast.limits.base import Check, Reservation
from relaycast.limits.host import HostLimits, RemoteLimiter
from relaycast.limits.memory import MemoryLimiter
from relaycast.records import RequestRecord
from relaycast.telemetry.channel import HostClient, HostServer, Peer
from tests.unit.test_telemetry_channel import log, until


class Telemetry:
    """The state process's side of the channel, as far as limits go (as `StateProcess` dispatches them)."""

    def __init__(self, limits: HostLimits) -> None:
        self.limits = limits

    async def query(self, peer: Peer, op: str, arg: Any) -> Any:
        if op == "limit_admit":
            return await self.limits.admit(peer.key, arg)
        return self.limits.lease(peer.key, arg)

    def answer_now(self, peer: Peer, op: str, arg: Any) -> tuple[bool, Any]:
        if op == "limit_admit":
            return self.limits.admit_now(peer.key, arg)
        return True, self.limits.lease(peer.key, arg)

    def settle(self, peer: Peer, reservation: str, tokens: int, nano: int) -> None:
        self.limits.settle(reservation, tokens, nano)

    def give_back(self, peer: Peer, report: list[Any]) -> None:
        self.limits.give_back(report)

    def gone(self, peer: Peer) -> None:
        self.limits.gone(peer.key)

    def record(self, record: RequestRecord) -> None: ...

    def gauges(self, peer: Peer, families: Any) -> None: ...

    def hello(self, peer: Peer) -> None: ...

    def demotions(self) -> list[list[str]]:
        return []


class Host:
    """A state process's socket with the host's limits, and `workers` links to it, each with its limiter."""

    def __init__(self, tmp_path: Path, workers: int) -> None:
        self.path = str(tmp_path / "t.sock")
        self.server: HostServer | None = None
        self.limits = HostLimits(MemoryLimiter(), workers=lambda: workers)
        self.links = [HostClient(self.path, i, log()) for i in range(workers)]
        self.workers = [RemoteLimiter(link) for link in self.links]

    async def __aenter__(self) -> Host:
        self.server = HostServer(self.path, Telemetry(self.limits), log())
        await self.server.start()
        for link in self.links:
            link.start()
        await until(lambda: all(link.connected.is_set() for link in self.links))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.workers:
            await w.close()
        for link in self.links:
            await link.close(1.0)
        assert self.server is not None
        await self.server.close()

    def scope(self, name: str = "k") -> Any:
        return self.limits.limiter._scopes[("key", name)]  # type: ignore[attr-defined]


def key(**limits: Any) -> tuple[Check, ...]:
    return (Check("key", "k", Limits(**limits)),)


async def admit(w: RemoteLimiter, checks: tuple[Check, ...], tokens: int = 10, nano: int = 0) -> Reservation | None:
    try:
        return await w.admit(checks, tokens, nano, time.time())
    except LimitExceeded:
        return None


async def _two_workers_under_leases_admit_exactly_the_limit(tmp_path: Path) -> None:
    async with Host(tmp_path, 2) as host:
        checks = key(rpm=400)
        admitted = refused_in_a_row = 0
        for w in itertools.cycle(host.workers):  # one request at a time, each worker in turn, until both refuse
            res = await admit(w, checks)
            if res is None:
                refused_in_a_row += 1
                if refused_in_a_row == 4:
                    break
                continue
            refused_in_a_row = 0
            admitted += 1
            w.settle(res, 10, 0)
        # Exactly the limit across both workers, most of it without asking the host.
        assert admitted == 400
        local = sum(w.status()["local"] for w in host.workers)
        assert local > 200 and all(w.status()["local"] > 0 for w in host.workers)
        with pytest.raises(LimitExceeded, match="400 requests per minute"):
            await host.workers[0].admit(checks, 10, 0, time.time())
        # The leases that ran out were reported: nothing is still lent, nothing held.
        await until(lambda: host.limits.status()["leases"] == 0 and host.limits.status()["held"] == 0)


def test_two_workers_under_leases_admit_exactly_the_limit(tmp_path: Path) -> None:
    asyncio.run(_two_workers_under_leases_admit_exactly_the_limit(tmp_path))


async def _a_small_limit_lends_nothing_and_every_request_is_asked(tmp_path: Path) -> None:
    async with Host(tmp_path, 2) as host:
        checks = key(rpm=10)
        results = await asyncio.gather(*(admit(host.workers[i % 2], checks) for i in range(30)))
        assert sum(r is not None for r in results) == 10
        assert [w.status()["local"] for w in host.workers] == [0, 0]
        assert host.limits.status()["leases"] == 0


def test_a_small_limit_lends_nothing_and_every_request_is_asked(tmp_path: Path) -> None:
    asyncio.run(_a_small_limit_lends_nothing_and_every_request_is_asked(tmp_path))


async def _a_lease_gives_back_what_it_did_not_use_and_its_requests_real_tokens(tmp_path: Path) -> None:
    async with Host(tmp_path, 1) as host:
        checks = key(tpm=10_000)
        first = await admit(host.workers[0], checks, tokens=100)  # asked: the answer lends 8 more like it
        second = await admit(host.workers[0], checks, tokens=100)  # under the lease
        assert first is not None and second is not None and second.lease is not None
        assert host.workers[0].status()["local"] == 1
        assert host.scope().token_sum == 100 + 8 * 100  # the lease counts as used until it is given back
        host.workers[0].settle(first, 50, 0)
        host.workers[0].settle(second, 30, 0)
        await host.workers[0].close()  # the lease ends: 7 requests unused, and its one request used 30, not 100
        await until(lambda: host.limits.status()["leases"] == 0)
        assert host.scope().token_sum == 50 + 30
        # What the window now holds is what the next request is told.
        with pytest.raises(LimitExceeded, match=r"\(80 used"):
            await host.workers[0].admit(checks, 9_921, 0, time.time())


def test_a_lease_gives_back_what_it_did_not_use_and_its_requests_real_tokens(tmp_path: Path) -> None:
    asyncio.run(_a_lease_gives_back_what_it_did_not_use_and_its_requests_real_tokens(tmp_path))


async def _an_idle_lease_is_given_back_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "LEASE_S", 0.2)
    async with Host(tmp_path, 2) as host:
        checks = key(rpm=100)
        assert await admit(host.workers[0], checks) is not None  # and a lease of 8 more
        assert host.scope().request_count == 9
        # Nothing more comes to worker 0: its lease goes back when it ends, and worker 1 may use all the rest.
        await until(lambda: host.limits.status()["leases"] == 0)
        assert host.scope().request_count == 1
        got = 0
        while await admit(host.workers[1], checks) is not None:
            got += 1
        assert got == 99


def test_an_idle_lease_is_given_back_at_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asyncio.run(_an_idle_lease_is_given_back_at_its_end(tmp_path, monkeypatch))


def test_a_grant_is_counted_until_its_end_and_never_crosses_a_budgets_period() -> None:
    limiter = MemoryLimiter()
    checks = key(rpm=1000)
    now = 1_000_000.0
    limiter.admit_now(checks, 0, 0, now)
    g = limiter.grant(checks, 100, 0, 0, now + 1.0, now + 5.0, share=4)
    assert g is not None and g.requests == 100  # (1000 - 1) // 4 = 249 would fit
    scope = limiter._scopes[("key", "k")]
    assert scope.request_count == 101
    # A request made under the grant may be made at its very end: counted until that is a minute old.
    scope.prune_requests(now + 60.5)
    assert scope.request_count == 100
    scope.prune_requests(now + 65.0)
    assert scope.request_count == 0
    # A grant is at most 1/share of what is left, and none is made below MIN_GRANT.
    limiter.admit_now(checks, 0, 0, now + 66)
    g2 = limiter.grant(checks, 10_000, 0, 0, now + 66, now + 67, share=4)
    assert g2 is not None and g2.requests == 999 // 4
    # A day budget whose day ends before the grant would: no grant (its spend would count in the wrong day).
    day = (Check("user", "u", Limits(budget_day_usd=10.0)),)
    midnight = 86400.0 * 20_000
    asyncio.run(limiter.admit(day, 10, 1000, midnight - 0.5))  # its day's spend loaded (nothing: no store)
    assert limiter.grant(day, 8, 10, 1000, midnight - 0.5, midnight + 0.5, share=4) is None
    assert limiter.grant(day, 8, 10, 1000, midnight - 2.0, midnight - 1.0, share=4) is not None


async def _a_departed_worker_s_lease_is_charged_as_reserved() -> None:
    host = HostLimits(MemoryLimiter())
    day = [Check("user", "u", Limits(budget_day_usd=1.0))]
    now = time.time()
    # An admission of $0.01 that asks for a lease of 8 more like it: $0.08 more reserved.
    grant = await host.admit(1, ["w1-1", day, 10, 10**7, now, "w1-L2", 8])  # its day's spend loaded first
    assert grant[:3] == [8, 80, 8 * 10**7]
    host.settle("w1-1", 10, 10**7)
    host.gone(1)  # requests under its lease may have run: the lease's reservation is spent ($0.09 in all)
    assert host.status()["leases"] == 0
    decided, _ = host.admit_now(2, ["w2-1", day, 10, 9 * 10**8, now])  # $0.09 + $0.9 <= $1
    assert decided
    with pytest.raises(LimitExceeded, match="Budget exceeded"):
        host.admit_now(2, ["w2-2", day, 10, 10**7 + 1, now])


def test_a_departed_worker_s_lease_is_charged_as_reserved() -> None:
    asyncio.run(_a_departed_worker_s_lease_is_charged_as_reserved())


async def _a_lease_is_void_once_its_state_process_is_replaced(tmp_path: Path) -> None:
    async with Host(tmp_path, 1) as host:
        w, link = host.workers[0], host.links[0]
        checks = key(rpm=1000)
        assert await admit(w, checks) is not None and await admit(w, checks) is not None
        assert w.status()["local"] == 1
        # The state process is replaced (killed and restarted): the new one knows nothing of the lease.
        assert host.server is not None
        await host.server.close()
        host.limits = HostLimits(MemoryLimiter())
        host.server = HostServer(host.path, Telemetry(host.limits), log())
        await host.server.start()
        await until(lambda: link.connects == 2 and link.connected.is_set())
        # So the next request is asked, and counted by the new one (with a lease of its own).
        assert await admit(w, checks) is not None
        assert w.status()["local"] == 1
        assert host.scope().request_count == 1 + 8


def test_a_lease_is_void_once_its_state_process_is_replaced(tmp_path: Path) -> None:
    asyncio.run(_a_lease_is_void_once_its_state_process_is_replaced(tmp_path))
