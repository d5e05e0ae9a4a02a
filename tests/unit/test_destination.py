"""A broadcast destination on its BatchWorker, against a real loopback server: recovery without a spool, and
what a stop that passes its deadline hands to the spool."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from relaycast.log import EventLog
from relaycast.records import Attribution, RequestRecord
from relaycast.redact import Redactor
from relaycast.telemetry.exporters.datadog import DatadogExporter
from relaycast.telemetry.pipeline import Destination
from relaycast.telemetry.settings import DatadogOptions, DestinationConfig
from relaycast.telemetry.spool import Spool
from tests.capture import AsyncCapture, run_with_capture


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


def _record(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"req-{i}",
        endpoint="chat.completions",
        model_requested="m",
        stream=False,
        started_unix_ns=time.time_ns(),
        duration_ns=1000,
        status_code=200,
        attribution=Attribution(user="u"),
    )


def _request_ids(bodies: list[bytes]) -> list[str]:
    return [s["meta"]["metadata"]["request_id"] for b in bodies for env in json.loads(b) for s in env["spans"]]


def _destination(cfg: DestinationConfig, session: aiohttp.ClientSession, spool: Spool | None) -> Destination:
    red = Redactor()
    return Destination(cfg, DatadogExporter(cfg, session), spool, red, EventLog(red), clock=time.time_ns)


def test_a_destination_without_a_spool_probes_with_a_live_batch_and_recovers() -> None:
    async def body(cap: AsyncCapture, session: aiohttp.ClientSession) -> dict:
        cap.answers = [503]
        d = _destination(_dest(cap.url, max_retries=0, spool_max_bytes=0), session, None)
        d.offer(_record(1))
        await d.flush()  # 503: down, and nothing to spool it to
        d.offer(_record(2))
        await d.flush()  # down, no probe due yet: dropped, counted
        assert len(cap.requests) == 1 and not d.status()["healthy"]
        d._next_probe = d.worker.clock()  # the probe's backoff has passed
        d.offer(_record(3))
        await d.flush()  # the probe: 202
        d.offer(_record(4))
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
        one = len(d.exporter.encode(_record(0), False, ())[0])
        d.exporter.max_batch_bytes = one + 10  # one record per body
        for i in range(5):
            d.offer(_record(i))
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
