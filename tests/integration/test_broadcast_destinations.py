"""One request, three destinations at once through a real `relaycast serve`: OTLP (decoded with the official
opentelemetry-proto messages), a signed webhook, and a rotating JSON-lines file."""

from __future__ import annotations

import json
import time

import openai
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from relaycast.telemetry.exporters.webhook import verify_signature
from tests.capture import CaptureServer, ForwardProxy
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config

HOOK_SECRET = "whsec-0123456789abcdef"


def test_a_request_reaches_otlp_webhook_and_file_destinations(fake: Fake, tmp_path) -> None:
    capture = CaptureServer().start()
    capture.script.default = 200
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: otel, kind: otlp, endpoint: "{capture.url}/v1/traces", headers: {{x-team: infra}}, flush_interval: 0.1}}
    - {{name: hook, kind: webhook, url: "{capture.url}/hook", secret: "{HOOK_SECRET}", flush_interval: 0.1}}
    - {{name: local, kind: file, path: "{tmp_path / "traces.jsonl"}", flush_interval: 0.1, privacy_mode: true}}
"""
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "private words"}], user="alice"
        )
        rid = raw.headers["x-request-id"]
        capture.wait_for(lambda: capture.posts("/v1/traces") and capture.posts("/hook"))
        deadline = time.monotonic() + 10
        while not (tmp_path / "traces.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        gw.stop()
        capture.stop()

    otlp = ExportTraceServiceRequest.FromString(capture.posts("/v1/traces")[0].body)
    spans = [s for rs in otlp.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == 3, "a root and two attempts (the first failed over)"
    assert capture.posts("/v1/traces")[0].headers["x-team"] == "infra"

    hook = capture.posts("/hook")[0]
    assert verify_signature(
        HOOK_SECRET, hook.headers["x-relaycast-timestamp"], hook.body, hook.headers["x-relaycast-signature"]
    )
    body = json.loads(hook.body)
    (record,) = body["records"]
    assert record["request_id"] == rid and record["attribution"]["user"] == "alice"
    assert [a["error_class"] for a in record["attempts"]] == ["upstream_5xx", None]

    line = json.loads((tmp_path / "traces.jsonl").read_text().splitlines()[0])
    assert line["request_id"] == rid and line["privacy_mode"] is True
    assert "private words" not in (tmp_path / "traces.jsonl").read_text()
    everything = b"".join(r.body for r in capture.requests) + (tmp_path / "traces.jsonl").read_bytes()
    assert HOOK_SECRET.encode() not in everything and UPSTREAM_KEY.encode() not in everything


def test_destinations_go_through_the_standard_proxy_variables(fake: Fake, tmp_path) -> None:
    """HTTP_PROXY routes every destination's requests (a gateway behind an egress proxy); NO_PROXY exempts hosts."""
    capture, proxy = CaptureServer().start(), ForwardProxy().start()
    extra = f"""
broadcast:
  spool_dir: {tmp_path}/spool
  destinations:
    - {{name: hook, kind: webhook, url: "{capture.url}/hook", flush_interval: 0.1}}
"""
    try:
        for no_proxy, through in (("", True), ("127.0.0.1", False)):
            env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "HTTP_PROXY": proxy.url, "NO_PROXY": no_proxy}
            gw = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
            try:
                capture.requests.clear()
                proxy.proxied.clear()
                c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
                c.chat.completions.create(model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
                deadline = time.monotonic() + 10
                while not any(r.path == "/hook" for r in capture.requests) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert any(r.path == "/hook" for r in capture.requests), "the webhook got nothing"
                assert any(u.endswith("/hook") for u in proxy.proxied) is through, (no_proxy, proxy.proxied)
                # Providers are not reached through it: only destinations and notifiers are.
                assert not any("/chat/completions" in u for u in proxy.proxied)
            finally:
                gw.stop()
    finally:
        capture.stop()
        proxy.stop()
