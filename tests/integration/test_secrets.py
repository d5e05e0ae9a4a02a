"""Secrets never leave a real gateway, whatever characters they hold, and credentials never follow a redirect.

Each secret below holds what JSON, log lines or URLs escape (`"`, `\\`, a newline, a control character, non-ASCII,
`%`). An upstream on loopback quotes them back in its error bodies and completions, the way a misbehaving upstream
or proxy does; the test then reads everything that leaves the gateway: the client's error bodies, a webhook
export, `/admin/analytics`, the log, and asks that no form of any secret is in it. Then redirects: an upstream, a
notification target and the Datadog key check each answer 307 towards another loopback server, which must never
be reached. Last, the files the gateway writes (store, spool, file destination) are its user's only.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest
from aiohttp import web

from relaycast.log import EventLog
from relaycast.monitors.notify import Notifier
from relaycast.monitors.settings import NotifyTarget
from relaycast.redact import Redactor
from relaycast.server.runner import free_port
from tests.conftest import ADMIN_KEY, GatewayProcess
from tests.store_helpers import wait_stored

# The provider's key (sent as `Authorization: Bearer ...`), its short token header and its cookie: what an HTTP
# header can hold, quotes and backslashes included.
PROVIDER_KEY = 'pk"quoted\\back-5Qz'
UPSTREAM_TOKEN = 't"k\\1'  # 5 characters: registered by its header's name, not by its length
COOKIE_VALUE = 'c00k"e\\value'
# Secrets that never travel in a header can hold anything.
HOOK_SECRET = 'whsec\n"signing"\\é-ü\x01end'
SESSION_SECRET = 'dåsh"board\\secret\nline2-0123'
QUERY_TOKEN = 'tök"en/42'  # in the webhook URL's query string, percent-encoded there
QUERY_TOKEN_ENCODED = quote(QUERY_TOKEN, safe="")
SECRETS = {
    "key": PROVIDER_KEY,
    "token": UPSTREAM_TOKEN,
    "cookie": COOKIE_VALUE,
    "hook": HOOK_SECRET,
    "session": SESSION_SECRET,
    "query": QUERY_TOKEN,
}


def forms(secret: str) -> set[str]:
    """What a leak would look like: the secret itself, JSON-escaped (with and without non-ASCII), escaped twice,
    as a log line escapes it, and percent-encoded."""
    once = {json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    twice = {json.dumps(x, ensure_ascii=False)[1:-1] for x in once}
    logged = secret.replace("\r", "\\r").replace("\n", "\\n").replace('"', '\\"')
    return {secret, *once, *twice, logged, quote(secret, safe="")}


def assert_no_secret(text: str, where: str) -> None:
    for name, secret in SECRETS.items():
        for form in forms(secret):
            assert form not in text, f"the {name} secret leaked into {where} as {form!r}"


class Loopback:
    """An aiohttp server on its own thread; `handler` answers, `requests` records (path, headers, body)."""

    def __init__(self, handler: Callable[[web.Request, bytes], web.StreamResponse] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.handler = handler or (lambda request, body: web.Response(status=200, body=b"{}"))
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append((request.path_qs, {k.lower(): v for k, v in request.headers.items()}, body))
        return self.handler(request, body)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> Loopback:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def quoting_upstream(elsewhere: str) -> Callable[[web.Request, bytes], web.StreamResponse]:
    """The upstream. Model `quote.<secret>.<shape>` answers 400 quoting one secret (as it received it when it came
    in a header): `text` raw in a plain-text body, `escaped` JSON-escaped inside a body whose `error` is a string
    (the gateway relays that text as it is), `message` in a proper error object. Model `say.<secret>` completes
    with the secret as its answer. Model `redirect` answers 307 towards `elsewhere`."""

    def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        model = orjson.loads(body)["model"]
        received = {
            "key": request.headers.get("authorization", "").removeprefix("Bearer "),
            "token": request.headers.get("x-upstream-token", ""),
            "cookie": request.headers.get("cookie", "").partition("=")[2].partition(";")[0],
        }
        if model == "redirect":
            return web.Response(status=307, headers={"location": f"{elsewhere}/v1/chat/completions?from=redirect"})
        kind, name, *shape = model.split(".")
        secret = received.get(name) or SECRETS[name]
        if kind == "say":
            completion = {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": secret}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
            return web.Response(body=orjson.dumps(completion), content_type="application/json")
        if shape == ["text"]:
            return web.Response(status=400, text=f"rejected {secret} here", content_type="text/plain")
        if shape == ["escaped"]:
            return web.Response(status=400, text=json.dumps({"error": f"rejected {secret}"}))
        return web.Response(status=400, body=orjson.dumps({"error": {"message": f"rejected {secret} here"}}))

    return answer


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[Loopback, Loopback, Loopback]]:
    """(upstream, the place its redirects point to, the webhook receiver)."""
    with Loopback() as elsewhere, Loopback(quoting_upstream(elsewhere.url)) as upstream, Loopback() as hook:
        yield upstream, elsewhere, hook


@pytest.fixture(scope="module")
def gateway(servers: tuple[Loopback, Loopback, Loopback]) -> Iterator[GatewayProcess]:
    upstream, _, hook = servers
    down = free_port()
    config = f"""
admin_key: {ADMIN_KEY}
dashboard: {{session_secret: "${{SESSION_SECRET}}"}}
routing:
  circuit: {{failures: 1000}}
providers:
  - name: leaky
    kind: openai_compatible
    base_url: {upstream.url}/v1
    api_key: ${{PROVIDER_KEY}}
    headers: {{x-upstream-token: "${{UPSTREAM_TOKEN}}", cookie: "sid=${{COOKIE_VALUE}}; theme=dark"}}
broadcast:
  destinations:
    - {{name: hook, kind: webhook, url: "${{HOOK_URL}}", secret: "${{HOOK_SECRET}}", flush_interval: 0.1}}
    - {{name: gone, kind: webhook, url: "http://127.0.0.1:{down}/hook", max_retries: 0, flush_interval: 0.1,
        timeout: 1}}
    - {{name: lines, kind: file, path: out/records.jsonl, flush_interval: 0.1}}
"""
    env = {
        "PROVIDER_KEY": PROVIDER_KEY,
        "UPSTREAM_TOKEN": UPSTREAM_TOKEN,
        "COOKIE_VALUE": COOKIE_VALUE,
        "HOOK_SECRET": HOOK_SECRET,
        "SESSION_SECRET": SESSION_SECRET,
        "HOOK_URL": f"{hook.url}/hook?token={QUERY_TOKEN_ENCODED}",
    }
    gw = GatewayProcess(config, env=env).wait_ready()
    yield gw
    gw.stop()


class Answer:
    def __init__(self, status: int, headers: dict[str, str], text: str) -> None:
        self.status_code, self.headers, self.text = status, headers, text

    def json(self) -> Any:
        return json.loads(self.text)


def chat(gw: GatewayProcess, model: str, content: str = "hello", stream: bool = False) -> Answer:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    req = urllib.request.Request(
        gw.base_url + "/chat/completions", data=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode())


def test_secrets_quoted_by_an_upstream_never_reach_the_client(gateway: GatewayProcess) -> None:
    for name in SECRETS:
        for shape in ("text", "escaped", "message"):
            r = chat(gateway, f"leaky/quote.{name}.{shape}")
            assert r.status_code == 400, r.text
            assert_no_secret(r.text, f"the error body ({name}, {shape})")
            message = r.json()["error"]["message"]  # still one valid JSON body in OpenAI's format
            assert_no_secret(message, f"the decoded error message ({name}, {shape})")
            assert "[REDACTED]" in message


def test_secrets_in_prompts_and_completions_are_masked_in_exports_the_store_and_the_log(
    gateway: GatewayProcess, servers: tuple[Loopback, Loopback, Loopback]
) -> None:
    hook = servers[2]
    ids = []
    for name, secret in SECRETS.items():
        r = chat(gateway, f"leaky/say.{name}", content=f"remember {secret} please")
        assert r.status_code == 200, r.text
        ids.append(r.headers["x-request-id"])
    stored = wait_stored(gateway.url, ids)
    assert_no_secret(json.dumps(stored, ensure_ascii=False), "/admin/analytics/requests")

    deadline = time.monotonic() + 10
    exported: list[dict] = []
    while time.monotonic() < deadline and len(exported) < len(ids):
        exported = [r for _, _, body in hook.requests for r in orjson.loads(body)["records"]]
        time.sleep(0.05)
    assert {r["request_id"] for r in exported} >= set(ids)
    for _, _, body in hook.requests:
        assert_no_secret(body.decode(), "a webhook export")
        assert_no_secret(json.dumps(orjson.loads(body), ensure_ascii=False), "a decoded webhook export")
    assert any("****" in (r.get("output_text") or "") for r in exported), "masked in place, with the same length"
    assert_no_secret(gateway.log(), "the log")


def test_an_upstream_redirect_is_refused_and_never_carries_the_key_or_the_prompt(
    gateway: GatewayProcess, servers: tuple[Loopback, Loopback, Loopback]
) -> None:
    elsewhere = servers[1]
    for stream in (False, True):
        r = chat(gateway, "leaky/redirect", content="the prompt", stream=stream)
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "redirect" and "HTTP 307" in err["message"] and "redirect" in err["message"]
        assert f"{elsewhere.url}/v1/chat/completions" in err["message"] and "from=redirect" not in err["message"]
    assert elsewhere.requests == [], "nothing, and so no key and no prompt, reached the redirect's target"


def test_the_files_the_gateway_writes_are_its_users_only(gateway: GatewayProcess) -> None:
    r = chat(gateway, "leaky/say.key")
    assert r.status_code == 200
    home = Path(gateway.dir.name)
    spool_dir = home / ".relaycast" / "spool" / "gone"
    output = home / "out" / "records.jsonl"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (list(spool_dir.glob("*.batch")) and output.exists()):
        time.sleep(0.05)

    def mode(p: Path) -> int:
        return stat.S_IMODE(os.stat(p).st_mode)

    db = home / "relaycast.db"
    for f in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), output, *spool_dir.glob("*.batch")):
        assert mode(f) == 0o600, f"{f.name} is {oct(mode(f))}"
    assert list(spool_dir.glob("*.batch")), "the unreachable destination's batch was spooled"
    for d in (home / ".relaycast", home / ".relaycast" / "spool", spool_dir, home / "out"):
        assert mode(d) == 0o700, f"{d.name}/ is {oct(mode(d))}"


def test_a_notification_target_that_redirects_is_not_followed() -> None:
    async def main() -> tuple[int, int]:
        target = NotifyTarget(name="ops", kind="webhook", url=f"{first.url}/hook", secret="hmac-secret", max_attempts=2)
        async with aiohttp.ClientSession() as session:
            notifier = Notifier((target,), session, EventLog(Redactor()), Redactor())
            notifier.start()
            notifier.send({"event": "alert", "rule": "r", "scope": None, "message": "spend grew"})
            await notifier.stop(5)
            return notifier.sent["ops"], notifier.failed["ops"]

    with Loopback() as second:
        location = {"location": f"{second.url}/stolen"}
        with Loopback(lambda request, body: web.Response(status=307, headers=location)) as first:
            sent, failed = asyncio.run(main())
            assert len(first.requests) == 1, "a redirect is not retried"
    assert (sent, failed) == (0, 1)
    assert second.requests == []


def test_broadcast_test_never_sends_the_datadog_key_along_a_redirect(tmp_path: Path) -> None:
    with Loopback() as second:
        location = {"location": f"{second.url}/api/v1/validate"}
        with Loopback(lambda request, body: web.Response(status=307, headers=location)) as first:
            config = tmp_path / "relaycast.yaml"
            config.write_text(f"""
providers: [{{name: openai, api_key: sk-unused-000000}}]
broadcast:
  destinations:
    - {{name: datadog, kind: datadog, api_key: dd-key-that-must-stay, api_url: "{first.url}",
        intake_url: "{first.url}"}}
""")
            out = subprocess.run(
                [sys.executable, "-m", "relaycast", "broadcast", "test", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
            )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL datadog" in out.stdout
    assert first.requests and first.requests[0][1]["dd-api-key"] == "dd-key-that-must-stay"
    assert second.requests == [], "the key never followed the redirect"
