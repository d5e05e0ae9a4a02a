"""The channel between a worker and the telemetry process, over a real Unix socket: records arrive whole and in
order, wait in a bounded backlog while the telemetry process is away, are counted when dropped, and the worker
never blocks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relaycast.errors import LimitExceeded, RemoteError, TelemetryUnavailable
from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.server.metrics_gauges import merge_families
from relaycast.telemetry.channel import RECORDS_WAIT_S, HostClient, HostServer, Peer
from relaycast.telemetry.frames import ANSWER, CONTROL, HELLO, QUERY, RECORD, RECORDS, SETTLE, Codec, FrameParser
from tests.sample_records import sample_record


class Collect:
    """The telemetry process's side, keeping what it is handed."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.gauges_of: dict[int, Any] = {}
        self.settled: list[tuple[str, int, int]] = []
        self.gone_workers: list[int] = []
        self.hellos: list[tuple[int, int]] = []
        self.now_answered = 0

    def record(self, record: RequestRecord) -> None:
        self.records.append(record)

    async def query(self, peer: Peer, op: str, arg: Any) -> Any:
        if op == "fail":
            raise ValueError("no such view")
        if op == "silent":
            await asyncio.sleep(3600)
        if op == "count":  # the records taken before this query was
            return len(self.records)
        return {"op": op, "arg": arg, "worker": peer.worker}

    def answer_now(self, peer: Peer, op: str, arg: Any) -> tuple[bool, Any]:
        if op == "now":  # answered in the turn that read it
            self.now_answered += 1
            return True, {"now": arg, "records": len(self.records)}
        if op == "now_fail":
            raise ValueError("refused at once")
        return False, None

    def gauges(self, peer: Peer, families: Any) -> None:
        self.gauges_of[peer.worker] = families

    def settle(self, peer: Peer, reservation: str, tokens: int, nano: int) -> None:
        self.settled.append((reservation, tokens, nano))

    def hello(self, peer: Peer) -> None:
        self.hellos.append((peer.worker, peer.pid))

    def gone(self, peer: Peer) -> None:
        self.gone_workers.append(peer.worker)

    def demotions(self) -> list[list[str]]:
        return [["fast", "a/m", "p99"]]


def log() -> EventLog:
    return EventLog(Redactor(()))


async def until(cond, limit_s: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition another task makes true (a real socket's far end), for at most `limit_s`."""
    async with asyncio.timeout(limit_s):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def linked(tmp_path: Path, worker: int, **client_kw: Any) -> tuple[Collect, HostServer, HostClient]:
    """A telemetry process's socket and a worker's link to it, connected."""
    handler = Collect()
    server = HostServer(str(tmp_path / "t.sock"), handler, log())
    await server.start()
    client = HostClient(server.path, worker, log(), **client_kw)
    client.start()
    await until(lambda: client.connected.is_set())
    return handler, server, client


def test_frames_split_anywhere_are_put_back_together() -> None:
    codec = Codec()
    frames = b"".join(codec.frame(RECORD, sample_record(i)) for i in range(5))
    parser = FrameParser()
    got = []
    for i in range(0, len(frames), 7):  # 7-byte pieces: headers and bodies cut in the middle
        got.extend(parser.feed(frames[i : i + 7]))
    assert [codec.record(p).request_id for _, p in got] == [f"req-{i}" for i in range(5)]


async def _records_arrive_in_order_and_are_acknowledged(tmp_path: Path) -> None:
    demoted: list[dict[tuple[str, str], str]] = []
    handler, server, client = await linked(
        tmp_path, 3, on_demotions=demoted.append, gauges=lambda: [["g", "gauge", "", [], []]]
    )
    try:
        sent = [sample_record(i) for i in range(1000)]
        for rec in sent:
            client(rec)
        await until(lambda: client.acked == 1000)
        assert handler.records == sent  # every field of every record, in order
        assert await client.query("stats", {"x": 1}) == {"op": "stats", "arg": {"x": 1}, "worker": 3}
        with pytest.raises(Exception, match="no such view"):
            await client.query("fail")
        assert client.settle("r1", 10, 20)
        await until(lambda: handler.settled == [("r1", 10, 20)])
        await until(lambda: demoted == [{("fast", "a/m"): "p99"}])
        assert handler.gauges_of[3] == [["g", "gauge", "", [], []]]
        st = client.status()
        assert (st["handed"], st["acknowledged"], st["backlog"], sum(st["dropped"].values())) == (1000, 1000, 0, 0)
    finally:
        await client.close(1.0)
        await server.close()
    await until(lambda: handler.gone_workers == [3, 3])  # its records' connection and its control connection


async def _while_the_telemetry_process_is_away_records_wait_in_a_bounded_backlog_then_arrive(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "t.sock")
    fifty = sum(len(Codec().frame(RECORD, sample_record(i))) for i in range(50))
    client = HostClient(path, 0, log(), max_backlog_bytes=fifty)
    client.start()
    try:
        for i in range(80):
            client(sample_record(i))  # never blocks, nobody listening
        st = client.status()
        assert st["backlog"] == 50 and st["dropped"]["backlog_full"] == 30 and not st["connected"]
        with pytest.raises(TelemetryUnavailable):
            await client.query("stats")
        handler = Collect()
        server = HostServer(path, handler, log())
        await server.start()
        try:
            await until(lambda: client.acked == 50)
            # The oldest records were kept: the newest were refused at the bound.
            assert [r.request_id for r in handler.records] == [f"req-{i}" for i in range(50)]
            assert client.status()["backlog"] == 0
        finally:
            await server.close()
    finally:
        await client.close(0.5)


async def _a_connection_that_breaks_counts_what_was_written_and_not_acknowledged(tmp_path: Path) -> None:
    _, server, client = await linked(tmp_path, 0)
    try:
        for i in range(10):
            client(sample_record(i))
        await until(lambda: client.acked == 10)
        # The telemetry process stops reading (frozen) and then goes away with what it was sent.
        for peer in list(server.peers):
            assert peer.conn.transport is not None
            peer.conn.transport.pause_reading()
        for i in range(10, 25):
            client(sample_record(i))
        await asyncio.sleep(0.05)
        await server.close()
        await until(lambda: not client.connected.is_set())
        st = client.status()
        assert st["dropped"]["lost_in_flight"] == 15
        assert st["handed"] == st["acknowledged"] + sum(st["dropped"].values()) + st["backlog"]
    finally:
        await client.close(0.5)


async def _a_telemetry_process_that_drops_every_connection_is_retried_with_backoff(tmp_path: Path) -> None:
    accepted = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    path = str(tmp_path / "t.sock")
    server = await asyncio.start_unix_server(drop, path)
    client = HostClient(path, 0, log())
    client.start()
    try:
        await asyncio.sleep(1.0)
    finally:
        await client.close(0.1)
        server.close()
    # Each session ends at once: the worker waits 0.05 s, doubling, before the next (two connections each), where
    # it used to reconnect in a loop, logging `telemetry_link_lost` every time.
    assert 4 <= accepted <= 12, accepted
    assert client.connects <= 6


def test_workers_gauges_merge_into_one_view() -> None:
    w0 = [
        ["relaycast_connections_open", "gauge", "Open.", [], [[[], 3.0]]],
        ["relaycast_target_state", "gauge", "State.", ["target", "state"], [[["a", "ok"], 1.0], [["a", "open"], 0.0]]],
    ]
    w1 = [
        ["relaycast_connections_open", "gauge", "Open.", [], [[[], 4.0]]],
        ["relaycast_target_state", "gauge", "State.", ["target", "state"], [[["a", "ok"], 0.0], [["a", "open"], 1.0]]],
    ]
    merged = {name: dict(samples) for name, _, _, _, samples in merge_families([w0, w1])}
    assert merged["relaycast_connections_open"] == {(): 7.0}
    # A target's state shows every state some worker has it in.
    assert merged["relaycast_target_state"] == {("a", "ok"): 1.0, ("a", "open"): 1.0}


def test_a_telemetry_process_that_drops_every_connection_is_retried_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="relaycast"):
        asyncio.run(_a_telemetry_process_that_drops_every_connection_is_retried_with_backoff(tmp_path))
    assert 2 <= sum("telemetry_link_lost" in r.getMessage() for r in caplog.records) <= 6


def test_records_arrive_in_order_and_are_acknowledged(tmp_path: Path) -> None:
    asyncio.run(_records_arrive_in_order_and_are_acknowledged(tmp_path))


def test_while_the_telemetry_process_is_away_records_wait_in_a_bounded_backlog_then_arrive(tmp_path: Path) -> None:
    asyncio.run(_while_the_telemetry_process_is_away_records_wait_in_a_bounded_backlog_then_arrive(tmp_path))


def test_a_connection_that_breaks_counts_what_was_written_and_not_acknowledged(tmp_path: Path) -> None:
    asyncio.run(_a_connection_that_breaks_counts_what_was_written_and_not_acknowledged(tmp_path))


async def _queries_of_one_turn_are_answered_each_in_order_and_a_silent_one_times_out(tmp_path: Path) -> None:
    _, server, client = await linked(tmp_path, 1)
    try:
        # 200 queries at once (one write for the turn) get their own answers.
        answers = await asyncio.gather(*(client.query("echo", i) for i in range(200)))
        assert [a["arg"] for a in answers] == list(range(200))
        with pytest.raises(TelemetryUnavailable, match="did not answer within 0.2 s"):
            await client.query("silent", timeout_s=0.2)
        assert not client._queries  # the timed-out query is forgotten
        assert await client.query("echo", "after") == {"op": "echo", "arg": "after", "worker": 1}
    finally:
        await client.close(1.0)
        await server.close()


def test_queries_of_one_turn_are_answered_each_in_order_and_a_silent_one_times_out(tmp_path: Path) -> None:
    asyncio.run(_queries_of_one_turn_are_answered_each_in_order_and_a_silent_one_times_out(tmp_path))


async def _a_settlement_written_just_before_close_still_arrives(tmp_path: Path) -> None:
    """A worker that stops right after settling (no turn of the event loop between): the settlement is written on
    the control connection before it closes, not dropped with the connection."""
    handler, server, client = await linked(tmp_path, 6)
    try:
        assert client.settle("r9", 1, 2)
        await client.close(1.0)
        await until(lambda: handler.settled == [("r9", 1, 2)])
    finally:
        await server.close()


def test_a_settlement_written_just_before_close_still_arrives(tmp_path: Path) -> None:
    asyncio.run(_a_settlement_written_just_before_close_still_arrives(tmp_path))


async def _a_question_answered_at_once_is_answered_in_order_with_the_others(tmp_path: Path) -> None:
    handler, server, client = await linked(tmp_path, 2)
    try:
        for i in range(30):
            client(sample_record(i))
        # Mixed in one turn: those the handler answers at once and those it awaits each get their own answer.
        asked = [client.query("now" if i % 2 else "echo", i) for i in range(100)]
        answers = await asyncio.gather(*asked)
        assert [a.get("now", a.get("arg")) for a in answers] == list(range(100))
        assert handler.now_answered == 50
        assert answers[1]["records"] == 30  # the records written before the question were taken first
        with pytest.raises(RemoteError, match="refused at once"):
            await client.query("now_fail")
        assert await client.query("now", "after") == {"now": "after", "records": 30}
    finally:
        await client.close(1.0)
        await server.close()


def test_a_question_answered_at_once_is_answered_in_order_with_the_others(tmp_path: Path) -> None:
    asyncio.run(_a_question_answered_at_once_is_answered_in_order_with_the_others(tmp_path))


class Wire:
    """What a worker wrote, per connection (its hello says which), in the order the telemetry process would read
    it: the kinds of the frames on the records' connection, the kinds and payloads on the control connection."""

    def __init__(self) -> None:
        self.records: list[int] = []
        self.control: list[tuple[int, Any]] = []

    def control_kinds(self) -> list[int]:
        return [k for k, _ in self.control]


@contextlib.asynccontextmanager
async def on_the_wire(tmp_path: Path) -> AsyncIterator[tuple[HostClient, Wire]]:
    """A worker's link to a plain socket that notes every frame on each connection."""
    wire = Wire()
    codec = Codec()

    async def read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = FrameParser()
        control: bool | None = None
        while data := await reader.read(65536):
            for kind, payload in parser.feed(data):
                if control is None:  # the hello: [worker, pid, RECORDS or CONTROL, session]
                    control = codec.data(payload)[2] == CONTROL
                if control:
                    wire.control.append((kind, None if kind == RECORD else codec.data(payload)))
                else:
                    wire.records.append(kind)

    server = await asyncio.start_unix_server(read, str(tmp_path / "raw.sock"))
    client = HostClient(str(tmp_path / "raw.sock"), 1, log())
    client.start()
    try:
        await until(lambda: client.connected.is_set())
        await until(lambda: wire.records == [HELLO] and wire.control_kinds() == [HELLO])
        yield client, wire
    finally:
        await client.close(0.2)
        server.close()


async def _a_question_that_must_see_the_records_sends_them_and_says_how_many(tmp_path: Path) -> None:
    """On the wire, read as the telemetry process reads it: the records a worker handed over before an admin
    question are written at once on the records' connection; the question, on the control connection, carries
    their count (the telemetry process answers once it has taken that many). A settlement goes with it."""
    async with on_the_wire(tmp_path) as (client, wire):
        for i in range(50):
            client(sample_record(i))
        asking = asyncio.ensure_future(client.query("count", timeout_s=5))
        await asyncio.sleep(0)  # the query is written (queued for the end of this turn)
        assert client.settle("r1", 1, 1)
        await until(lambda: len(wire.records) >= 51 and len(wire.control) >= 3)
        assert wire.records == [HELLO] + [RECORD] * 50
        assert wire.control[1:] == [(QUERY, [1, "count", None, 50]), (SETTLE, ["r1", 1, 1])]
        asking.cancel()


def test_a_question_that_must_see_the_records_sends_them_and_says_how_many(tmp_path: Path) -> None:
    asyncio.run(_a_question_that_must_see_the_records_sends_them_and_says_how_many(tmp_path))


async def _an_admission_goes_out_alone_and_the_records_keep_their_batch(tmp_path: Path) -> None:
    """A limit admission and a settlement read none of the records: written on the control connection at the end
    of their turn, while the records wait for their batch (written on its own timer, within FLUSH_EVERY_S), so a
    worker with limits does not write, and the telemetry process does not wake for, every record on its own."""
    async with on_the_wire(tmp_path) as (client, wire):
        for i in range(5):
            client(sample_record(i))
        asking = asyncio.ensure_future(client.query("limit_admit", [], timeout_s=5, after_records=False))
        await asyncio.sleep(0)
        assert client.settle("r1", 1, 1)
        await until(lambda: len(wire.control) >= 3)
        assert wire.control[1:] == [(QUERY, [1, "limit_admit", []]), (SETTLE, ["r1", 1, 1])]
        assert wire.records == [HELLO]  # the batch has not gone yet
        await until(lambda: len(wire.records) >= 6)  # the records' batch, on its own timer
        assert wire.records == [HELLO] + [RECORD] * 5
        for i in range(5, 8):
            client(sample_record(i))
        asked = asyncio.ensure_future(client.query("count", timeout_s=5))  # a question that reads them pulls them
        await until(lambda: len(wire.records) >= 9 and len(wire.control) >= 4)
        assert wire.records[6:] == [RECORD] * 3
        assert wire.control[3] == (QUERY, [2, "count", None, 8])
        asking.cancel()
        asked.cancel()


def test_an_admission_goes_out_alone_and_the_records_keep_their_batch(tmp_path: Path) -> None:
    asyncio.run(_an_admission_goes_out_alone_and_the_records_keep_their_batch(tmp_path))


async def _a_question_that_reads_no_records_is_answered_while_records_wait_unread(tmp_path: Path) -> None:
    """The telemetry process far behind on one worker's records (it reads none of them): a limit admission or a
    stored response, asked without `after_records`, is answered at once; a question that must see the records
    waits for them RECORDS_WAIT_S at most, then is answered with what was taken; once they are read, it sees them
    all."""
    handler, server, client = await linked(tmp_path, 4)
    try:
        records = [p for p in server.peers if not p.control]
        assert len(records) == 1 and len(server.peers) == 2 and server.workers() == 1
        assert records[0].conn.transport is not None
        records[0].conn.transport.pause_reading()
        for i in range(3000):  # 1.5 MB: more than the socket's buffers hold, most wait in the worker's transport
            client(sample_record(i, output_text="x" * 500))
        await asyncio.sleep(0.05)
        assert client.status()["backlog_bytes"] > 0
        ordered = asyncio.ensure_future(client.query("count", timeout_s=5))
        answer = await asyncio.wait_for(client.query("now", "quick", timeout_s=5, after_records=False), 0.4)
        assert answer == {"now": "quick", "records": len(handler.records)}
        assert not ordered.done()
        began = time.monotonic()
        behind = await ordered
        assert behind == len(handler.records) < 3000
        assert RECORDS_WAIT_S * 0.5 < time.monotonic() - began < RECORDS_WAIT_S + 2
        records[0].conn.transport.resume_reading()
        assert await client.query("count", timeout_s=5) == 3000
    finally:
        await client.close(1.0)
        await server.close()


def test_a_question_that_reads_no_records_is_answered_while_records_wait_unread(tmp_path: Path) -> None:
    asyncio.run(_a_question_that_reads_no_records_is_answered_while_records_wait_unread(tmp_path))


async def _a_question_waits_for_its_own_sessions_records_connection_greeted_after_it(tmp_path: Path) -> None:
    """A worker's two connections are read in no set order, and an earlier session's records connection may not be
    seen gone yet: a question that must see 3 records, read before its own session's records connection has even
    said hello, is answered once those 3 are taken, not from the old connection's count."""
    handler = Collect()
    server = HostServer(str(tmp_path / "t.sock"), handler, log())
    await server.start()
    codec = Codec()
    writers: list[asyncio.StreamWriter] = []

    def records(session: int, n: int) -> bytes:
        hello = codec.frame(HELLO, [5, 4242, RECORDS, session])
        return hello + b"".join(codec.frame(RECORD, sample_record(i)) for i in range(n))

    try:
        _, old = await asyncio.open_unix_connection(server.path)  # the worker's first session, still open here
        writers.append(old)
        old.write(records(1, 5))
        await until(lambda: len(handler.records) == 5)
        ctl_reader, ctl = await asyncio.open_unix_connection(server.path)
        writers.append(ctl)
        ctl.write(codec.frame(HELLO, [5, 4242, CONTROL, 2]) + codec.frame(QUERY, [1, "count", None, 3]))
        await ctl.drain()
        await asyncio.sleep(0.05)
        _, new = await asyncio.open_unix_connection(server.path)
        writers.append(new)
        new.write(records(2, 3))
        await new.drain()
        parser = FrameParser()
        answers: list[Any] = []
        async with asyncio.timeout(5):
            while not answers:
                data = await ctl_reader.read(65536)
                assert data, "the telemetry process hung up"
                answers += [codec.data(p) for kind, p in parser.feed(data) if kind == ANSWER]
        assert answers == [[1, True, 8]]  # the old session's 5 and this one's 3
    finally:
        for w in writers:
            w.close()
        await server.close()


def test_a_question_waits_for_its_own_sessions_records_connection_greeted_after_it(tmp_path: Path) -> None:
    asyncio.run(_a_question_waits_for_its_own_sessions_records_connection_greeted_after_it(tmp_path))


def test_host_limits_undo_an_admission_the_worker_stopped_waiting_for() -> None:
    from relaycast.keys.policy import Limits
    from relaycast.limits.base import Check
    from relaycast.limits.host import HostLimits
    from relaycast.limits.memory import MemoryLimiter

    async def run() -> None:
        host = HostLimits(MemoryLimiter())
        check = [Check("key", "k", Limits(tpm=100))]
        now = time.time()
        # The worker gave up (a timeout, a client gone) and released before its admission was made: the
        # admission is undone, and its 60 tokens given back.
        host.settle("w1-1", 0, 0)
        await host.admit(1, ["w1-1", check, 60, 0, now])
        assert host.status()["held"] == 0 and host.undone == 1
        await host.admit(1, ["w1-2", check, 60, 0, now])
        assert host.status()["held"] == 1
        with pytest.raises(Exception, match="tokens per minute"):  # 60 + 60 > 100
            await host.admit(2, ["w2-1", check, 60, 0, now])
        # A worker whose connection broke: what it held is charged as reserved, and no longer held.
        host.gone(1)
        assert host.status()["held"] == 0
        with pytest.raises(Exception, match="tokens per minute"):
            await host.admit(2, ["w2-2", check, 60, 0, now])
        await host.admit(2, ["w2-3", check, 40, 0, now])
        host.settle("w2-3", 10, 0)
        assert host.status()["held"] == 0

    asyncio.run(run())


def test_host_limits_decide_at_once_what_memory_holds_and_wait_only_to_load_a_budget() -> None:
    from relaycast.keys.policy import Limits
    from relaycast.limits.base import Check
    from relaycast.limits.host import HostLimits
    from relaycast.limits.memory import MemoryLimiter

    loads: list[tuple[str, str, str]] = []

    async def spend(scope: str, name: str, period: str) -> int:
        loads.append((scope, name, period))
        return 0

    async def run() -> None:
        host = HostLimits(MemoryLimiter(spend))
        rpm = [Check("key", "k", Limits(rpm=3))]
        now = time.time()
        assert [host.admit_now(1, [f"w1-{i}", rpm, 10, 0, now]) for i in range(3)] == [(True, None)] * 3
        with pytest.raises(LimitExceeded, match="3 requests per minute"):  # refused at once, nothing held
            host.admit_now(1, ["w1-4", rpm, 10, 0, now])
        assert host.status()["held"] == 3
        # A budget not yet in memory is loaded from the store first: not decided at once, and nothing changed.
        day = [Check("user", "u", Limits(budget_day_usd=1.0))]
        assert host.admit_now(1, ["w1-5", day, 10, 10**8, now]) == (False, None)
        assert host.status()["held"] == 3 and loads == []
        await host.admit(1, ["w1-5", day, 10, 10**8, now])
        assert len(loads) == 1 and host.status()["held"] == 4
        assert host.admit_now(1, ["w1-6", day, 10, 10**8, now]) == (True, None)  # in memory now
        # A release that came before its admission undoes it, at once as when awaited.
        host.settle("w1-7", 0, 0)
        assert host.admit_now(1, ["w1-7", day, 10, 10**8, now]) == (True, None)
        assert host.undone == 1 and host.status()["held"] == 5
        with pytest.raises(LimitExceeded, match="Budget exceeded"):  # $0.2 held (one undone) + $0.9 > $1
            host.admit_now(1, ["w1-8", day, 10, 9 * 10**8, now])
        assert host.admit_now(1, ["w1-9", day, 10, 8 * 10**8, now]) == (True, None)  # $1.0: within

    asyncio.run(run())


def test_a_departed_workers_counters_stay_in_the_host_view() -> None:
    from relaycast.config import parse
    from relaycast.server.telemetry_hub import Demotions, TelemetryHub

    cfg = parse("providers: [{name: up, kind: openai_compatible, base_url: 'http://127.0.0.1:9/v1'}]\n", env={})
    hub = TelemetryHub(cfg, Redactor(()), log(), Demotions())
    fam = [
        ["relaycast_telemetry_handed_total", "counter", "Handed.", [], [[[], 5.0]]],
        ["relaycast_connections_open", "gauge", "Open.", [], [[[], 2.0]]],
    ]
    hub.workers = {0: fam, 1: fam}
    assert b"relaycast_telemetry_handed_total 10" in hub.render_metrics()
    hub.retire(1, pid=4242)  # worker 1 exited: its counter stays, its gauge goes
    text = hub.render_metrics()
    assert b"relaycast_telemetry_handed_total 10" in text and b"relaycast_connections_open 2" in text
    hub.returned(4242)  # the same process came back: its own counters continue, not counted twice
    hub.workers[1] = fam
    assert b"relaycast_telemetry_handed_total 10" in hub.render_metrics()


def test_workers_auto_stays_within_the_containers_cpu_quota(tmp_path: Path) -> None:
    from relaycast.server.host import cgroup_cpus

    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert cgroup_cpus(str(f)) == 2  # 1.5 CPUs: rounded up
    f.write_text("max 100000\n")
    assert cgroup_cpus(str(f)) is None
    assert cgroup_cpus(str(tmp_path / "absent")) is None
