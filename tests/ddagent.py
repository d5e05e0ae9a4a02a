"""Datadog's own `ddapm-test-agent` (the `test` extra) on a free loopback port, as the Datadog Agent that broadcast
tests send LLM Observability spans to; `spans()` reads back every span it received. The `agent` fixture
(tests/conftest.py) starts one per test module."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from relaycast.server.runner import free_port


class DatadogTestAgent:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DD_")}
        env["DISABLE_LLMOBS_DATA_FORWARDING"] = "true"
        exe = Path(sys.executable).with_name("ddapm-test-agent")
        self.proc = subprocess.Popen(
            [
                str(exe),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--otlp-http-port",
                str(free_port()),
                "--otlp-grpc-port",
                str(free_port()),
                "--web-ui-port",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/info", timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, "ddapm-test-agent exited"
                assert time.monotonic() < deadline, "ddapm-test-agent did not start"
                time.sleep(0.1)

    def spans(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/test/session/requests", timeout=5) as r:
            reqs = json.load(r)
        out = []
        for req in reqs:
            if "/evp_proxy/v2/api/v2/llmobs" not in req["url"]:
                continue
            assert (
                req["headers"].get("x-datadog-evp-subdomain", req["headers"].get("X-Datadog-EVP-Subdomain"))
                == "llmobs-intake"
            )
            for env in json.loads(base64.b64decode(req["body"])):
                assert env["event_type"] == "span" and env["_dd.stage"] == "raw"
                out.extend(env["spans"])
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
