"""The broadcast pipeline under faults: destination errors, hangs, restarts, overflow. Real gateway, real
requests with the openai SDK, a capture server on loopback standing in for Datadog's agentless intake."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from relaycast.config import parse
from relaycast.log import EventLog
from relaycast.redact import Redactor
from relaycast.server.app import Gateway
from relaycast.server.runner import ThreadedServer
from relaycast.telemetry.pipeline import Broadcaster
from tests.capture import CaptureServer
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.sample_records import sample_record

DD_KEY = "ddkey0123456789abcdef0123456789ab"
MSGS = [{"role": "user", "content": "hello"}]


def dd_config(fake_url: str, capture_url: str, spool: str, **over: object) -> str:
    settings = {"flush_interval": 0.1, "max_retries": 2, "timeout": 0.5, **over}
    lines = "\n".join(f"      {k}: {v}" for k, v in settings.items())
    return standard_config(
        fake_url,
        f"""
broadcast:
  spool_dir: {spool}
  destinations:
    - name: dd
      kind: datadog
      api_key: {DD_KEY}
      site: us5.datadoghq.com
      api_url: {capture_url}
      intake_url: {capture_url}
{lines}
""",
    )


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    c = CaptureServer().start()
    yield c
    c.stop()


def accepted_span_ids(capture: CaptureServer, accepted_status: int = 202) -> list[str]:
    ids = []
    for r in capture.posts("/api/v2/llmobs"):
        if r.status == accepted_status:
            ids.extend(env["spans"][0]["span_id"] for env in json.loads(r.body))
    return ids


def test_agentless_posts_to_the_intake_path_with_the_key_header(fake: Fake, capture: CaptureServer, tmp_path) -> None:
    cfg = parse(dd_config(fake.url, capture.url, str(tmp_path)), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    with ThreadedServer(Gateway(cfg)) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=MSGS)
        capture.wait_for(lambda: len(accepted_span_ids(capture)) >= 2)
    post = capture.posts("/api/v2/llmobs")[0]
    assert post.headers["dd-api-key"] == DD_KEY
    assert post.headers["content-type"] == "application/json"
    assert isinstance(json.loads(post.body), list)


def test_every_span_arrives_exactly_once_when_the_destination_fails_then_recovers(
    fake: Fake, capture: CaptureServer, tmp_path
) -> None:
    capture.script.statuses = [500] * 3 + [503] * 2  # three tries of one batch, then two failed probes
    cfg = parse(dd_config(fake.url, capture.url, str(tmp_path)), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    gw = Gateway(cfg)
    with ThreadedServer(gw) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0)
        expected = 0
        for i in range(30):
            raw = c.chat.completions.with_raw_response.create(
                model="fast" if i % 3 == 0 else "fakeai/gpt-4o-mini", messages=MSGS
            )
            expected += 1 + int(raw.headers["x-relaycast-attempts"])  # a root span and one span per attempt
            time.sleep(0.03)
        capture.wait_for(lambda: len(accepted_span_ids(capture)) >= expected, timeout=20)
        time.sleep(0.3)
        status = gw.services.broadcaster.status()[0]
    ids = accepted_span_ids(capture)
    assert len(ids) == expected and len(set(ids)) == expected, "each span exactly once"
    assert sum(status["dropped"].values()) == 0 and status["sent"] == 30  # records; `expected` counts spans
    assert status["retries"] >= 1


def test_a_hanging_destination_does_not_hold_up_requests(fake: Fake, capture: CaptureServer, tmp_path) -> None:
    capture.script.delay_s = 30
    cfg = parse(dd_config(fake.url, capture.url, str(tmp_path)), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    gw = Gateway(cfg)
    with ThreadedServer(gw) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=2)
        for _ in range(20):
            assert c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=MSGS).choices
        capture.wait_for(lambda: gw.services.broadcaster.status()[0]["last_error"] is not None, timeout=10)
        assert "did not answer" in gw.services.broadcaster.status()[0]["last_error"]


def test_the_otel_timeout_variable_bounds_each_export_of_the_destination_the_variables_make(
    fake: Fake, capture: CaptureServer, tmp_path
) -> None:
    """An OTLP receiver slower than OTEL_EXPORTER_OTLP_TIMEOUT (milliseconds, as OpenTelemetry's SDKs read it): the
    export is abandoned at that bound and retried, and the span arrives once the receiver answers in time."""
    capture.script.delay_s = 2.0
    env = {
        "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "OTEL_EXPORTER_OTLP_ENDPOINT": capture.url,
        "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
    }
    cfg = parse(standard_config(fake.url, f"broadcast: {{spool_dir: {tmp_path}}}\n"), env=env)
    gw = Gateway(cfg)
    with ThreadedServer(gw) as srv:
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=5)
        c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=MSGS)
        capture.wait_for(lambda: gw.services.broadcaster.status()[0]["last_error"] is not None, timeout=10)
        assert "did not answer within 0.3s" in gw.services.broadcaster.status()[0]["last_error"]
        capture.script.delay_s = 0
        capture.wait_for(lambda: gw.services.broadcaster.status()[0]["sent"] == 1, timeout=15)
        status = gw.services.broadcaster.status()[0]
    assert status["name"] == "otlp" and status["retries"] >= 1
    posts = capture.posts("/v1/traces")
    assert len(posts) >= 2 and posts[-1].status == 202


def test_spans_spooled_while_the_destination_is_down_are_delivered_after_a_restart(
    fake: Fake, capture: CaptureServer, tmp_path
) -> None:
    capture.script.default = 503
    text = dd_config(fake.url, capture.url, str(tmp_path / "spool"))
    gw = GatewayProcess(text, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    for _ in range(5):
        c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=MSGS)
    gw.stop()  # SIGTERM: flush within the deadline, spool the rest
    assert list((tmp_path / "spool" / "dd").glob("*.batch")), "undelivered spans were spooled"
    assert accepted_span_ids(capture, 202) == []
    capture.script.default = 202
    gw2 = GatewayProcess(text, env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        capture.wait_for(lambda: len(accepted_span_ids(capture)) >= 10, timeout=20)
        time.sleep(0.3)
        ids = accepted_span_ids(capture)
        assert len(ids) == 10 and len(set(ids)) == 10
        assert not list((tmp_path / "spool" / "dd").glob("*.batch"))
        assert DD_KEY not in gw2.log()
    finally:
        gw2.stop()


def _broadcaster(capture_url: str, tmp_path, **over: object) -> tuple[Broadcaster, aiohttp.ClientSession]:
    cfg = parse(dd_config("http://127.0.0.1:9/v1", capture_url, str(tmp_path), **over), env={"TEST_UPSTREAM_KEY": "k"})
    session = aiohttp.ClientSession()
    red = Redactor(cfg.secrets())
    return Broadcaster(cfg.broadcast, session, red, EventLog(red)), session


def test_a_full_queue_drops_the_oldest_records_and_counts_them(capture: CaptureServer, tmp_path) -> None:
    capture.script.delay_s = 5

    async def run() -> dict:
        b, session = _broadcaster(capture.url, tmp_path, queue_size=50, max_batch_records=10)
        b.start()
        for i in range(5000):
            b(sample_record(i))
        status = b.status()[0]
        await b.stop(0.5)
        await session.close()
        return status

    status = asyncio.run(run())
    assert status["queued"] <= 50
    assert status["dropped"]["queue_full"] >= 5000 - 50 - 10


def test_sampling_keeps_or_drops_whole_sessions_and_filters_by_key(capture: CaptureServer, tmp_path) -> None:
    async def run() -> tuple[list[dict], dict]:
        b, session = _broadcaster(capture.url, tmp_path, sample_rate=0.5, exclude_keys="[batch]")
        b.start()
        for i in range(400):
            b(sample_record(i, session_id=f"s{i % 40}"))
        b(sample_record(999, session_id="s-excluded", key_name="batch"))
        await b.flush()
        status = b.status()[0]
        await b.stop(1)
        await session.close()
        return [s for r in capture.posts() for env in json.loads(r.body) for s in env["spans"]], status

    spans, status = asyncio.run(run())
    kept = {s["session_id"] for s in spans}
    assert 5 <= len(kept) <= 35, "about half the sessions"
    by_session: dict[str, int] = {}
    for s in spans:
        by_session[s["session_id"]] = by_session.get(s["session_id"], 0) + 1
    assert set(by_session.values()) == {10}, "every request of a kept session is kept"
    assert "s-excluded" not in kept and status["filtered_out"] == 1


def test_privacy_mode_sends_no_prompts_or_completions(capture: CaptureServer, tmp_path) -> None:
    async def run() -> None:
        b, session = _broadcaster(capture.url, tmp_path, privacy_mode="true")
        b.start()
        b(sample_record(1))
        await b.flush()
        await b.stop(1)
        await session.close()

    asyncio.run(run())
    body = b"".join(r.body for r in capture.posts())
    assert body and b"secret prompt" not in body and b"secret completion" not in body


@pytest.mark.parametrize(
    ("validate", "expect_code", "words"),
    [((200, b'{"valid": true}'), 0, "ok: API key valid"), ((403, b'{"errors": ["Forbidden"]}'), 1, "invalid API key")],
)
def test_broadcast_test_checks_the_key_and_sends_a_test_span(
    capture: CaptureServer, tmp_path, validate, expect_code, words
) -> None:
    capture.script.routes["/api/v1/validate"] = validate
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(dd_config("http://127.0.0.1:9/v1", capture.url, str(tmp_path / "spool")))
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "broadcast", "test", "dd", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"TEST_UPSTREAM_KEY": "k", "PATH": ""},
    )
    assert r.returncode == expect_code, r.stdout + r.stderr
    assert words in r.stdout
    assert DD_KEY not in r.stdout + r.stderr
    validate_req = [q for q in capture.requests if q.path == "/api/v1/validate"][0]
    assert validate_req.headers["dd-api-key"] == DD_KEY
    assert bool(capture.posts("/api/v2/llmobs")) == (expect_code == 0)


def test_broadcast_test_reports_an_unreachable_site(tmp_path) -> None:
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(dd_config("http://127.0.0.1:9/v1", "http://127.0.0.1:9", str(tmp_path / "spool")))
    r = subprocess.run(
        [sys.executable, "-m", "relaycast", "broadcast", "test", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"TEST_UPSTREAM_KEY": "k", "PATH": ""},
    )
    assert r.returncode == 1 and "unreachable" in r.stdout
