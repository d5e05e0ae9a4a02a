"""Every API request yields exactly one record, refused ones included, as an operator finds them: by the
`x-relaycast-request-id` the client got, in the store (through the analytics API) and in a file destination.

A refusal's record says what was read before the refusal (model, stream flag, attribution, the client's
x-request-id), has no attempts and costs nothing, and stays small however large the request. Admin, dashboard,
`/metrics`, `/healthz` and `/openapi.json` requests yield no record. A flood of invalid requests yields one record
each and leaves the gateway well.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.store_helpers import admin_get, wait_stored

KEY = "rc-refused-key-0001"  # may use every model
NARROW = "rc-refused-narrow-01"  # may use fakeai/gpt-4o-mini only
LIMITED = "rc-refused-limited-1"  # one request a minute
MAX_BODY = 64 * 1024
MSGS = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"


class Gw:
    def __init__(self, proc: GatewayProcess, lines: Path, sampled: Path) -> None:
        self.proc = proc
        self.lines = lines  # every record
        self.sampled = sampled  # a destination that keeps half the sessions

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, key: str | None = KEY
    ) -> tuple[int, dict[str, str], bytes]:
        """One request as given (a dict body is sent as JSON); http.client sets the Host to 127.0.0.1:port."""
        h = {"Content-Type": "application/json"} if body is not None else {}
        if key:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        raw = orjson.dumps(body) if isinstance(body, dict) else body
        conn = http.client.HTTPConnection("127.0.0.1", self.proc.port, timeout=15)
        try:
            conn.request(method, path, body=raw, headers=h)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def refused(self, status: int, method: str, path: str, body: Any = None, **kw: Any) -> str:
        """Send a request that must get `status`; its gateway request id."""
        got, headers, raw = self.call(method, path, body, **kw)
        assert got == status, raw
        return headers["x-relaycast-request-id"]


def _file_records(path: Path, ids: set[str], timeout: float = 15.0) -> dict[str, list[dict[str, Any]]]:
    """Every line of the file destination for these request ids, once each id has at least one."""
    deadline = time.monotonic() + timeout
    while True:
        found: dict[str, list[dict[str, Any]]] = {}
        if path.exists():
            for line in path.read_bytes().splitlines():
                doc = orjson.loads(line)
                if doc["request_id"] in ids:
                    found.setdefault(doc["request_id"], []).append(doc)
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _stored_ids(url: str) -> Counter[str]:
    """How many stored rows each request id has, over every page of the request explorer."""
    counts: Counter[str] = Counter()
    before = ""
    while True:
        status, page = admin_get(url, f"/admin/analytics/requests?since=1h&limit=1000{before}")
        assert status == 200, page
        counts.update(r["request_id"] for r in page["requests"])
        if not page["next_before"]:
            return counts
        before = f"&before={page['next_before']}"


def _one_record(gw: Gw, rid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The request's record in the store and in the file destination, each there exactly once."""
    stored = wait_stored(gw.proc.url, [rid])[rid]
    lines = _file_records(gw.lines, {rid})
    assert len(lines.get(rid, [])) == 1, f"{rid}: {len(lines.get(rid, []))} lines in the file destination"
    assert _stored_ids(gw.proc.url)[rid] == 1
    return stored, lines[rid][0]


@pytest.fixture(scope="module")
def gw(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    out = tmp_path_factory.mktemp("refused")
    lines, sampled = out / "records.jsonl", out / "sampled.jsonl"
    extra = f"""
server: {{max_body_bytes: {MAX_BODY}}}
store: {{path: {out}/requests.db}}
keys:
  - {{name: main, secret: {KEY}}}
  - {{name: narrow, secret: {NARROW}, models: [fakeai/gpt-4o-mini]}}
  - {{name: limited, secret: {LIMITED}, rpm: 1}}
broadcast:
  destinations:
    - {{name: lines, kind: file, path: "{lines}", flush_interval: 0.1}}
    - {{name: half, kind: file, path: "{sampled}", flush_interval: 0.1, sample_rate: 0.5}}
"""
    proc = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        yield Gw(proc, lines, sampled)
    finally:
        proc.stop()


ATTRIBUTION = {"x-relaycast-feature": "search", "x-relaycast-tags": "team=core", "x-request-id": "client-42"}


def _assert_unserved(stored: dict[str, Any], line: dict[str, Any], status: int, error_class: str, endpoint: str):
    """What every refusal's record says: the answer, the endpoint, no attempts, no cost, no prompt."""
    req = stored["request"]
    assert (req["status"], req["error_class"], req["endpoint"]) == (status, error_class, endpoint)
    assert req["attempts"] == 0 and stored["attempts"] == []
    assert req["cost_usd"] == "0" and req["prompt_tokens"] == 0
    assert req["input_messages"] is None and req["output_text"] is None
    assert (line["status_code"], line["error_class"], line["endpoint"]) == (status, error_class, endpoint)
    assert line["attempts"] == [] and line["cost_usd"] == "0" and line["input_messages"] == []


# --- each refusal class, found where an operator looks ---------------------------------------------------


def test_an_invalid_body_keeps_what_was_parsed_before_the_refusal(gw: Gw, fake: Fake) -> None:
    before = len(fake.requests())
    body = {"model": "fakeai/gpt-4o-mini", "stream": True, "user": "alice", "messages": "not a list"}
    rid = gw.refused(400, "POST", CHAT, body, headers=ATTRIBUTION)
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 400, "invalid_request", "chat.completions")
    req = stored["request"]
    assert (req["model_requested"], req["stream"], req["user"], req["feature"], req["key"]) == (
        "fakeai/gpt-4o-mini",
        True,
        "alice",
        "search",
        "main",
    )
    assert req["tags"] == {"team": "core"} and "'messages'" in req["error_message"]
    assert line["client_request_id"] == "client-42" and line["attribution"]["key_name"] == "main"
    assert len(fake.requests()) == before, "no provider saw it"


def test_a_body_that_is_not_json_keeps_the_header_attribution(gw: Gw) -> None:
    rid = gw.refused(400, "POST", "/v1/embeddings", b"{not json", headers=ATTRIBUTION)
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 400, "invalid_request", "embeddings")
    assert (stored["request"]["model_requested"], stored["request"]["feature"]) == ("", "search")


def test_an_unknown_key_is_recorded_without_a_key_name(gw: Gw) -> None:
    body = {"model": "fakeai/gpt-4o-mini", "messages": MSGS}
    rid = gw.refused(401, "POST", CHAT, body, key="rc-no-such-key-123", headers=ATTRIBUTION)
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 401, "unauthorized", "chat.completions")
    assert stored["request"]["key"] is None and stored["request"]["feature"] == "search"
    assert stored["request"]["model_requested"] == "", "the body of an unauthenticated request is never read"
    assert line["client_request_id"] == "client-42"


def test_a_model_the_key_may_not_use_names_the_key_and_the_model(gw: Gw) -> None:
    rid = gw.refused(403, "POST", CHAT, {"model": "fakeai/gpt-4o", "messages": MSGS, "user": "bob"}, key=NARROW)
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 403, "forbidden", "chat.completions")
    req = stored["request"]
    assert (req["model_requested"], req["key"], req["user"]) == ("fakeai/gpt-4o", "narrow", "bob")


@pytest.mark.parametrize(
    "headers",
    [{"Host": "attacker.example"}, {"Origin": "http://attacker.example"}],
    ids=["host", "origin"],
)
def test_a_foreign_host_or_origin_is_recorded(gw: Gw, headers: dict[str, str]) -> None:
    rid = gw.refused(403, "POST", CHAT, {"model": "fakeai/gpt-4o-mini", "messages": MSGS}, headers=headers)
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 403, "forbidden", "chat.completions")
    assert stored["request"]["key"] == "main"


def test_an_unknown_model_is_recorded_with_its_name(gw: Gw) -> None:
    rid = gw.refused(404, "POST", "/v1/embeddings", {"model": "nosuch/model", "input": "x"})
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 404, "model_not_found", "embeddings")
    assert stored["request"]["model_requested"] == "nosuch/model"


def test_an_unknown_api_path_and_a_wrong_method_are_recorded(gw: Gw) -> None:
    unknown = gw.refused(404, "POST", "/v1/audio/speech", {"model": "x", "input": "hi"})
    wrong = gw.refused(405, "GET", CHAT)
    stored, line = _one_record(gw, unknown)
    _assert_unserved(stored, line, 404, "not_found", "unknown")
    assert "/v1/audio/speech" in stored["request"]["error_message"]
    stored, line = _one_record(gw, wrong)
    _assert_unserved(stored, line, 405, "method_not_allowed", "chat.completions")


def test_a_body_too_large_is_recorded_without_any_of_it(gw: Gw) -> None:
    huge = "x" * (MAX_BODY * 4)
    body = {"model": "fakeai/gpt-4o-mini", "messages": [{"role": "user", "content": huge}]}
    # Declared length, and a chunked body that only turns out too large while it is read.
    declared = gw.refused(413, "POST", CHAT, body, headers=ATTRIBUTION)
    conn = http.client.HTTPConnection("127.0.0.1", gw.proc.port, timeout=15)
    try:
        raw = orjson.dumps(body)
        chunks = (raw[i : i + 1024] for i in range(0, len(raw), 1024))
        h = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
        conn.request("POST", CHAT, body=chunks, headers=h, encode_chunked=True)
        r = conn.getresponse()
        assert r.status == 413
        chunked = r.getheader("x-relaycast-request-id")
        r.read()
    finally:
        conn.close()
    for rid in (declared, chunked):
        stored, line = _one_record(gw, rid)
        _assert_unserved(stored, line, 413, "payload_too_large", "chat.completions")
        assert huge[:100] not in orjson.dumps(line).decode()
        assert stored["request"]["key"] == "main"


def test_a_body_that_is_not_declared_json_is_recorded(gw: Gw) -> None:
    rid = gw.refused(415, "POST", CHAT, b'{"model": "fakeai/gpt-4o-mini"}', headers={"Content-Type": "text/plain"})
    stored, line = _one_record(gw, rid)
    _assert_unserved(stored, line, 415, "unsupported_media_type", "chat.completions")


def test_a_valid_request_yields_one_record_and_the_limited_one_after_it_is_recorded(gw: Gw) -> None:
    body = {"model": "fakeai/gpt-4o-mini@tokens=2", "messages": MSGS, "max_tokens": 5, "session_id": "s-limited"}
    status, headers, raw = gw.call("POST", CHAT, body, key=LIMITED)
    assert status == 200, raw
    served = headers["x-relaycast-request-id"]
    limited = gw.refused(429, "POST", CHAT, body, key=LIMITED)

    stored, line = _one_record(gw, served)
    assert stored["request"]["status"] == 200 and stored["request"]["attempts"] == 1
    assert line["input_messages"] == MSGS and line["attempts"][0]["target"] == "fakeai/gpt-4o-mini@tokens=2"

    stored, line = _one_record(gw, limited)
    _assert_unserved(stored, line, 429, "rate_limit_exceeded", "chat.completions")
    req = stored["request"]
    assert (req["key"], req["model_requested"], req["session_id"]) == (
        "limited",
        "fakeai/gpt-4o-mini@tokens=2",
        "s-limited",
    )
    assert req["params"] == {"max_tokens": 5}


def test_a_refusal_keeps_a_bounded_part_of_what_the_client_sent(gw: Gw) -> None:
    trace = {f"k{i}": "v" * 300 for i in range(150)}
    body = {"model": "m" * 300, "user": "u" * 5000, "trace": trace, "messages": [{"role": "nobody", "content": "x"}]}
    rid = gw.refused(400, "POST", CHAT, body)
    stored, line = _one_record(gw, rid)
    assert len(orjson.dumps(line)) < 16 * 1024, "a few KiB at most"
    assert line["model_requested"] == "", "an invalid model name is not kept"
    assert len(line["attribution"]["user"]) == 256
    assert len(line["attribution"]["trace"]) == 32 and all(len(v) == 200 for v in line["attribution"]["trace"].values())
    assert len(stored["request"]["user"]) == 256


# --- what yields no record, and sampling ---------------------------------------------------------------


def test_admin_dashboard_metrics_healthz_and_openapi_yield_no_record(gw: Gw) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    quiet = [
        gw.call("GET", path, headers=admin, key=None)[1]["x-relaycast-request-id"]
        for path in ("/admin/stats", "/admin/analytics/requests", "/metrics", "/healthz", "/openapi.json", "/dashboard")
    ]
    quiet.append(gw.call("GET", "/admin/stats", key=None)[1]["x-relaycast-request-id"])  # a refused admin call too
    # A later API request's record is written after theirs would have been.
    status, headers, _ = gw.call("GET", "/v1/models")
    assert status == 200
    listed = headers["x-relaycast-request-id"]
    stored, line = _one_record(gw, listed)
    assert (line["endpoint"], line["status_code"], line["attribution"]["key_name"]) == ("models", 200, "main")
    assert not set(_file_records(gw.lines, set(quiet), timeout=0)) and not set(quiet) & set(_stored_ids(gw.proc.url))


def test_refusals_are_sampled_with_their_session(gw: Gw) -> None:
    sessions = [f"sess-{i}" for i in range(12)]
    ids: dict[str, list[str]] = {}
    for s in sessions:
        ok = gw.call("POST", CHAT, {"model": "fakeai/gpt-4o-mini", "messages": MSGS, "session_id": s})
        assert ok[0] == 200
        bad = gw.refused(400, "POST", CHAT, {"model": "fakeai/gpt-4o-mini", "messages": [], "session_id": s})
        ids[s] = [ok[1]["x-relaycast-request-id"], bad]
    every = {rid for pair in ids.values() for rid in pair}
    assert set(_file_records(gw.lines, every)) == every  # the unsampled destination has all, so both have flushed
    kept = set(_file_records(gw.sampled, every, timeout=1))
    together = [set(pair) <= kept or not set(pair) & kept for pair in ids.values()]
    assert all(together), "a session's refused and served requests are kept or dropped together"
    assert 0 < len(kept) < len(every), "half the sessions, not all or none"


# --- a flood ---------------------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_flood_of_invalid_requests_yields_one_record_each_and_the_gateway_stays_well(gw: Gw) -> None:
    kinds = [
        ("POST", CHAT, b"{not json", {"Authorization": f"Bearer {KEY}"}, 400),
        ("POST", CHAT, orjson.dumps({"model": "x", "messages": MSGS}), {"Authorization": "Bearer rc-wrong-key"}, 401),
        ("POST", "/v1/no/such/path", b"{}", {"Authorization": f"Bearer {KEY}"}, 404),
        ("POST", CHAT, b"x" * (MAX_BODY + 1), {"Authorization": f"Bearer {KEY}"}, 413),
    ]
    worker = gw.proc.worker_pid()  # the serving process, not the supervisor
    rss_before = _rss_kib(worker)
    ids: list[str] = []
    wrong: list[tuple[int, int]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.proc.port, timeout=15)
        try:
            for i in range(250):
                method, path, body, headers, expect = kinds[(n + i) % len(kinds)]
                conn.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
                r = conn.getresponse()
                r.read()
                with lock:
                    ids.append(r.getheader("x-relaycast-request-id") or "")
                    if r.status != expect:
                        wrong.append((r.status, expect))
                if r.getheader("connection") == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", gw.proc.port, timeout=15)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "the flood was answered"
    assert not wrong and len(set(ids)) == 1000

    status, _, body = gw.call("GET", "/healthz", key=None)
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})

    lines = _file_records(gw.lines, set(ids), timeout=20)
    assert len(lines) == 1000 and all(len(v) == 1 for v in lines.values())
    assert Counter(d[0]["status_code"] for d in lines.values()) == {400: 250, 401: 250, 404: 250, 413: 250}
    deadline = time.monotonic() + 20
    while True:
        stored = _stored_ids(gw.proc.url)
        if all(r in stored for r in ids) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sum(1 for r in ids if stored[r] == 1) == 1000
    grown_mib = (_rss_kib(worker) - rss_before) / 1024
    assert grown_mib < 50, f"the gateway grew by {grown_mib:.0f} MiB"
