"""A real Arize Phoenix server on loopback (`phoenix serve`, authentication on) receiving a real `relaycast serve`'s
traces: chat requests made with the official openai SDK are read back through Phoenix's own REST and GraphQL APIs,
as Phoenix stores and renders them (span kinds, model, tokens, cost, messages, tool calls, user, session). And
`relaycast broadcast test` against it, with the right key and a wrong one.

Phoenix computes costs itself, from its price table and `llm.model_name` / `llm.provider` (phoenix/server/
cost_tracking); it keeps our `llm.cost.*` attributes as span attributes but does not read them. For gpt-4o-mini both
price lists agree, so Phoenix's cost equals ours."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from relaycast.server.runner import free_port
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.servers import ToolServer, tool

SECRET = "phoenix-jwt-secret-0123456789abcdefgh"
ADMIN_KEY = "phoenix-admin-secret-0123456789abcdef"  # Phoenix takes it as a bearer token (PHOENIX_ADMIN_SECRET)
PROJECT = "relaycast-e2e"


@pytest.fixture(scope="module")
def phoenix() -> Iterator[ToolServer]:
    server = ToolServer(
        [tool("phoenix", "phoenix"), "serve"],
        env={
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": "{port}",
            "PHOENIX_GRPC_PORT": str(free_port()),
            "PHOENIX_WORKING_DIR": "{dir}",
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ENABLE_AUTH": "true",
            "PHOENIX_SECRET": SECRET,
            "PHOENIX_ADMIN_SECRET": ADMIN_KEY,
        },
        ready_path="/healthz",
    )
    server.start(timeout=120)
    print(f"phoenix answered after {server.started_s:.1f}s")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(fake: Fake, phoenix: ToolServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    extra = f"""
broadcast:
  spool_dir: {tmp_path_factory.mktemp("spool")}
  destinations:
    - name: phoenix
      kind: phoenix
      endpoint: {phoenix.url}
      api_key: ${{TEST_PHOENIX_KEY}}
      project_name: {PROJECT}
      flush_interval: 0.1
"""
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "TEST_PHOENIX_KEY": ADMIN_KEY}
    gw = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
    yield gw
    gw.stop()


def get(phoenix: ToolServer, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        phoenix.url + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def spans_of(phoenix: ToolServer, request_ids: set[str], timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every span Phoenix holds for these requests (a root and an LLM span per attempt), once all have come."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            data = get(phoenix, f"/v1/projects/{PROJECT}/spans?limit=1000")["data"]
        except urllib.error.HTTPError as e:
            if e.code != 404:  # the project exists once its first span came
                raise
            data = []
        found = [s for s in data if s["attributes"].get("relaycast.request_id") in request_ids]
        roots = {s["attributes"]["relaycast.request_id"] for s in found if s["span_kind"] == "CHAIN"}
        if roots == request_ids:
            return found
        assert time.monotonic() < deadline, f"Phoenix holds {len(found)} spans of {request_ids}"
        time.sleep(0.2)


def cost_summary(phoenix: ToolServer, span_id: str) -> dict[str, Any]:
    q = "query($id: ID!) { node(id: $id) { ... on Span { costSummary { total { cost tokens } } } } }"
    out = get(phoenix, "/graphql", {"query": q, "variables": {"id": span_id}})
    assert not out.get("errors"), out
    summary: dict[str, Any] = out["data"]["node"]["costSummary"]
    return summary


def test_chat_requests_show_up_in_phoenix_as_it_renders_them(phoenix: ToolServer, gateway: GatewayProcess) -> None:
    c = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    # "fast" fails over once: a failed LLM span, then the one that answered
    plain = c.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "hello phoenix"}],
        user="alice",
        extra_headers={"x-session-id": "sess-42"},
    )
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    called = c.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini@tool_call",  # the fake upstream answers with a call to the first tool
        messages=[{"role": "user", "content": "find the fox"}],
        tools=tools,  # type: ignore[arg-type]
        user="bob",
    )
    rid_plain, rid_tool = plain.headers["x-request-id"], called.headers["x-request-id"]
    answer = plain.parse()
    found = spans_of(phoenix, {rid_plain, rid_tool})

    def of(rid: str) -> list[dict[str, Any]]:
        return sorted(
            (s for s in found if s["attributes"]["relaycast.request_id"] == rid), key=lambda s: s["start_time"]
        )

    root, failed, llm = of(rid_plain)
    assert root["span_kind"] == "CHAIN" and failed["span_kind"] == llm["span_kind"] == "LLM"
    assert llm["parent_id"] == failed["parent_id"] == root["context"]["span_id"]
    assert failed["status_code"] == "ERROR" and "llm.token_count.total" not in failed["attributes"]
    a = llm["attributes"]
    assert llm["status_code"] != "ERROR"
    assert a["llm.model_name"] == answer.model and a["llm.request.model_name"] == "gpt-4o-mini"
    assert answer.usage is not None
    assert a["llm.token_count.prompt"] == answer.usage.prompt_tokens
    assert a["llm.token_count.completion"] == answer.usage.completion_tokens
    assert a["llm.token_count.total"] == answer.usage.total_tokens
    assert a["llm.input_messages.0.message.content"] == "hello phoenix"
    assert a["llm.output_messages.0.message.content"] == answer.choices[0].message.content
    assert a["output.value"] == answer.choices[0].message.content
    for span in (root, failed, llm):
        assert span["attributes"]["user.id"] == "alice" and span["attributes"]["session.id"] == "sess-42"
        assert span["attributes"]["metadata.request_id"] == rid_plain  # Phoenix stores the JSON as a mapping
    # Phoenix's own cost, from its price table, and ours agree for gpt-4o-mini
    ours = a["llm.cost.total"]
    assert ours > 0 and a["relaycast.cost.source"] == "computed"
    theirs = cost_summary(phoenix, llm["id"])
    assert theirs["total"]["tokens"] == answer.usage.total_tokens
    assert theirs["total"]["cost"] == pytest.approx(ours, rel=1e-6)
    assert cost_summary(phoenix, root["id"]) is None, "the root carries no tokens: nothing counted twice"
    # the trace list shows the root's input and output: the request and the answer the client got
    r = root["attributes"]
    assert json.loads(r["input.value"])["messages"] == [{"role": "user", "content": "hello phoenix"}]
    assert r["output.value"] == answer.choices[0].message.content

    _, served = of(rid_tool)
    s = served["attributes"]
    assert s["llm.output_messages.0.message.role"] == "assistant"
    assert s["llm.output_messages.0.message.tool_calls.0.tool_call.function.name"] == "lookup"
    assert json.loads(s["output.value"])["tool_calls"][0]["function"]["name"] == "lookup"
    assert s["llm.input_messages.0.message.content"] == "find the fox"
    assert s["user.id"] == "bob" and s["llm.token_count.total"] > 0


def test_broadcast_test_says_plainly_whether_phoenix_takes_the_key(phoenix: ToolServer, tmp_path: Path) -> None:
    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(
        f"""
providers:
  - {{name: fake, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: x}}
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: good, kind: phoenix, endpoint: "{phoenix.url}", api_key: "{ADMIN_KEY}", project_name: {PROJECT}}}
    - {{name: wrong-key, kind: phoenix, endpoint: "{phoenix.url}", api_key: not-the-key-0123456789}}
    - {{name: no-key, kind: phoenix, endpoint: "{phoenix.url}"}}
"""
    )
    out = subprocess.run(
        [sys.executable, "-m", "relaycast", "broadcast", "test", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"OK   good (phoenix): ok: Phoenix at {phoenix.url}/v1/projects accepted the credentials" in lines
    wrong = next(line for line in lines if line.startswith("FAIL wrong-key"))
    assert "rejected the credentials (HTTP 401)" in wrong and "api_key" in wrong
    assert "not-the-key-0123456789" not in out.stdout
    assert any(line.startswith("FAIL no-key") and "HTTP 401" in line for line in lines)
