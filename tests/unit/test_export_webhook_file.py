"""The webhook and file exporters and the JSON record they share: what the JSON holds, what the webhook sends (to a
capture server on 127.0.0.1 through a real aiohttp session) and how it is signed, and how the file rotates."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.telemetry import spans
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import ExportError
from relaycast.telemetry.exporters.file import FileExporter
from relaycast.telemetry.exporters.jsonrecord import SCHEMA, record_json, rfc3339
from relaycast.telemetry.exporters.webhook import WebhookExporter, sign, verify_signature
from relaycast.telemetry.settings import DestinationConfig, FileOptions, WebhookOptions
from tests.capture import AsyncCapture as Capture
from tests.capture import run_with_capture as run

T0 = 1_760_000_000_123_456_789
MS = 1_000_000
SECRET = "whsec-0123456789abcdef-secret"
HEADER_TOKEN = "Bearer header-token-5c7e9a1b"
PROMPT = "Where is my parcel? (prompt-marker-4b1d)"
ANSWER = "It ships tomorrow. (completion-marker-8e2f)"
TAGS = (("team", "payments"), ("env", "staging"))
MESSAGES = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": PROMPT}]})


def served_record(i: int = 0, **changes: Any) -> RequestRecord:
    """A failed attempt (rate limited), then a streamed answer from another provider with cached and reasoning
    tokens and a reported cost."""
    failed = Attempt(
        target="anthropic/claude-3-5-haiku",
        provider="anthropic",
        model="claude-3-5-haiku",
        started_ns=1 * MS,
        duration_ns=40 * MS,
        error_class="rate_limit",
        error_message="429 Too Many Requests",
        upstream_status=429,
    )
    usage = Usage(
        prompt_tokens=120,
        completion_tokens=30,
        cached_tokens=100,
        cache_write_tokens=4,
        reasoning_tokens=12,
        reported_cost_usd="0.00042",
        cache_write_1h_tokens=3,
        web_searches=2,
        service_tier="priority",
    )
    served = Attempt(
        target="openrouter/openai/gpt-4o-mini",
        provider="openrouter",
        model="openai/gpt-4o-mini",
        started_ns=45_500_000,
        duration_ns=800 * MS,
        ttft_ns=150_250_000,
        usage=usage,
        finish_reason="stop",
        upstream_status=200,
        cost_pusd=420_000_000,
        cost_source="reported",
    )
    fields: dict[str, Any] = dict(
        request_id=f"req-{i:04d}",
        endpoint="chat.completions",
        model_requested="fast",
        stream=True,
        started_unix_ns=T0 + i * MS,
        duration_ns=850_250_000,
        status_code=200,
        attribution=Attribution(
            user="user-42",
            session_id="sess-9",
            feature="Checkout",
            app_url="https://shop.example",
            key_name="web-app",
            trace={"trace_name": "checkout", "order_id": 1234},
        ),
        attempts=(failed, served),
        params={"temperature": 0.2, "max_tokens": 64},
        input_messages=MESSAGES,
        output_text=ANSWER,
    )
    fields.update(changes)
    return RequestRecord(**fields)


def failed_record() -> RequestRecord:
    a = Attempt(
        target="openai/gpt-4o",
        provider="openai",
        model="gpt-4o",
        started_ns=0,
        duration_ns=20 * MS,
        error_class="upstream_5xx",
        error_message="upstream answered HTTP 503",
        upstream_status=503,
    )
    return RequestRecord(
        request_id="req-failed",
        endpoint="chat.completions",
        model_requested="all-down",
        stream=False,
        started_unix_ns=T0,
        duration_ns=21 * MS,
        status_code=502,
        attribution=Attribution(),
        attempts=(a,),
        error_class="upstream_5xx",
        error_message="all targets failed",
        input_messages=MESSAGES,
    )


# --- the JSON record ------------------------------------------------------------------------------


def test_record_json_has_every_field_in_a_stable_order():
    doc = orjson.loads(record_json(served_record(), False, TAGS))
    assert list(doc) == [
        "schema",
        "request_id",
        "client_request_id",
        "trace_id",
        "endpoint",
        "model_requested",
        "stream",
        "started_at",
        "started_unix_ns",
        "duration_ms",
        "status_code",
        "error_class",
        "error_message",
        "attribution",
        "params",
        "attempts",
        "cost_usd",
        "cost_source",
        "privacy_mode",
        "input_messages",
        "output_text",
        "output_tool_calls",
        "client_cancelled",
        "tags",
    ]
    assert list(doc["attempts"][1]) == [
        "target",
        "provider",
        "model",
        "started_offset_ms",
        "duration_ms",
        "ttft_ms",
        "finish_reason",
        "error_class",
        "error_message",
        "upstream_status",
        "usage",
        "cost_usd",
        "cost_source",
        "cost_input_usd",
        "cost_note",
        "vendor",
        "response_model",
        "response_id",
    ]
    assert record_json(served_record(), False, TAGS) == record_json(served_record(), False, TAGS)


def test_record_json_values_times_usage_attribution_and_tags():
    rec = served_record()
    doc = orjson.loads(record_json(rec, False, TAGS))
    assert doc["schema"] == SCHEMA == "relaycast.request.v1"
    assert doc["trace_id"] == spans.trace_ids(rec).trace_id
    assert doc["started_at"] == "2025-10-09T08:53:20.123456Z"
    assert doc["started_unix_ns"] == T0 and doc["duration_ms"] == 850.25
    assert doc["attribution"] == {
        "user": "user-42",
        "session_id": "sess-9",
        "feature": "Checkout",
        "app_url": "https://shop.example",
        "key_name": "web-app",
        "trace": {"trace_name": "checkout", "order_id": 1234},
        "tags": {},
    }
    assert doc["params"] == {"temperature": 0.2, "max_tokens": 64}
    failed, served = doc["attempts"]
    assert failed["error_class"] == "rate_limit" and failed["upstream_status"] == 429 and failed["usage"] is None
    assert served["started_offset_ms"] == 45.5 and served["duration_ms"] == 800.0 and served["ttft_ms"] == 150.25
    assert served["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "cached_tokens": 100,
        "cache_write_tokens": 4,
        "reasoning_tokens": 12,
        "cache_write_1h_tokens": 3,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "web_searches": 2,
        "service_tier": "priority",
        "reported_cost_usd": "0.00042",
    }
    assert served["cost_usd"] == "0.00042" and served["cost_source"] == "reported"
    assert failed["cost_usd"] == "0" and failed["cost_source"] == "none"
    assert doc["cost_usd"] == "0.00042" and doc["cost_source"] == "reported"
    assert doc["input_messages"] == [dict(m) for m in MESSAGES] and doc["output_text"] == ANSWER
    assert doc["privacy_mode"] is False and doc["client_cancelled"] is False
    assert doc["tags"] == {"team": "payments", "env": "staging"}


def test_started_at_is_rfc3339_utc_with_microseconds_truncated():
    assert rfc3339(0) == "1970-01-01T00:00:00.000000Z"
    assert rfc3339(1_999) == "1970-01-01T00:00:00.000001Z"
    assert rfc3339(T0) == "2025-10-09T08:53:20.123456Z"


def test_record_json_privacy_mode_omits_prompt_and_completion_and_says_so():
    raw = record_json(served_record(), True, TAGS)
    doc = orjson.loads(raw)
    assert doc["privacy_mode"] is True
    assert "input_messages" not in doc and "output_text" not in doc
    assert PROMPT.encode() not in raw and ANSWER.encode() not in raw
    assert doc["attempts"][1]["usage"]["total_tokens"] == 150  # metadata stays


def test_record_json_of_a_failed_request_carries_its_error_and_null_output():
    doc = orjson.loads(record_json(failed_record(), False, ()))
    assert (doc["status_code"], doc["error_class"], doc["error_message"]) == (502, "upstream_5xx", "all targets failed")
    assert doc["output_text"] is None and doc["tags"] == {}


def test_oversized_record_keeps_its_metadata_and_marks_dropped_content():
    big = served_record(output_text="x" * 50_000)
    raw = record_json(big, False, TAGS, max_bytes=10_000)
    doc = orjson.loads(raw)
    assert len(raw) <= 10_000
    assert doc["output_text"] == spans.DROPPED_IO and doc["collection_errors"] == ["dropped_io"]
    assert doc["request_id"] == big.request_id and doc["attempts"][1]["usage"]["total_tokens"] == 150


def test_odd_client_values_in_metadata_never_lose_the_record():
    rec = served_record(params={"seed": 2**70, "stop": ("a", "b")}, attribution=Attribution(trace={"at": object}))
    doc = orjson.loads(record_json(rec, False, ()))
    assert doc["params"] == {"seed": str(2**70), "stop": ["a", "b"]}
    assert isinstance(doc["attribution"]["trace"]["at"], str)


# --- webhook --------------------------------------------------------------------------------------


def webhook_dest(url: str, secret: str | None = SECRET, headers: tuple[tuple[str, str], ...] = ()) -> DestinationConfig:
    options = WebhookOptions(url=url, secret=secret, headers=headers)
    return DestinationConfig(name="hook", kind="webhook", options=options, tags=TAGS, timeout_s=2.0)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_webhook_posts_the_records_and_their_count_as_json_with_configured_headers():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = build(
            webhook_dest(cap.url + "/hooks/relaycast?token=abc", headers=(("authorization", HEADER_TOKEN),)), session
        )
        assert isinstance(ex, WebhookExporter) and ex.kind == "webhook" and ex.max_age_s is None
        records = [served_record(1), failed_record(), served_record(2)]
        items = [it for r in records for it in ex.encode(r, False, TAGS)]
        await ex.send(items)
        ((path, headers, raw),) = cap.requests
        assert path == "/hooks/relaycast"
        assert headers["content-type"] == "application/json" and headers["user-agent"] == "relaycast"
        assert headers["authorization"] == HEADER_TOKEN
        doc = orjson.loads(raw)
        assert doc["count"] == 3 and [r["request_id"] for r in doc["records"]] == ["req-0001", "req-failed", "req-0002"]
        assert doc["records"][0] == orjson.loads(items[0])
        assert raw == b'{"records":[' + b",".join(items) + b'],"count":3}'  # joined, never re-parsed

    run(body)


def test_signature_verifies_and_fails_with_a_wrong_secret_a_tampered_body_or_a_stale_timestamp():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(cap.url), session)
        await ex.send(ex.encode(served_record(), False, TAGS))
        ((_, headers, raw),) = cap.requests
        ts, sig = headers["x-relaycast-timestamp"], headers["x-relaycast-signature"]
        assert abs(int(ts) - time.time()) < 5 and sig.startswith("sha256=") and len(sig) == 7 + 64
        assert verify_signature(SECRET, ts, raw, sig)
        assert not verify_signature("another-secret", ts, raw, sig)
        assert not verify_signature(SECRET, ts, raw.replace(b"req-0000", b"req-9999"), sig)
        assert not verify_signature(SECRET, str(int(ts) + 1), raw, sig)  # the timestamp is signed too
        assert not verify_signature(SECRET, ts, raw, sig, now=int(ts) + 301)  # replayed too late
        assert verify_signature(SECRET, ts, raw, sig, now=int(ts) + 299)
        assert not verify_signature(SECRET, "not-a-number", raw, sig)
        assert not verify_signature(SECRET, ts, raw, sig.removeprefix("sha256="))

    run(body)


def test_signature_is_hmac_sha256_of_timestamp_dot_body_as_documented():
    import hashlib
    import hmac

    body = b'{"records":[],"count":0}'
    expected = hmac.new(SECRET.encode(), b"1760000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1760000000, body) == f"sha256={expected}"
    assert verify_signature(SECRET, "1760000000", body, f"sha256={expected}", now=1760000000)


def test_webhook_uses_the_injected_clock_for_the_timestamp():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(cap.url), session, clock=lambda: 1_700_000_000.9)
        await ex.send(ex.encode(served_record(), False, TAGS))
        ((_, headers, raw),) = cap.requests
        assert headers["x-relaycast-timestamp"] == "1700000000"
        assert verify_signature(SECRET, "1700000000", raw, headers["x-relaycast-signature"], now=1_700_000_000)

    run(body)


def test_without_a_secret_no_signature_headers_are_sent():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(cap.url, secret=None), session)
        await ex.send(ex.encode(served_record(), False, TAGS))
        ((_, headers, _),) = cap.requests
        assert "x-relaycast-signature" not in headers and "x-relaycast-timestamp" not in headers

    run(body)


def test_configured_headers_cannot_replace_content_type_or_the_signature():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        forged = (("Content-Type", "text/plain"), ("X-Relaycast-Signature", "sha256=00"), ("x-team", "pay"))
        ex = WebhookExporter(webhook_dest(cap.url, headers=forged), session)
        await ex.send(ex.encode(served_record(), False, TAGS))
        ((_, headers, raw),) = cap.requests
        assert headers["content-type"] == "application/json" and headers["x-team"] == "pay"
        assert verify_signature(SECRET, headers["x-relaycast-timestamp"], raw, headers["x-relaycast-signature"])

    run(body)


def test_500_is_retryable_with_its_status_and_400_is_not():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(cap.url + "/secret-path-token"), session)
        items = ex.encode(served_record(), False, TAGS)
        cap.answers = [500, 400, 429]
        with pytest.raises(ExportError) as e500:
            await ex.send(items)
        assert e500.value.retryable and e500.value.status == 500
        with pytest.raises(ExportError) as e400:
            await ex.send(items)
        assert not e400.value.retryable and e400.value.status == 400
        with pytest.raises(ExportError) as e429:
            await ex.send(items)
        assert e429.value.retryable and e429.value.status == 429
        for e in (e500, e400, e429):
            assert "secret-path-token" not in e.value.message and SECRET not in e.value.message

    run(body)


def test_a_closed_port_is_a_retryable_error_without_a_status():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(closed_port_url()), session)
        with pytest.raises(ExportError) as e:
            await ex.send(ex.encode(served_record(), False, TAGS))
        assert e.value.retryable and e.value.status is None and "unreachable" in e.value.message

    run(body)


def test_webhook_privacy_mode_leaves_no_prompt_or_completion_text_in_the_body():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(cap.url), session)
        await ex.send(ex.encode(served_record(), True, TAGS))
        ((_, _, raw),) = cap.requests
        assert PROMPT.encode() not in raw and ANSWER.encode() not in raw and b"prompt-marker" not in raw
        doc = orjson.loads(raw)
        assert doc["records"][0]["privacy_mode"] is True and doc["records"][0]["request_id"] == "req-0000"

    run(body)


def test_connection_test_posts_a_signed_empty_test_body_and_reports_ok():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        ex = WebhookExporter(webhook_dest(cap.url + "/hook", headers=(("authorization", HEADER_TOKEN),)), session)
        result = await ex.test()
        assert result.ok and result.message.startswith("ok")
        ((_, headers, raw),) = cap.requests
        assert orjson.loads(raw) == {"records": [], "count": 0, "test": True}
        assert verify_signature(SECRET, headers["x-relaycast-timestamp"], raw, headers["x-relaycast-signature"])
        assert SECRET not in result.message and HEADER_TOKEN not in result.message

    run(body)


def test_connection_test_reports_http_errors_and_unreachable_plainly_without_secrets():
    async def body(cap: Capture, session: aiohttp.ClientSession) -> None:
        headers = (("authorization", HEADER_TOKEN),)
        ex = WebhookExporter(webhook_dest(cap.url + "/hook?token=tok-in-query", headers=headers), session)
        cap.answers = [401, 503]
        r401, r503 = await ex.test(), await ex.test()
        assert not r401.ok and "answered HTTP 401" in r401.message
        assert not r503.ok and "answered HTTP 503" in r503.message
        down = await WebhookExporter(webhook_dest(closed_port_url(), headers=headers), session).test()
        assert not down.ok and down.message.startswith("unreachable")
        for r in (r401, r503, down):
            assert SECRET not in r.message and HEADER_TOKEN not in r.message and "tok-in-query" not in r.message

    run(body)


# --- file -----------------------------------------------------------------------------------------


def file_exporter(path: Path, max_bytes: int = 10 * 1024 * 1024, backups: int = 5) -> FileExporter:
    dest = DestinationConfig(
        name="log", kind="file", options=FileOptions(path=str(path), max_bytes=max_bytes, backups=backups), tags=TAGS
    )
    ex = build(dest, session=None)  # type: ignore[arg-type] # a file needs no HTTP session
    assert isinstance(ex, FileExporter)
    return ex


def write(ex: FileExporter, records: list[RequestRecord], privacy: bool = False, batch: int = 7) -> None:
    items = [it for r in records for it in ex.encode(r, privacy, TAGS)]

    async def main() -> None:
        for i in range(0, len(items), batch):
            await ex.send(items[i : i + batch])

    asyncio.run(main())


def all_lines(path: Path) -> list[bytes]:
    """Every line of the file and its backups, oldest first."""
    backups = sorted(path.parent.glob(path.name + ".*"), key=lambda p: int(p.suffix[1:]), reverse=True)
    out = []
    for p in [*backups, path]:
        data = p.read_bytes()
        assert data.endswith(b"\n"), f"{p.name} ends mid-line"
        out.extend(data.splitlines())
    return out


def test_file_lines_are_json_records_in_order_and_the_directory_is_created(tmp_path: Path):
    path = tmp_path / "logs" / "nested" / "requests.jsonl"
    ex = file_exporter(path)
    assert ex.kind == "file" and ex.max_batch_bytes == 8 * 1024 * 1024 and ex.max_age_s is None
    write(ex, [served_record(i) for i in range(10)])
    lines = path.read_bytes().splitlines()
    docs = [orjson.loads(line) for line in lines]
    assert [d["request_id"] for d in docs] == [f"req-{i:04d}" for i in range(10)]
    assert docs[0] == orjson.loads(record_json(served_record(0), False, TAGS))
    assert docs[0]["schema"] == SCHEMA and docs[0]["tags"] == {"team": "payments", "env": "staging"}


def test_rotation_keeps_every_record_in_whole_lines_and_no_file_passes_max_bytes(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    line_len = len(record_json(served_record(0), False, TAGS)) + 1
    max_bytes = line_len * 5 + line_len // 2  # five whole lines fit, a sixth does not
    ex = file_exporter(path, max_bytes=max_bytes, backups=50)
    write(ex, [served_record(i) for i in range(47)])
    files = sorted(tmp_path.iterdir())
    assert len(files) == 10  # 47 lines, 5 per file
    for f in files:
        assert 0 < f.stat().st_size <= max_bytes
    docs = [orjson.loads(line) for line in all_lines(path)]  # every line parses: none was split
    assert [d["request_id"] for d in docs] == [f"req-{i:04d}" for i in range(47)]  # none lost, none repeated


def test_rotation_keeps_only_the_configured_number_of_backups_and_drops_the_oldest(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    line_len = len(record_json(served_record(0), False, TAGS)) + 1
    ex = file_exporter(path, max_bytes=line_len * 3, backups=2)
    write(ex, [served_record(i) for i in range(20)], batch=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    ids = [orjson.loads(line)["request_id"] for line in all_lines(path)]
    assert ids == [f"req-{i:04d}" for i in range(20 - len(ids), 20)]  # the newest, contiguous
    assert len(ids) == 3 + 3 + 2


def test_zero_backups_starts_the_file_anew_when_it_is_full(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    line_len = len(record_json(served_record(0), False, TAGS)) + 1
    ex = file_exporter(path, max_bytes=line_len * 4, backups=0)
    write(ex, [served_record(i) for i in range(10)], batch=3)
    assert [p.name for p in tmp_path.iterdir()] == ["requests.jsonl"]
    ids = [orjson.loads(line)["request_id"] for line in path.read_bytes().splitlines()]
    assert ids == ["req-0008", "req-0009"]


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    ex = file_exporter(path, max_bytes=1500, backups=5)
    rec = served_record(1, params={"tools": ["t" * 3000]})  # metadata alone passes the limit
    write(ex, [served_record(0), rec, served_record(2)])
    ids = [orjson.loads(line)["request_id"] for line in all_lines(path)]
    assert ids == ["req-0000", "req-0001", "req-0002"]


def test_a_big_completion_is_dropped_and_marked_so_the_line_fits_the_file(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    ex = file_exporter(path, max_bytes=4000, backups=1)
    (item,) = ex.encode(served_record(output_text="y" * 10_000), False, TAGS)
    assert len(item) < 4000 and orjson.loads(item)["collection_errors"] == ["dropped_io"]


def test_file_privacy_mode_writes_no_prompt_or_completion(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    write(file_exporter(path), [served_record(i) for i in range(3)], privacy=True)
    raw = path.read_bytes()
    assert PROMPT.encode() not in raw and ANSWER.encode() not in raw
    assert all(orjson.loads(line)["privacy_mode"] is True for line in raw.splitlines())


def test_appending_after_a_crash_never_joins_an_unfinished_line(tmp_path: Path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(record_json(served_record(0), False, TAGS) + b"\n" + b'{"schema": "relaycast.req')
    write(file_exporter(path), [served_record(1)])
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and orjson.loads(lines[2])["request_id"] == "req-0001"


def test_file_io_runs_off_the_event_loop_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    threads: list[int] = []
    original = FileExporter._append

    def spy(self: FileExporter, items: list[bytes]) -> None:
        threads.append(threading.get_ident())
        original(self, items)

    monkeypatch.setattr(FileExporter, "_append", spy)
    write(file_exporter(tmp_path / "requests.jsonl"), [served_record(0)])
    assert threads and threading.get_ident() not in threads


def test_an_os_error_is_a_retryable_export_error_with_the_reason_not_a_traceback(tmp_path: Path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the log directory should be")
    ex = file_exporter(blocker / "requests.jsonl")
    with pytest.raises(ExportError) as e:
        write(ex, [served_record(0)])
    assert e.value.retryable and e.value.status is None
    assert "Not a directory" in e.value.message or "File exists" in e.value.message
    assert "Traceback" not in e.value.message and e.value.__cause__ is None


def test_file_connection_test_creates_the_directory_and_writes_no_record(tmp_path: Path):
    path = tmp_path / "new" / "requests.jsonl"
    result = asyncio.run(file_exporter(path).test())
    assert result.ok and result.message.startswith("ok")
    assert path.parent.is_dir() and list(path.parent.iterdir()) == []


def test_file_connection_test_names_the_directory_it_cannot_write_to(tmp_path: Path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = asyncio.run(file_exporter(blocker / "sub" / "requests.jsonl").test())
    assert not result.ok
    assert result.message.startswith(f"cannot write to {blocker / 'sub'}: ")
    assert "Not a directory" in result.message or "File exists" in result.message


def test_a_full_disk_cuts_the_file_back_to_whole_lines_and_is_retryable(tmp_path: Path):
    from tests.unit.test_spool import tiny_disk

    with tiny_disk(tmp_path / "disk", "1m") as disk:
        path = disk / "requests.jsonl"
        ex = file_exporter(path, max_bytes=64 * 1024 * 1024)
        big = served_record(0)
        items = [it for r in [big] * 40 for it in ex.encode(r, False, TAGS)]
        filler = b"x" * (300 * 1024)

        async def main() -> list[int]:
            sizes = []
            for _ in range(10):  # each a batch of 40 lines plus a large one: the disk fills part-way through one
                try:
                    await ex.send([*items, filler, *items])
                except ExportError as e:
                    assert e.retryable and "No space left on device" in e.message
                    sizes.append(path.stat().st_size)
            return sizes

        sizes = asyncio.run(main())
        assert sizes, "the disk filled"
        data = path.read_bytes()
        assert len(data) == sizes[-1] and data.endswith(b"\n"), "cut back to the last whole batch"
        assert data.count(b"\n") % (2 * len(items) + 1) == 0, "only whole batches are left"
