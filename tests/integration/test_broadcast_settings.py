"""Broadcast destinations saved through the admin API (what Settings > Broadcast and `relaycast broadcast add` call):
tested before they are saved, sealed at rest, applied without a restart on every replica that shares the store,
read-only when they come from the config file or the environment.

Real parts: two gateway processes sharing one SQLite store, Datadog's own ddapm-test-agent as the destination, a
local server answering 403 as a Datadog site that refuses the key.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.browser import session_cookie
from tests.capture import CaptureServer
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.store_helpers import admin_call

DD_KEY = "dd0123456789abcdef0123456789abcd"  # the shape of a Datadog API key: what a leak would look like
SEAL_KEY = "a-shared-sealing-key-for-these-replicas-0123456789"


def call(gw: GatewayProcess, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    return admin_call(gw.url, method, path, body)


def listing(gw: GatewayProcess) -> dict[str, dict]:
    status, body = call(gw, "GET", "/admin/broadcast/destinations")
    assert status == 200, body
    return {d["name"]: d for d in body["destinations"]}


def wait_for(predicate, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def refusing() -> Iterator[CaptureServer]:
    """A Datadog site that refuses every key (`/api/v1/validate` answers 403)."""
    server = CaptureServer().start()
    server.script.default = 403
    server.script.body = b'{"errors": ["Forbidden"]}'
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(fake: Fake, tmp_path_factory) -> Iterator[tuple[GatewayProcess, GatewayProcess, Path]]:
    """Two gateways sharing one store; a file destination in the config (read-only in the API)."""
    shared = tmp_path_factory.mktemp("shared")
    extra = f"""
store:
  path: {shared}/relaycast.db
broadcast:
  spool_dir: {shared}/spool
  destinations:
    - name: archive
      kind: file
      path: {shared}/records.jsonl
"""
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, "RELAYCAST_SECRET_KEY": SEAL_KEY}
    a = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
    b = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
    yield a, b, shared
    a.stop()
    b.stop()


def test_kinds_describe_each_form():
    from relaycast.telemetry.forms import catalog

    kinds = {k["kind"]: k for k in catalog()}
    dd = {f["name"]: f for f in kinds["datadog"]["fields"]}
    assert dd["site"]["default"] == "https://api.us5.datadoghq.com" and dd["api_key"]["secret"]
    assert dd["ml_app"]["required"] and not dd["ml_app"]["secret"]
    lf = {f["name"]: f for f in kinds["langfuse"]["fields"]}
    assert lf["secret_key"]["secret"] and not lf["public_key"]["secret"]


def test_a_failing_test_saves_nothing_and_says_what_failed(replicas, refusing):
    a, _, _ = replicas
    form = {
        "kind": "datadog",
        "settings": {"api_key": DD_KEY, "ml_app": "checkout", "api_url": refusing.url},
    }
    status, body = call(a, "PUT", "/admin/broadcast/destinations/dd-refused", form)
    assert status == 422 and body["error"]["code"] == "test_failed", body
    assert "invalid API key" in body["error"]["message"] and "403" in body["error"]["message"]
    assert DD_KEY not in json.dumps(body)
    assert refusing.requests and refusing.requests[-1].headers["dd-api-key"] == DD_KEY  # it did ask the site
    assert "dd-refused" not in listing(a)

    # Test Connection alone: the same answer, nothing saved either.
    status, body = call(a, "POST", "/admin/broadcast/try", {**form, "name": "dd-refused"})
    assert status == 200 and not body["ok"] and "invalid API key" in body["message"]
    assert "dd-refused" not in listing(a)

    # Bad values are refused before any test, with the field named.
    status, body = call(
        a,
        "PUT",
        "/admin/broadcast/destinations/dd-bad",
        {"kind": "datadog", "settings": {"api_key": DD_KEY, "site": "mars"}},
    )
    assert status == 400 and body["error"]["param"] == "site" and "'mars'" in body["error"]["message"]
    status, body = call(a, "PUT", "/admin/broadcast/destinations/x", {"kind": "datadgo", "settings": {}})
    assert status == 400 and body["error"]["param"] == "kind"
    status, body = call(
        a, "PUT", "/admin/broadcast/destinations/archive", {"kind": "file", "settings": {"path": "/tmp/x"}}
    )
    assert status == 400 and "config file" in body["error"]["message"]

    # save_anyway keeps a destination whose backend is down on purpose; it is then deleted.
    status, body = call(a, "PUT", "/admin/broadcast/destinations/dd-refused", {**form, "save_anyway": True})
    assert status == 200 and body["created"] and not body["test"]["ok"]
    assert listing(a)["dd-refused"]["last_test"]["ok"] is False
    status, body = call(a, "DELETE", "/admin/broadcast/destinations/dd-refused")
    assert status == 200 and "dd-refused" not in listing(a)
    assert call(a, "DELETE", "/admin/broadcast/destinations/dd-refused")[0] == 404


def test_saved_destination_runs_on_every_replica_without_restart(replicas, agent):
    a, b, shared = replicas
    form = {"kind": "datadog", "settings": {"agent_url": agent.url, "ml_app": "from-the-api", "api_key": DD_KEY}}
    status, body = call(a, "PUT", "/admin/broadcast/destinations/datadog-ui", form)
    assert status == 200 and body["test"]["ok"], body
    assert "agent found" in body["test"]["message"]

    # The other replica runs it too, within seconds, without a restart.
    entry = wait_for(
        lambda: (listing(b).get("datadog-ui") or {}).get("status") and listing(b)["datadog-ui"], "replica b"
    )
    assert entry["source"] == "dashboard" and entry["editable"] and entry["secrets_set"] == ["api_key"]
    assert "api_key" not in entry["settings"] and DD_KEY not in json.dumps(entry)
    assert listing(a)["archive"]["source"] == "config file" and not listing(a)["archive"]["editable"]

    # Traffic through replica b reaches the test agent under the saved ml_app.
    client = openai.OpenAI(base_url=b.base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    rid = raw.headers["x-relaycast-request-id"]

    def arrived() -> bool:
        return any(
            s["meta"]["metadata"].get("request_id") == rid and "ml_app:from-the-api" in s.get("tags", [])
            for s in agent.spans()
        )

    wait_for(arrived, "the span through the saved destination")
    wait_for(lambda: listing(b)["datadog-ui"]["status"]["sent"] >= 1, "the sent count")

    # The key is sealed at rest: not in the store's file, and the key file is the owner's only.
    db = b"".join(p.read_bytes() for p in shared.glob("relaycast.db*"))
    assert b"from-the-api" in db and DD_KEY.encode() not in db
    assert DD_KEY not in a.log() and DD_KEY not in b.log()

    # An edit that leaves the secret out keeps it; the Broadcast toggle turns saved destinations off everywhere.
    form["settings"] = {"agent_url": agent.url, "ml_app": "renamed"}
    assert call(a, "PUT", "/admin/broadcast/destinations/datadog-ui", form)[0] == 200
    assert listing(a)["datadog-ui"]["secrets_set"] == ["api_key"]
    assert call(a, "PUT", "/admin/broadcast/enabled", {"enabled": False})[0] == 200
    wait_for(lambda: listing(b)["datadog-ui"]["status"] is None, "off on replica b")
    assert listing(b)["archive"]["status"] is not None  # the config's destination is not the toggle's
    assert call(a, "PUT", "/admin/broadcast/enabled", {"enabled": True})[0] == 200
    wait_for(lambda: listing(b)["datadog-ui"]["status"] is not None, "on again on replica b")


def test_a_key_file_is_made_private_when_no_key_is_given(fake: Fake):
    gw = GatewayProcess(standard_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        form = {"kind": "file", "settings": {"path": str(Path(gw.dir.name) / "out.jsonl")}}
        status, body = call(gw, "PUT", "/admin/broadcast/destinations/local-file", form)
        assert status == 200 and body["test"]["ok"], body
        key_file = Path(gw.dir.name) / ".relaycast" / "secret.key"
        # A destination without secrets seals nothing; one with a webhook secret makes the key file.
        status, body = call(
            gw,
            "PUT",
            "/admin/broadcast/destinations/hook",
            {
                "kind": "webhook",
                "settings": {"url": fake.url + "/hook", "secret": "whsec-0123456789abcdef"},
                "save_anyway": True,
            },
        )
        assert status == 200, body
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert "whsec-0123456789abcdef" not in json.dumps(listing(gw))
    finally:
        gw.stop()


def test_cli_adds_lists_and_removes(replicas, agent):
    a, _, _ = replicas
    env = {**os.environ, "RELAYCAST_URL": a.url, "RELAYCAST_ADMIN_KEY": ADMIN_KEY, "MY_DD_KEY": DD_KEY}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relaycast", "broadcast", *args], capture_output=True, text=True, env=env, timeout=60
        )

    added = cli(
        "add", "dd-cli", "--kind", "datadog", "--set", f"agent_url={agent.url}", "--set", "ml_app=cli",
        "--set-env", "api_key=MY_DD_KEY",
    )  # fmt: skip
    assert added.returncode == 0 and "Test Connection OK" in added.stdout, added.stderr
    shown = cli("list")
    assert shown.returncode == 0 and "dd-cli" in shown.stdout and "dashboard" in shown.stdout
    assert "archive" in shown.stdout and "config file" in shown.stdout and DD_KEY not in shown.stdout
    assert cli("remove", "dd-cli").returncode == 0
    assert "dd-cli" not in listing(a)
    missing = cli("remove", "dd-cli")
    assert missing.returncode == 1 and "404" in missing.stderr


def test_saved_secrets_never_leave_for_a_new_address(replicas, refusing):
    a, _, shared = replicas
    hook = "https://user:pw-0123456789abcdef@hooks.example.com/in?token=tok-0123456789abcdef"
    form = {"kind": "webhook", "settings": {"url": hook, "secret": "whsec-0123456789abcdef"}, "save_anyway": True}
    status, body = call(a, "PUT", "/admin/broadcast/destinations/hook", {**form, "create": True})
    assert status == 200, body
    entry = listing(a)["hook"]
    assert entry["settings"]["url"] == "https://user:****@hooks.example.com/in?token=****"
    assert entry["secrets_set"] == ["secret"]
    db = b"".join(p.read_bytes() for p in shared.glob("relaycast.db*"))
    assert b"pw-0123456789abcdef" not in db and b"tok-0123456789abcdef" not in db
    # Adding again under the same name is refused (the page's Add); editing is a PUT without `create`.
    status, body = call(a, "PUT", "/admin/broadcast/destinations/hook", {**form, "create": True})
    assert status == 409 and body["error"]["code"] == "conflict"
    # The saved signing secret does not go to a new URL unless typed again: nothing reaches that server.
    before = len(refusing.requests)
    moved = {"kind": "webhook", "name": "hook", "settings": {"url": refusing.url + "/steal"}}
    status, body = call(a, "POST", "/admin/broadcast/try", moved)
    assert status == 400 and body["error"]["param"] == "secret" and "typed again" in body["error"]["message"]
    assert len(refusing.requests) == before
    # The masked URL sent back means the saved one.
    status, body = call(
        a,
        "PUT",
        "/admin/broadcast/destinations/hook",
        {"kind": "webhook", "settings": {"url": entry["settings"]["url"]}, "save_anyway": True},
    )
    assert status == 200 and listing(a)["hook"]["secrets_set"] == ["secret"]
    assert call(a, "DELETE", "/admin/broadcast/destinations/hook")[0] == 200
    # A URL no parser can read is a 400, not a crash.
    status, body = call(a, "POST", "/admin/broadcast/try", {"kind": "opik", "settings": {"url": "http://[::1"}})
    assert status == 400, body


def test_a_dashboard_session_changes_things_only_from_the_dashboard(replicas):
    import http.client

    a, _, _ = replicas
    cookie = session_cookie(a)

    def post(path: str, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        conn.request("POST", path, body=b"", headers={"cookie": cookie, **headers})
        status = conn.getresponse().status
        conn.close()
        return status

    # What an HTML form on another page of the same site sends: the cookie, no body, no dashboard header.
    assert post("/admin/monitors/evaluate", {"content-type": "application/x-www-form-urlencoded"}) == 401
    assert post("/admin/broadcast/test", {}) == 401
    # The dashboard's own script sends its header; reads need none.
    assert post("/admin/broadcast/test", {"x-relaycast-dashboard": "1"}) in (200, 404)
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    conn.request("GET", "/admin/broadcast/destinations", headers={"cookie": cookie})
    assert conn.getresponse().status == 200
