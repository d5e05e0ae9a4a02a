"""Routing health shared by the workers of a host without Redis: each worker's circuits and demotions reach the
others through the state process's table (`HealthTable`), over a real Unix socket, and leave it with the
worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.routing.health import HealthBoard
from relaycast.routing.replicas import HealthTable, HostExchange, SharedHealth
from relaycast.routing.settings import RoutingSettings
from relaycast.telemetry.channel import HostClient, HostServer, Peer


class Host:
    """The state process's side of the channel, as far as routing health goes (what `StateProcess` does)."""

    def __init__(self) -> None:
        self.health = HealthTable()

    def record(self, record: Any) -> None: ...

    async def query(self, peer: Peer, op: str, arg: Any) -> Any:
        raise ValueError(op)

    def answer_now(self, peer: Peer, op: str, arg: Any) -> tuple[bool, Any]:
        if op == "health_sync":
            return True, self.health.swap(peer.key, arg)
        return False, None

    def gauges(self, peer: Peer, families: Any) -> None: ...

    def settle(self, peer: Peer, reservation: str, tokens: int, nano: int) -> None: ...

    def give_back(self, peer: Peer, report: list[Any]) -> None: ...

    def hello(self, peer: Peer) -> None: ...

    def gone(self, peer: Peer) -> None:
        self.health.gone(peer.key)

    def demotions(self) -> list[list[str]]:
        return []


def log() -> EventLog:
    return EventLog(Redactor(()))


def board() -> HealthBoard:
    return HealthBoard(RoutingSettings(circuit_failures=2, circuit_cooldown_s=60, min_requests=3), log())


async def until(cond, limit_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(limit_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def _a_circuit_one_worker_opens_is_open_on_the_other_until_the_first_hangs_up(tmp_path: Path) -> None:
    host = Host()
    server = HostServer(str(tmp_path / "t.sock"), host, log())
    await server.start()
    clients = [HostClient(server.path, i, log()) for i in range(2)]
    for c in clients:
        c.start()
    await until(lambda: all(c.connected.is_set() for c in clients))
    a, b = board(), board()
    share_a, share_b = (SharedHealth(HostExchange(c), bd, log()) for c, bd in zip(clients, (a, b), strict=True))
    try:
        for _ in range(2):
            a.observe("bad/m", 5, None, "upstream_5xx")
        for error in ("upstream_5xx", None, "upstream_5xx", None, "upstream_5xx"):  # 60% failing: demoted on `route`
            a.observe("slow/m", 5, None, error)
        assert a.is_demoted("route", "slow/m", None, None)
        assert (a.state("bad/m"), b.state("bad/m"), b.admit("bad/m")) == ("open", "ok", True)
        await share_a.sync()
        await share_b.sync()
        # B never tried either target: it avoids the one A's circuit opened on, and A's demotion holds on B too.
        assert (b.state("bad/m"), b.admit("bad/m")) == ("open", False)
        assert b.is_demoted("route", "slow/m", None, None)
        assert b.demoted[("route", "slow/m")].endswith("(another worker)")
        assert not b.is_demoted("other", "slow/m", None, None)
        shown = b.shared_status()  # what /admin/routes and `relaycast routes status` show of it
        assert list(shown["open"]) == ["bad/m"] and 59 < shown["open"]["bad/m"] <= 60
        assert [(d["route"], d["target"]) for d in shown["demoted"]] == [("route", "slow/m")]
        # What B adopted it does not publish as its own: only A's entries are in the table.
        assert len(host.health) == 2
        # A hangs up (it stopped, or died): its entries go with its connection, and B routes on its own again.
        await clients[0].close(1.0)
        await until(lambda: len(host.health) == 0)
        await share_b.sync()
        assert (b.state("bad/m"), b.admit("bad/m")) == ("ok", True)
    finally:
        await share_a.stop()
        await share_b.stop()
        for c in clients:
            await c.close(1.0)
        await server.close()


def test_a_circuit_one_worker_opens_is_open_on_the_other_until_the_first_hangs_up(tmp_path: Path) -> None:
    asyncio.run(_a_circuit_one_worker_opens_is_open_on_the_other_until_the_first_hangs_up(tmp_path))


def test_the_table_keeps_each_worker_s_current_entries_within_bounds() -> None:
    t = HealthTable(max_entries=3)
    assert t.swap(1, {"a|open|x": b"{}", "a|open|y": b"{}"}) == {}
    assert t.swap(2, {"b|open|z": b"{}"}) == {"a|open|x": b"{}", "a|open|y": b"{}"}
    # A worker's entries are replaced, not added to: one that closed is gone from what the others get.
    assert t.swap(1, {"a|open|y": b"{}"}) == {"b|open|z": b"{}"}
    assert t.swap(2, {}) == {"a|open|y": b"{}"}
    assert len(t) == 1
    # Past the bound, or not a bounded name and value, an entry is refused and counted.
    many = {f"a|open|t{i}": b"{}" for i in range(5)}
    t.swap(1, {**many, "a|open|big": b"x" * 5000, "a|open|n": 7})
    assert (len(t), t.refused) == (3, 4)
    t.swap(1, "not a map")
    assert len(t) == 0
    t.swap(1, {"a|open|x": b"{}"})
    t.gone(1)
    assert len(t) == 0
