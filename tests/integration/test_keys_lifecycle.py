"""Virtual keys end to end against a real gateway: create, revoke, delete (the API and `relaycast keys delete`), and
what happens when the last live key goes: the gateway keeps refusing requests without a key, restarted too."""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from pathlib import Path

import openai
import orjson
import pytest

from relaycast.cli.admin import keys_command
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.store_helpers import admin_call

MSGS = [{"role": "user", "content": "hi"}]


def _call(gw: GatewayProcess, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    return admin_call(gw.url, method, path, body)


def _chat(gw: GatewayProcess, key: str | None) -> int:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        gw.base_url + "/chat/completions",
        data=orjson.dumps({"model": "fakeai/gpt-4o-mini", "messages": MSGS}),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _gateway(fake: Fake, store: Path) -> GatewayProcess:
    return GatewayProcess(
        standard_config(fake.url, f"store: {{path: '{store}'}}\n"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    ).wait_ready()


def _cli(gw: GatewayProcess, cmd: str, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    args = argparse.Namespace(keys_command=cmd, name=name, url=gw.url, admin_key=ADMIN_KEY, json=False)
    rc = keys_command(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_deleting_the_last_key_keeps_the_gateway_closed_even_after_a_restart(fake: Fake, tmp_path, capsys) -> None:
    store = tmp_path / "keys.db"
    gw = _gateway(fake, store)
    try:
        assert _chat(gw, None) == 200  # no key anywhere: open (on loopback)
        status, made = _call(gw, "POST", "/admin/keys", {"name": "team-a", "rpm": 100})
        assert status == 201
        secret = made["secret"]
        status, other = _call(gw, "POST", "/admin/keys", {"name": "team-b"})
        assert status == 201
        assert _chat(gw, None) == 401 and _chat(gw, secret) == 200

        # Revoke one key of two: one live key remains, no note.
        status, body = _call(gw, "POST", "/admin/keys/team-b/revoke")
        assert status == 200 and body["access"] == {"required": True, "because": "the store has keys", "live_keys": 1}
        assert "note" not in body
        assert _chat(gw, other["secret"]) == 401

        # Delete the last live key through the CLI: it stops working, and requests without a key are still refused.
        rc, out, _ = _cli(gw, "delete", "team-a", capsys)
        assert rc == 0, out
        assert "deleted team-a" in out and "No live keys remain: requests without a key are refused" in out
        assert _chat(gw, secret) == 401 and _chat(gw, None) == 401
        status, listed = _call(gw, "GET", "/admin/keys")
        assert [k["name"] for k in listed["keys"]] == ["team-b"] and listed["keys"][0]["state"] == "revoked"

        # The revoked one goes too: no row is left, and the gateway still refuses requests without a key.
        status, body = _call(gw, "DELETE", "/admin/keys/team-b")
        assert status == 200 and body["deleted"] is True and body["access"]["live_keys"] == 0
        assert body["note"] == (
            "No live keys remain: requests without a key are refused "
            "(keys were issued in this store, and all of them were deleted)."
        )
        assert _chat(gw, None) == 401
        status, listed = _call(gw, "GET", "/admin/keys")
        assert listed["keys"] == [] and listed["access"]["required"] is True

        # An unknown name: 404 in OpenAI's error format; the CLI says so and fails.
        status, err = _call(gw, "DELETE", "/admin/keys/team-a")
        assert status == 404 and err["error"]["message"] == "No key named 'team-a'."
        rc, _, stderr = _cli(gw, "delete", "nobody", capsys)
        assert rc == 1 and "HTTP 404" in stderr and "No key named 'nobody'" in stderr

        # A body past the keys API's 64 KiB: 413 in OpenAI's error format, not an internal error.
        status, err = _call(gw, "POST", "/admin/keys", {"name": "team-d", "feature": "x" * 70_000})
        assert status == 413 and err["error"]["message"] == "Request body is larger than the limit of 65536 bytes."
    finally:
        gw.stop()

    # A restarted gateway on the same store: still closed; a new key opens it to that key only.
    gw = _gateway(fake, store)
    try:
        assert _chat(gw, None) == 401
        status, made = _call(gw, "POST", "/admin/keys", {"name": "team-c"})
        assert status == 201 and _chat(gw, made["secret"]) == 200 and _chat(gw, None) == 401
        assert secret not in gw.log() and made["secret"] not in gw.log()
    finally:
        gw.stop()


def test_revoking_the_only_key_says_requests_without_a_key_are_still_refused(fake: Fake, tmp_path, capsys) -> None:
    gw = _gateway(fake, tmp_path / "one.db")
    try:
        status, made = _call(gw, "POST", "/admin/keys", {"name": "solo"})
        assert status == 201
        rc, out, _ = _cli(gw, "revoke", "solo", capsys)
        assert rc == 0 and "revoked solo" in out
        assert "No live keys remain: requests without a key are refused (revoked or expired keys remain" in out
        assert _chat(gw, None) == 401 and _chat(gw, made["secret"]) == 401
        client = openai.OpenAI(base_url=gw.base_url, api_key=made["secret"], max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="has been revoked"):
            client.models.list()
    finally:
        gw.stop()


def test_keys_required_in_the_config_decides_what_the_last_key_leaves(fake: Fake, tmp_path) -> None:
    # keys_required: false: the gateway reopens once its last key is deleted, and the answer says so.
    gw = GatewayProcess(
        standard_config(fake.url, f"store: {{path: '{tmp_path / 'open.db'}'}}\nkeys_required: false\n"),
        env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    ).wait_ready()
    try:
        status, body = _call(gw, "POST", "/admin/keys", {"name": "only"})
        assert status == 201
        assert _chat(gw, None) == 401 and _chat(gw, body["secret"]) == 200
        status, body = _call(gw, "DELETE", "/admin/keys/only")
        assert status == 200 and "open again" in body["note"]
        assert _chat(gw, None) == 200
    finally:
        gw.stop()
    # keys_required: true: refused before any key exists.
    gw = GatewayProcess(
        standard_config(fake.url, f"store: {{path: '{tmp_path / 'closed.db'}'}}\nkeys_required: true\n"),
        env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY},
    ).wait_ready()
    try:
        assert _chat(gw, None) == 401
        status, body = _call(gw, "GET", "/admin/keys")
        assert status == 200 and "keys_required" in body["access"]["because"]
    finally:
        gw.stop()


def test_a_store_that_cannot_be_read_at_start_does_not_open_the_gateway(fake: Fake) -> None:
    from relaycast.server.runner import free_port

    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/relaycast"
    store = f"store: {{url: '{dead}', connect_timeout_s: 2, read_timeout_s: 2}}\n"
    gw = GatewayProcess(standard_config(fake.url, store), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready(60)
    try:
        # Keys may exist in that store: a request without one is not served, and says why.
        req = urllib.request.Request(
            gw.base_url + "/chat/completions",
            data=orjson.dumps({"model": "fakeai/gpt-4o-mini", "messages": MSGS}),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 503 and orjson.loads(e.value.read())["error"]["code"] == "store_unavailable"
    finally:
        gw.stop()
    # Unless the config says a keyless gateway is fine.
    gw = GatewayProcess(
        standard_config(fake.url, store + "keys_required: false\n"), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    ).wait_ready(60)
    try:
        assert _chat(gw, None) == 200
    finally:
        gw.stop()


def test_a_key_deleted_on_one_replica_stops_working_on_the_other(fake: Fake, tmp_path) -> None:
    import time

    a, b = _gateway(fake, tmp_path / "shared.db"), _gateway(fake, tmp_path / "shared.db")
    try:
        status, body = _call(a, "POST", "/admin/keys", {"name": "shared"})
        assert status == 201
        secret = body["secret"]

        def until(predicate) -> None:  # type: ignore[no-untyped-def]
            deadline = time.monotonic() + 5
            while not predicate():
                assert time.monotonic() < deadline, "replica b did not reload its keys"
                time.sleep(0.1)

        until(lambda: _chat(b, secret) == 200)
        assert _call(a, "DELETE", "/admin/keys/shared")[0] == 200
        until(lambda: _chat(b, secret) == 401)
        assert _chat(b, None) == 401  # and it stays closed
    finally:
        a.stop()
        b.stop()
