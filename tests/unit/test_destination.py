"""A broadcast destination on its BatchWorker, against real loopback servers (the worker's clock injected where a
test needs time to pass): recovery with and without a spool, the spool draining while records keep arriving,
probes on a timer, the overflow policy, and shutdown with a destination that is down or hangs."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import msgspec
import pytest

from relaycast.log import EventLog
from relaycast.records import RequestRecord
from relaycast.redact import Redactor
from relaycast.telemetry.exporters.datadog import DatadogExporter
from relaycast.telemetry.exporters.webhook import WebhookExporter
from relaycast.telemetry.pipeline import Destination
from relaycast.telemetry.settings import DatadogOptions, DestinationConfig, WebhookOptions
from relaycast.telemetry.spool import Spool
from tests.capture import AsyncCapture, run_with_capture
from tests.sample_records import ManualTime, sample_record


def _dest(url: str, **over: object) -> DestinationConfig:
    opts = DatadogOptions(
        site="us5.datadoghq.com",
        ml_app="a",
        service="s",
        env=None,
        api_key="k",
        agent_url=None,
        intake_url_override=url,
    )
    return DestinationConfig(name="dd", kind="datadog", options=opts, **over)  # type: ignore[arg-type]


def _request_ids(bodies: list[bytes]) -> list[str]:
    return [s["meta"]["metadata"]["request_id"] for b in bodies for env in json.loads(b) for s in env["spans"]]


def _destination(cfg: DestinationConfig, session: aiohttp.ClientSession, spool: Spool | None) -> Destination:
    red = Redactor()
    return Destination(cfg, DatadogExporter(cfg, session), spool, red, EventLog(red), clock=time.time_ns)


def test_a_destination_without_a_spool_probes_with_a_live_batch_and_recovers() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> dict:
        cap.answers = [503]
        d = _destination(_dest(cap.url, max_retries=0, spool_max_bytes=0), session, None)
        d.offer(sample_record(1))
        await d.flush()  # 503: down, and nothing to spool it to
        d.offer(sample_record(2))
        await d.flush()  # down, no probe due yet: dropped, counted
        assert len(cap.requests) == 1 and not d.status()["healthy"]
        d._next_probe = d.worker.clock()  # the probe's backoff has passed
        d.offer(sample_record(3))
        await d.flush()  # the probe: 202
        d.offer(sample_record(4))
        await d.flush()
        await d.stop(d.worker.clock() + 1)
        return {"status": d.status(), "ids": _request_ids([b for _, _, b in cap.requests[1:]])}

    out = run_with_capture(body)
    assert out["status"]["healthy"] and out["status"]["dropped"] == {"export_failed": 2}
    assert out["ids"] == ["req-3", "req-4"]


def test_a_stop_past_its_deadline_spools_what_the_destination_did_not_take_and_nothing_it_did(tmp_path) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> dict:
        # The first body is taken; the second is answered 503 "retry in 60 s", a wait the stop will not sit out.
        cap.answers = [202, (503, {"Retry-After": "60"}, b"")]
        spool = Spool(tmp_path, 10**6)
        d = _destination(_dest(cap.url, max_batch_records=3, flush_interval_s=60.0), session, spool)
        one = len(d.exporter.encode(sample_record(0), False, ())[0])
        d.exporter.max_batch_bytes = one + 10  # one record per body
        for i in range(5):
            d.offer(sample_record(i))
        d.start()  # a full batch is queued: the worker sends at once
        for _ in range(200):
            if len(cap.requests) == 2:
                break
            await asyncio.sleep(0.01)
        await d.stop(d.worker.clock() + 0.5)
        spooled: list[bytes] = []
        while (entry := spool.oldest()) is not None:
            spooled += [bytes(it) for it in spool.read(entry)]
            spool.remove(entry)
        return {"sent": _request_ids([b for _, _, b in cap.requests[:1]]), "spooled": spooled, "status": d.status()}

    out = run_with_capture(body)
    assert out["sent"] == ["req-0"]
    spooled_ids = [json.loads(it)["spans"][0]["meta"]["metadata"]["request_id"] for it in out["spooled"]]
    assert sorted(spooled_ids) == ["req-1", "req-2", "req-3", "req-4"], "every record once: sent or spooled"
    assert out["status"]["dropped"] == {}


# --- replay under load, probing on a timer, overflow, shutdown (webhook: one item per record) ---------------


async def until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Wait, in real time, for something the worker does with real I/O (a generous bound: no timing asserted)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _hook_cfg(url: str, **over: object) -> DestinationConfig:
    return DestinationConfig(name="hook", kind="webhook", options=WebhookOptions(url=url + "/hook"), **over)  # type: ignore[arg-type]


def _hook(
    cfg: DestinationConfig, session: aiohttp.ClientSession, spool: Spool | None, t: ManualTime | None = None
) -> Destination:
    red = Redactor()
    timing: dict[str, Any] = {"timer": t.clock, "sleep": t.sleep} if t else {}
    return Destination(
        cfg,
        WebhookExporter(cfg, session),
        spool,
        red,
        EventLog(red),
        clock=time.time_ns,
        rng=random.Random(7),
        **timing,
    )


def _rec(name: str) -> RequestRecord:
    return msgspec.structs.replace(sample_record(0), request_id=name)


def _ids(bodies: Iterable[bytes]) -> list[str]:
    return [r["request_id"] for b in bodies for r in json.loads(b)["records"]]


def _accounted(st: dict[str, Any]) -> int:
    """Every record a destination took: sent, on disk, waiting, or counted as dropped."""
    return st["sent"] + st["spooled_records"] + st["queued"] + st["in_flight"] + sum(st["dropped"].values())


def _spool_backlog(spool: Spool, exporter: WebhookExporter, names: list[str], per_batch: int) -> None:
    for i in range(0, len(names), per_batch):
        chunk = names[i : i + per_batch]
        items = [it for n in chunk for it in exporter.encode(_rec(n), False, ())]
        assert spool.put(items, time.time_ns(), records=len(chunk)).stored


class Busy(WebhookExporter):
    """A webhook whose every send sees new records arrive meanwhile, as under steady traffic."""

    on_send: Callable[[], None] = staticmethod(lambda: None)

    async def send(self, items: list[bytes]) -> None:
        self.on_send()
        await super().send(items)


def test_the_spool_drains_while_records_keep_arriving(tmp_path) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        cfg = _hook_cfg(cap.url, flush_interval_s=0.05, max_batch_records=10)
        spool = Spool(tmp_path, 10**8)
        exporter = Busy(cfg, session)
        red = Redactor()
        d = Destination(cfg, exporter, spool, red, EventLog(red), clock=time.time_ns)
        backlog = [f"old-{i:03d}" for i in range(300)]
        _spool_backlog(spool, exporter, backlog, 10)  # as a restart finds it
        live: list[str] = []

        def arrive() -> None:
            for _ in range(2 if len(live) < 5000 else 0):
                live.append(f"live-{len(live)}")
                d.offer(_rec(live[-1]))

        exporter.on_send = arrive
        d.start()
        d.offer(_rec("first"))
        live.append("first")
        await until(lambda: spool.batches == 0, limit_s=20)
        assert len(live) < 5000, "drained while records still arrived"
        exporter.on_send = lambda: None
        await d.stop(d.worker.clock() + 5)
        ids = _ids(b for _, _, b in cap.requests)
        st = d.status()
        missing, extra = set(backlog + live) - set(ids), len(ids) - len(set(ids))
        assert not missing and not extra, f"every record exactly once: {sorted(missing)[:5]}, {extra} twice; {st}"
        assert [n for n in ids if n.startswith("old-")] == backlog, "the backlog oldest first"
        assert st["replayed"] == 300 and st["sent"] == len(ids) and st["dropped"] == {}

    run_with_capture(body)


def test_a_destination_that_is_down_is_probed_on_its_timer_with_the_oldest_batch_while_records_arrive(
    tmp_path,
) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        t = ManualTime()
        cfg = _hook_cfg(cap.url, max_retries=0, flush_interval_s=1.0)
        spool = Spool(tmp_path, 10**8)
        d = _hook(cfg, session, spool, t)
        cap.answers = [503] * 1000
        names: list[str] = []

        async def traffic() -> None:  # the queue is never empty for long
            while True:
                if d.worker.queued < 3:
                    names.append(f"r-{len(names):04d}")
                    d.offer(_rec(names[-1]))
                await asyncio.sleep(0.001)

        async def tick() -> None:
            t.move(1.0)
            await until(lambda: t.parked)

        producer = asyncio.ensure_future(traffic())
        d.start()
        await until(lambda: d.worker.queued > 0 and t.parked)
        await tick()
        assert len(cap.requests) == 1 and not d.status()["healthy"] and spool.batches == 1
        first = _ids([cap.requests[0][2]])
        for _ in range(20):  # 20 s of traffic while down: batches go to the spool, probes on the timer
            await tick()
        probes = cap.requests[1:]
        assert 2 <= len(probes) <= 6, "probed on a backoff timer, not never and not once per batch"
        assert all(_ids([b]) == first for _, _, b in probes), "each probe is the oldest spooled batch"
        healthy_from = len(cap.requests)
        cap.answers.clear()
        for _ in range(40):
            await tick()
            if d.status()["healthy"] and spool.batches == 0:
                break
        assert d.status()["healthy"] and spool.batches == 0, "recovered and drained while records kept arriving"
        producer.cancel()
        await d.stop(t.now + 5)
        delivered = _ids(b for _, _, b in cap.requests[healthy_from:])
        assert sorted(delivered) == names, "every record exactly once"
        assert delivered[: len(first)] == first, "oldest first"
        assert d.status()["dropped"] == {}

    run_with_capture(body)


def test_a_destination_that_is_down_is_probed_when_its_timer_is_due_without_traffic(tmp_path) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        t = ManualTime()
        d = _hook(_hook_cfg(cap.url, max_retries=0, flush_interval_s=600.0), session, Spool(tmp_path, 10**8), t)
        cap.answers = [503]
        d.offer(_rec("a"))
        d.start()
        await d.flush()  # 503: down, spooled
        await until(lambda: t.parked)
        assert len(cap.requests) == 1 and not d.status()["healthy"]
        t.move(1.0)  # the first probe is due within a second; the flush interval is ten minutes away
        await until(lambda: d.status()["healthy"])
        assert _ids([cap.requests[1][2]]) == ["a"] and d.status()["spooled_batches"] == 0
        await d.stop(t.now + 1)

    run_with_capture(body)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_one_overflow_policy_rules_the_queue_and_the_spool(tmp_path, overflow: str) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        t = ManualTime()
        # The queue: five records for three places, before the worker runs.
        q = _hook(_hook_cfg(cap.url, queue_size=3, overflow=overflow), session, None, t)
        for n in ("q-0", "q-1", "q-2", "q-3", "q-4"):
            q.offer(_rec(n))
        assert q.status()["dropped"] == {"queue_full": 2}
        q.start()
        await q.stop(t.now + 5)
        queue_kept = _ids(b for _, _, b in cap.requests)
        assert queue_kept == (["q-2", "q-3", "q-4"] if overflow == "drop_oldest" else ["q-0", "q-1", "q-2"])
        # The spool: five batches for two places, while the destination is down.
        sent_before = len(cap.requests)
        names = [f"r-{i:03d}" for i in range(25)]
        probe = WebhookExporter(_hook_cfg(cap.url), session)
        two_batches = 2 * Spool.size_of([it for n in names[:5] for it in probe.encode(_rec(n), False, ())])
        cfg = _hook_cfg(cap.url, max_retries=0, max_batch_records=5, overflow=overflow)
        spool = Spool(tmp_path, two_batches)
        d = _hook(cfg, session, spool, t)
        cap.answers = [503] * 1000
        d.start()
        for i in range(5):
            for n in names[i * 5 : (i + 1) * 5]:
                d.offer(_rec(n))
            await until(lambda: d.worker.queued == 0 and d.worker.in_flight == 0 and t.parked)
        st = d.status()
        assert st["dropped"] == {"spool_full": 15} and st["spooled_records"] == 10
        assert len(cap.requests) == sent_before + 1, "one failed send, then straight to the spool"
        healthy_from = len(cap.requests)
        cap.answers.clear()
        t.move(60)
        await until(lambda: spool.batches == 0)
        await d.stop(t.now + 5)
        kept = _ids(b for _, _, b in cap.requests[healthy_from:])
        assert kept == (names[15:] if overflow == "drop_oldest" else names[:10])
        assert _accounted(d.status()) == 25

    run_with_capture(body)


def test_stop_spools_the_batch_a_hanging_destination_holds_and_does_not_wait_out_its_timeout(tmp_path, caplog) -> None:
    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        await asyncio.sleep(3600)  # accepts, never answers

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            cfg = _hook_cfg(url, max_batch_records=5, timeout_s=60.0, flush_interval_s=60.0)
            d = _hook(cfg, session, Spool(tmp_path, 10**8))
            names = [f"r-{i:02d}" for i in range(12)]
            for n in names:
                d.offer(_rec(n))
            d.start()
            await until(lambda: d.worker.in_flight == 5)
            started = time.monotonic()
            caplog.set_level(logging.INFO, logger="relaycast")
            await asyncio.wait_for(d.stop(d.worker.clock() + 0.3), 10)
            assert time.monotonic() - started < 10, "the stop keeps its deadline, not the 60 s timeout"
            st = d.status()
            assert st["spooled_records"] == 12 and st["sent"] == 0 and st["dropped"] == {}
            assert "broadcast_stopped destination=hook" in caplog.text
            assert "delivered=0 spooled=12 dropped=0" in caplog.text
        finally:
            server.close()
        # After a restart the destination answers: everything arrives, once.
        again = _hook(_hook_cfg(cap.url, flush_interval_s=0.05), session, Spool(tmp_path, 10**8))
        again.start()
        await until(lambda: len(_ids(b for _, _, b in cap.requests)) >= 12)
        await again.stop(again.worker.clock() + 5)
        assert sorted(_ids(b for _, _, b in cap.requests)) == names

    run_with_capture(body)


@pytest.mark.parametrize("spool_bytes", [10**8, 1])  # the second never holds a batch: nothing to probe with
def test_a_destination_known_to_be_down_is_not_tried_again_at_shutdown(tmp_path, spool_bytes: int) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> None:
        t = ManualTime()
        cap.answers = [503] * 100
        cfg = _hook_cfg(cap.url, max_batch_records=5, max_retries=0, flush_interval_s=60.0)
        d = _hook(cfg, session, Spool(tmp_path, spool_bytes), t)
        d.start()
        for i in range(5):
            d.offer(_rec(f"a-{i}"))
        await until(lambda: d.worker.queued == 0 and t.parked)
        assert not d.status()["healthy"] and len(cap.requests) == 1
        for i in range(13):
            d.offer(_rec(f"b-{i}"))
        t.move(5.0)  # a probe would be due
        await d.stop(t.now + 10)
        assert len(cap.requests) == 1, "no send at shutdown"
        st = d.status()
        if spool_bytes > 1:
            assert st["spooled_records"] == 18 and st["dropped"] == {}
        else:
            assert st["dropped"] == {"spool_full": 18}
        assert _accounted(st) == 18

    run_with_capture(body)


class Slow(WebhookExporter):
    """A webhook whose encoding takes real time (a big record), and that notes what ran meanwhile."""

    ticks: Callable[[], int] = staticmethod(lambda: 0)
    ticks_at_send: list[int]
    encode_s = 0.0

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        if self.encode_s:
            time.sleep(self.encode_s)
        return super().encode(record, privacy, tags)

    async def send(self, items: list[bytes]) -> None:
        self.ticks_at_send.append(self.ticks())
        await super().send(items)


def _slow(cfg: DestinationConfig, session: aiohttp.ClientSession, spool: Spool | None) -> tuple[Destination, Slow]:
    red = Redactor()
    exporter = Slow(cfg, session)
    exporter.ticks_at_send = []
    return Destination(cfg, exporter, spool, red, EventLog(red), clock=time.time_ns), exporter


def test_a_big_batch_is_encoded_in_slices_and_other_work_runs_meanwhile() -> None:
    """A thousand records that take 0.2 ms each to encode: the event loop gets a turn every 2 ms of encoding (here
    every 16 records, when the pipeline looks at the clock), so a worker's admission query or a /metrics scrape
    never waits for a whole batch."""

    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> dict:
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        d, exporter = _slow(_hook_cfg(cap.url, max_batch_records=1000, flush_interval_s=60.0), session, None)
        exporter.ticks = lambda: turns
        exporter.encode_s = 0.0002
        for i in range(1000):
            d.offer(_rec(f"r-{i:04d}"))
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = turns
        await d.flush()
        tick.cancel()
        await d.stop(d.worker.clock() + 1)
        return {"turns": exporter.ticks_at_send[0] - before, "ids": _ids(b for _, _, b in cap.requests)}

    out = run_with_capture(body)
    assert out["turns"] >= 1000 // 16 - 1, out["turns"]
    assert out["ids"] == [f"r-{i:04d}" for i in range(1000)]  # one body, in order, all of it


def test_a_stop_that_comes_while_a_batch_is_encoded_spools_every_record_once(tmp_path) -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> dict:
        spool = Spool(tmp_path, 10**8)
        d, exporter = _slow(_hook_cfg(cap.url, max_batch_records=400, flush_interval_s=60.0), session, spool)
        exporter.encode_s = 0.002  # 400 records: 0.8 s of encoding, a stop's 0.2 s deadline passes inside it
        names = [f"r-{i:04d}" for i in range(400)]
        for n in names:
            d.offer(_rec(n))
        d.start()
        await asyncio.sleep(0.05)
        await d.stop(d.worker.clock() + 0.2)
        spooled: list[str] = []
        while (entry := spool.oldest()) is not None:
            spooled += [json.loads(bytes(it))["request_id"] for it in spool.read(entry)]
            spool.remove(entry)
        return {"spooled": spooled, "sent": _ids(b for _, _, b in cap.requests), "status": d.status()}

    out = run_with_capture(body)
    assert out["sent"] + out["spooled"] == [f"r-{i:04d}" for i in range(400)], "every record once, in order"
    assert out["status"]["dropped"] == {}
