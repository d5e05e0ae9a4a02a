"""Comet Opik, W&B Weave, Sentry, Grafana Cloud and New Relic through a real `relaycast serve`: one request reaches
all five (capture servers standing in for them, at the paths and with the headers each documents), and
`relaycast broadcast test` gives a plain verdict for one of them."""

from __future__ import annotations

import base64
import gzip
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.capture import CaptureServer
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config

OPIK_KEY = "opik-key-e2e-0123456789"
WANDB_KEY = "wandb-key-e2e-0123456789"
SENTRY_KEY = "0123456789abcdef0123456789abcdef"
GRAFANA_TOKEN = "glc_e2e_token_0123456789"
NR_KEY = "nr-license-e2e-0123456789abcdefNRAL"
PROMPT = "private prompt words (e2e-marker-31)"

PATHS = {
    "opik": "/opik/api/v1/private/otel/v1/traces",
    "weave": "/weave/otel/v1/traces",
    "sentry": "/sentry/api/77/integration/otlp/v1/traces",
    "grafana_cloud": "/grafana/otlp/v1/traces",
    "newrelic": "/nr/v1/traces",
}


def destinations(url: str, port: int, spool: Path) -> str:
    return f"""
broadcast:
  spool_dir: {spool}
  destinations:
    - {{name: opik, kind: opik, url: "{url}/opik/api", project_name: relaycast-e2e, flush_interval: 0.1}}
    - {{name: weave, kind: weave, entity: acme, project: checkout, base_url: "{url}/weave", flush_interval: 0.1}}
    - {{name: sentry, kind: sentry, dsn: "http://{SENTRY_KEY}@127.0.0.1:{port}/sentry/77", flush_interval: 0.1}}
    - name: grafana
      kind: grafana_cloud
      instance_id: 987654
      token: {GRAFANA_TOKEN}
      endpoint: "{url}/grafana/otlp"
      flush_interval: 0.1
    - {{name: nr, kind: newrelic, endpoint: "{url}/nr", flush_interval: 0.1, privacy_mode: true}}
"""


def attrs(span: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in span.attributes}


def test_one_request_reaches_opik_weave_sentry_grafana_and_newrelic(fake: Fake, tmp_path: Path) -> None:
    capture = CaptureServer().start()
    capture.script.default = 200
    env = {
        "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "OPIK_API_KEY": OPIK_KEY,  # each backend's own variables fill what the config leaves out
        "WANDB_API_KEY": WANDB_KEY,
        "NEW_RELIC_LICENSE_KEY": NR_KEY,
    }
    extra = destinations(capture.url, capture.port, tmp_path / "spool")
    gw = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": PROMPT}],
            user="alice",
            extra_headers={"x-session-id": "sess-e2e"},
        )
        capture.wait_for(lambda: all(capture.posts(p) for p in PATHS.values()))
        log = gw.log()
    finally:
        gw.stop()
        capture.stop()

    got = {kind: capture.posts(path)[0] for kind, path in PATHS.items()}
    decoded = {}
    for kind, req in got.items():
        body = gzip.decompress(req.body) if req.body[:2] == b"\x1f\x8b" else req.body
        export = ExportTraceServiceRequest.FromString(body)
        spans = [s for rs in export.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(spans) == 3, f"{kind}: a root and two attempts (the first failed over)"
        decoded[kind] = [attrs(s) for s in spans]

    assert got["opik"].headers["authorization"] == OPIK_KEY
    assert got["opik"].headers["projectname"] == "relaycast-e2e"
    assert got["weave"].headers["wandb-api-key"] == WANDB_KEY and got["weave"].headers["project_id"] == "acme/checkout"
    assert got["sentry"].headers["x-sentry-auth"] == f"sentry sentry_key={SENTRY_KEY}"
    assert got["sentry"].headers["content-encoding"] == "gzip"
    grafana_auth = got["grafana_cloud"].headers["authorization"].removeprefix("Basic ")
    assert base64.b64decode(grafana_auth) == f"987654:{GRAFANA_TOKEN}".encode()
    assert got["newrelic"].headers["api-key"] == NR_KEY

    served = {kind: next(a for a in spans if a.get("gen_ai.response.model")) for kind, spans in decoded.items()}
    for kind, a in served.items():
        assert a["gen_ai.request.model"] == "gpt-4o-mini", kind
        assert a["gen_ai.usage.input_tokens"] > 0 and a["user.id"] == "alice", kind
    assert served["opik"]["thread_id"] == "sess-e2e" and PROMPT in served["opik"]["gen_ai.input.messages"]
    assert served["weave"]["wandb.thread_id"] == "sess-e2e" and PROMPT in served["weave"]["input.value"]
    assert served["sentry"]["sentry.op"] == "gen_ai.chat" and PROMPT in served["sentry"]["gen_ai.request.messages"]
    assert PROMPT.encode() not in got["newrelic"].body  # privacy_mode on that one

    secrets = (OPIK_KEY, WANDB_KEY, SENTRY_KEY, GRAFANA_TOKEN, NR_KEY, UPSTREAM_KEY)
    assert not any(s in log for s in secrets), "a key reached the gateway's log"


def test_broadcast_test_cli_gives_opik_a_plain_verdict(tmp_path: Path) -> None:
    capture = CaptureServer().start()
    try:
        capture.script.routes["/opik/api/v1/private/projects"] = (200, b'{"content": []}')
        cfg = tmp_path / "relaycast.yaml"
        opik = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: opik, kind: opik, url: "{capture.url}/opik/api", workspace: acme}}
"""
        cfg.write_text(standard_config("http://127.0.0.1:9/v1", opik))

        def cli(key: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "relaycast", "broadcast", "test", "opik", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=30,
                env={"TEST_UPSTREAM_KEY": "k", "OPIK_API_KEY": key, "PATH": ""},
            )

        ok = cli(OPIK_KEY)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "OK   opik (opik): ok: Opik at http://127.0.0.1" in ok.stdout
        (check,) = [r for r in capture.requests if r.path == "/opik/api/v1/private/projects"]
        assert check.method == "GET" and check.headers["authorization"] == OPIK_KEY
        assert check.headers["comet-workspace"] == "acme"

        capture.script.routes["/opik/api/v1/private/projects"] = (401, b'{"errors": ["unauthorized"]}')
        bad = cli("opik-wrong-key-0123456789")
        assert bad.returncode == 1
        assert "FAIL opik (opik): Opik rejected the credentials (HTTP 401)" in bad.stdout
        assert "OPIK_API_KEY" in bad.stdout and "opik-wrong-key-0123456789" not in bad.stdout + bad.stderr
    finally:
        capture.stop()
