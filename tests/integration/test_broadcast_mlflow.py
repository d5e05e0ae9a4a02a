"""A real MLflow tracking server on loopback (`mlflow server`, SQLite store) receiving a real `relaycast serve`'s
traces through the generic `otlp` kind: MLflow 3 takes OTLP/HTTP at `/v1/traces`, the experiment named by the
`x-mlflow-experiment-id` header (https://mlflow.org/docs/latest/genai/tracing/opentelemetry/ingest). The trace is
read back with MLflow's own client, as MLflow stores it: it translates the GenAI attributes into its span types,
model, inputs and outputs and token usage (mlflow/tracing/otel/translation/genai_semconv.py)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.servers import ToolServer, tool

# MLflow's own client, run in MLflow's environment (importing mlflow takes seconds, so one process polls): it prints
# the experiment's traces as JSON once there are any (at most 20 s), each span as MLflow reads it (type, status,
# attributes, inputs, outputs); [] when none came.
CLIENT = """
import json, sys, time
import mlflow
client = mlflow.MlflowClient(tracking_uri=sys.argv[1])
deadline = time.monotonic() + 20
while True:
    out = []
    for t in client.search_traces(locations=[sys.argv[2]]):
        spans = [
            {"name": s.name, "parent_id": s.parent_id, "span_type": s.span_type, "status": s.status.status_code.value,
             "start_time_ns": s.start_time_ns, "attributes": s.attributes, "inputs": s.inputs, "outputs": s.outputs}
            for s in t.data.spans
        ]
        out.append({"token_usage": t.info.token_usage, "spans": spans})
    if out or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps(out, default=str))
"""


def mlflow_traces(tracking: ToolServer, experiment_id: str) -> list[Any]:
    done = subprocess.run(
        [tool("mlflow", "python"), "-c", CLIENT, tracking.url, experiment_id],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    traces: list[Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return traces


def create_experiment(tracking: ToolServer, name: str) -> str:
    """A new experiment, through MLflow's REST API (what its client calls)."""
    req = urllib.request.Request(
        f"{tracking.url}/api/2.0/mlflow/experiments/create",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        experiment_id: str = json.loads(r.read())["experiment_id"]
    return experiment_id


@pytest.fixture(scope="module")
def tracking() -> Iterator[ToolServer]:
    server = ToolServer(
        [
            tool("mlflow", "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--backend-store-uri",
            "sqlite:///{dir}/mlflow.db",
            "--default-artifact-root",
            "{dir}/artifacts",
            "--workers",
            "1",
        ],
        env={"MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "true"},
        ready_path="/health",
    )
    server.start(timeout=120)
    print(f"mlflow answered after {server.started_s:.1f}s")
    yield server
    server.stop()


def test_a_chat_request_becomes_an_mlflow_trace_with_model_and_token_usage(
    fake: Fake, tracking: ToolServer, tmp_path: Path
) -> None:
    experiment_id = create_experiment(tracking, "relaycast-e2e")
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - name: mlflow
      kind: otlp
      endpoint: {tracking.url}/v1/traces
      headers: {{x-mlflow-experiment-id: "{experiment_id}"}}
      flush_interval: 0.1
"""
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "hello mlflow"}], user="alice"
        )
        rid = raw.headers["x-request-id"]
        answer = raw.parse()
        traces = mlflow_traces(tracking, experiment_id)
        assert traces, f"no trace in MLflow within 20 s; gateway log:\n{gw.log()}"
    finally:
        gw.stop()

    (trace,) = traces
    spans = {s["name"]: s for s in trace["spans"]}
    root = spans["relaycast.chat.completions"]
    assert root["parent_id"] is None and root["attributes"]["relaycast.request_id"] == rid
    llm = [s for s in trace["spans"] if s["attributes"].get("gen_ai.operation.name") == "chat"]
    assert len(llm) == 2, "the failed attempt and the one that answered"
    failed, served = sorted(llm, key=lambda s: s["start_time_ns"])
    assert failed["status"] == "ERROR"
    assert served["span_type"] == "CHAT_MODEL" and failed["span_type"] == "CHAT_MODEL"
    assert answer.usage is not None
    usage = served["attributes"]["mlflow.chat.tokenUsage"]
    assert usage["input_tokens"] == answer.usage.prompt_tokens
    assert usage["output_tokens"] == answer.usage.completion_tokens
    assert usage["total_tokens"] == answer.usage.total_tokens
    assert served["attributes"]["mlflow.llm.model"] == answer.model
    assert served["attributes"]["user.id"] == "alice"
    assert "hello mlflow" in json.dumps(served["inputs"])
    assert str(answer.choices[0].message.content) in json.dumps(served["outputs"])
    # the trace's own totals: only the attempt that used tokens counts
    assert trace["token_usage"]["total_tokens"] == answer.usage.total_tokens
    assert served["attributes"]["relaycast.cost.usd"] > 0
