"""Langfuse, LangSmith and Braintrust through a real `relaycast serve`: one request made with the official `openai`
SDK reaches all three (capture servers on 127.0.0.1 standing in for them, the requests expected as their docs
describe), and `relaycast broadcast test` gives a plain verdict for each."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import openai
import orjson
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.capture import CaptureServer
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config

PK, SK = "pk-lf-e2e-0123456789", "sk-lf-e2e-secret-0123456789"
LS_KEY = "lsv2_pt_e2e_secret_0123456789"
BT_KEY = "sk-bt-e2e-secret-0123456789"
LANGFUSE_PATH = "/api/public/otel/v1/traces"


def attrs(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in span.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which != "array_value" else None
    return out


def spans(raw: bytes) -> list[Span]:
    return [
        s for rs in ExportTraceServiceRequest.FromString(raw).resource_spans for ss in rs.scope_spans for s in ss.spans
    ]


def test_one_request_reaches_langfuse_langsmith_and_braintrust(fake: Fake, tmp_path: Path) -> None:
    capture = CaptureServer().start()
    capture.script.default = 200
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: lf, kind: langfuse, public_key: {PK}, secret_key: {SK}, base_url: "{capture.url}", flush_interval: 0.1}}
    - {{name: ls, kind: langsmith, api_key: {LS_KEY}, project: shop, endpoint: "{capture.url}/ls", flush_interval: 0.1}}
    - {{name: bt, kind: braintrust, api_key: {BT_KEY}, project: shop, api_url: "{capture.url}/bt", flush_interval: 0.1}}
"""
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    paths = (LANGFUSE_PATH, "/ls/otel/v1/traces", "/bt/otel/v1/traces")
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hello there"}], user="alice")
        capture.wait_for(lambda: all(capture.posts(p) for p in paths))
    finally:
        gw.stop()
        capture.stop()

    lf = capture.posts(LANGFUSE_PATH)[0]
    assert lf.headers["authorization"] == "Basic " + base64.b64encode(f"{PK}:{SK}".encode()).decode()
    assert lf.headers["x-langfuse-ingestion-version"] == "4" and lf.headers["content-encoding"] == "gzip"
    root, failed, served = spans(lf.body)  # the capture server inflated the gzip body
    assert attrs(failed)["langfuse.observation.level"] == "ERROR"
    s = attrs(served)
    assert s["langfuse.observation.type"] == "generation" and s["user.id"] == "alice"
    assert "input" in orjson.loads(str(s["langfuse.observation.usage_details"]))
    assert "hello there" in str(s["langfuse.observation.input"])

    ls = capture.posts("/ls/otel/v1/traces")[0]
    assert ls.headers["x-api-key"] == LS_KEY and ls.headers["langsmith-project"] == "shop"
    kinds = [attrs(sp)["langsmith.span.kind"] for sp in spans(ls.body)]
    assert kinds == ["chain", "llm", "llm"]

    bt = capture.posts("/bt/otel/v1/traces")[0]
    assert bt.headers["authorization"] == f"Bearer {BT_KEY}" and bt.headers["x-bt-parent"] == "project_name:shop"
    served_bt = attrs(spans(bt.body)[2])
    assert "prompt_tokens" in orjson.loads(str(served_bt["braintrust.metrics"]))
    assert "hello there" in str(served_bt["braintrust.input_json"])

    everything = b"".join(r.body for r in capture.requests)
    for secret in (SK, LS_KEY, BT_KEY, UPSTREAM_KEY):
        assert secret.encode() not in everything


def test_broadcast_test_gives_a_plain_verdict_per_backend(fake: Fake, tmp_path: Path) -> None:
    capture = CaptureServer().start()
    capture.script.routes = {
        "/api/public/projects": (200, b'{"data":[{"id":"p"}]}'),
        "/bt/v1/project": (401, b'{"error":"invalid key"}'),
    }
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: lf, kind: langfuse, public_key: {PK}, secret_key: {SK}, base_url: "{capture.url}"}}
    - {{name: bt, kind: braintrust, api_key: {BT_KEY}, api_url: "{capture.url}/bt"}}
"""
    path = tmp_path / "relaycast.yaml"
    path.write_text(standard_config(fake.url, extra))
    try:
        results = {
            name: subprocess.run(
                [sys.executable, "-m", "relaycast", "broadcast", "test", name, "--config", str(path)],
                capture_output=True,
                text=True,
                timeout=60,
                env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "PATH": "/usr/bin:/bin"},
                cwd=tmp_path,
            )
            for name in ("lf", "bt")
        }
    finally:
        capture.stop()
    lf, bt = results["lf"], results["bt"]
    assert lf.returncode == 0, lf.stdout + lf.stderr
    assert "lf (langfuse)" in lf.stdout and "ok: Langfuse" in lf.stdout
    assert bt.returncode != 0, bt.stdout + bt.stderr
    assert "Braintrust rejected the credentials (HTTP 401)" in bt.stdout + bt.stderr
    for r in (lf, bt):
        assert SK not in r.stdout + r.stderr and BT_KEY not in r.stdout + r.stderr
