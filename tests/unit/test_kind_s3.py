"""The S3 destination against a real S3 server on loopback (moto's, with signature checking on), plus its
settings, its object layout and its error messages."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import yaml

from relaycast.config_reader import ConfigError, Reader
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.telemetry.exporters import build
from relaycast.telemetry.exporters.base import ExportError
from relaycast.telemetry.exporters.s3 import S3Exporter, hour_groups, jsonl, object_key, object_url
from relaycast.telemetry.kinds.s3 import S3Options
from relaycast.telemetry.settings import DestinationConfig, parse_broadcast
from tests.capture import run_with_capture

BUCKET = "llm-logs"
HOUR_NS = 3_600_000_000_000
# 2025-10-09T08:59:59.5Z and 09:00:00.25Z: one batch across an hour boundary
BEFORE_NINE = 1_760_000_399_500_000_000
AFTER_NINE = 1_760_000_400_250_000_000
# Requests moto serves before it starts checking signatures: the bucket, then a writer, a reader and an admin
# (user, policy, key each).
SETUP_ACTIONS = 10
ALLOW_ALL = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}'
ADMIN = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}'
READ_ONLY = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoS3:
    """moto's S3 server in a subprocess on loopback, checking SigV4 signatures against IAM users it knows
    (`INITIAL_NO_AUTH_ACTION_COUNT`: the setup requests go unsigned-checked, every later one is checked)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        setup = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        self._client("s3", **setup).create_bucket(Bucket=BUCKET)
        self.key_id, self.secret = self._user("writer", ALLOW_ALL, setup)
        self.reader_key_id, self.reader_secret = self._user("reader", READ_ONLY, setup)
        admin_id, admin_secret = self._user("admin", ADMIN, setup)
        self.admin = {"aws_access_key_id": admin_id, "aws_secret_access_key": admin_secret}

    def _client(self, service: str, **creds: str) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1", **creds)

    def _user(self, name: str, policy: str, setup: dict[str, str]) -> tuple[str, str]:
        iam = self._client("iam", **setup)
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy)
        k = iam.create_access_key(UserName=name)["AccessKey"]
        return k["AccessKeyId"], k["SecretAccessKey"]

    def iam(self) -> Any:
        """A boto3 IAM client with the admin's key: users and access keys made, rotated and deleted."""
        return self._client("iam", **self.admin)

    def s3(self) -> Any:
        """A boto3 client with the writer's key, to read back what the exporter wrote."""
        return self._client("s3", aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def objects(self, prefix: str) -> dict[str, bytes]:
        c = self.s3()
        listed = c.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
        return {o["Key"]: c.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


def destination(text: str, env: dict[str, str] | None = None) -> DestinationConfig:
    env = env or {}
    (d,) = parse_broadcast(Reader(env), yaml.safe_load(text), env, None).destinations
    return d


def s3_dest(moto: MotoS3, prefix: str, **extra: Any) -> DestinationConfig:
    settings = {
        "kind": "s3",
        "bucket": BUCKET,
        "prefix": prefix,
        "endpoint_url": moto.url,
        "access_key_id": moto.key_id,
        "secret_access_key": moto.secret,
        **extra,
    }
    return destination(yaml.safe_dump({"destinations": [settings]}))


def record(i: int, started: int, text: str = "the answer") -> RequestRecord:
    usage = Usage(prompt_tokens=12, completion_tokens=5)
    return RequestRecord(
        request_id=f"req-{i}",
        endpoint="chat.completions",
        model_requested="fast",
        stream=False,
        started_unix_ns=started,
        duration_ns=805_000_000,
        status_code=200,
        attribution=Attribution(user="alice", session_id="s-1"),
        attempts=(
            Attempt(
                target="openai/gpt-4o-mini",
                provider="openai",
                model="gpt-4o-mini",
                started_ns=0,
                duration_ns=800_000_000,
                usage=usage,
                finish_reason="stop",
                cost_pusd=10_500_000,  # $0.0000105
                cost_source="computed",
                vendor="openai",
            ),
        ),
        input_messages=({"role": "user", "content": "private words"},),
        output_text=text,
    )


def run(coro_fn: Any) -> Any:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            return await coro_fn(session)

    return asyncio.run(main())


def export(dest: DestinationConfig, records: list[RequestRecord]) -> None:
    async def go(session: aiohttp.ClientSession) -> None:
        exp = build(dest, session)
        await exp.send([it for r in records for it in exp.encode(r, dest.privacy_mode, dest.tags)])

    run(go)


def connection_test(dest: DestinationConfig) -> tuple[bool, str]:
    async def go(session: aiohttp.ClientSession) -> tuple[bool, str]:
        result = await build(dest, session).test()
        return result.ok, result.message

    result: tuple[bool, str] = run(go)
    return result


# --- delivery, read back from the server -------------------------------------------------------------


def test_a_batch_becomes_one_gzipped_json_lines_object_in_its_hour_partition(moto: MotoS3) -> None:
    t = AFTER_NINE + 5_000_000_000
    export(s3_dest(moto, "gz/"), [record(1, t), record(2, t + 1_000_000)])
    (key, body), *rest = moto.objects("gz/").items()
    assert not rest
    assert key.startswith("gz/dt=2025-10-09/hour=09/20251009T090005Z-") and key.endswith(".jsonl.gz")
    lines = [json.loads(x) for x in gzip.decompress(body).decode().splitlines()]
    assert [x["request_id"] for x in lines] == ["req-1", "req-2"]
    first = lines[0]
    assert first["schema"] == "relaycast.request.v1" and first["started_at"] == "2025-10-09T09:00:05.250000Z"
    assert first["cost_usd"] == "0.0000105" and first["attempts"][0]["model"] == "gpt-4o-mini"
    assert first["attempts"][0]["usage"]["prompt_tokens"] == 12 and first["attribution"]["user"] == "alice"
    assert first["input_messages"] == [{"role": "user", "content": "private words"}]
    assert first["output_text"] == "the answer"
    head = moto.s3().head_object(Bucket=BUCKET, Key=key)
    assert head["ContentType"] == "application/gzip" and "ContentEncoding" not in head


def test_privacy_mode_and_no_compression(moto: MotoS3) -> None:
    export(s3_dest(moto, "plain", compression="none", privacy_mode=True), [record(3, AFTER_NINE)])
    ((key, body),) = moto.objects("plain/").items()
    assert key.endswith(".jsonl") and key.startswith("plain/dt=2025-10-09/hour=09/")
    (line,) = body.decode().splitlines()
    doc = json.loads(line)
    assert doc["request_id"] == "req-3" and doc["privacy_mode"] is True and doc["cost_usd"] == "0.0000105"
    assert b"private words" not in body and b"the answer" not in body


def test_a_batch_across_an_hour_boundary_splits_by_partition(moto: MotoS3) -> None:
    export(s3_dest(moto, "split/"), [record(4, BEFORE_NINE), record(5, AFTER_NINE), record(6, BEFORE_NINE + 1)])
    found = {
        key.rsplit("/", 1)[0]: [json.loads(x)["request_id"] for x in gzip.decompress(body).splitlines()]
        for key, body in moto.objects("split/").items()
    }
    assert found == {"split/dt=2025-10-09/hour=08": ["req-4", "req-6"], "split/dt=2025-10-09/hour=09": ["req-5"]}


def test_a_batch_sent_twice_is_one_object(moto: MotoS3) -> None:
    """A retry whose first PUT had landed, or a spool replay, overwrites its own object: no duplicates."""
    dest = s3_dest(moto, "again/")
    batch = [record(7, AFTER_NINE), record(8, AFTER_NINE + 1)]
    export(dest, batch)
    export(dest, batch)
    assert len(moto.objects("again/")) == 1


def test_credentials_from_the_environment_chain(moto: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.secret)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    dest = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, prefix: chain, endpoint_url: '{moto.url}'}}]")
    export(dest, [record(9, AFTER_NINE)])
    assert len(moto.objects("chain/")) == 1


# --- Test Connection and delivery errors, from the real server ---------------------------------------


def test_connection_ok_writes_only_an_empty_marker(moto: MotoS3) -> None:
    ok, message = connection_test(s3_dest(moto, "probe/"))
    assert ok, message
    assert message.startswith("ok: wrote an empty test object to s3://llm-logs/probe/_relaycast_connection_test")
    assert moto.objects("probe/") == {"probe/_relaycast_connection_test": b""}


def test_connection_missing_bucket(moto: MotoS3) -> None:
    dest = s3_dest(moto, "x/", bucket="no-such-bucket")
    assert connection_test(dest) == (False, f"bucket 'no-such-bucket' does not exist at {moto.url}")


def test_connection_wrong_secret_and_unknown_key(moto: MotoS3) -> None:
    ok, message = connection_test(s3_dest(moto, "x/", secret_access_key="not-the-secret"))
    assert not ok and message == "credentials refused: the secret access key does not match the access key id"
    ok, message = connection_test(s3_dest(moto, "x/", access_key_id="AKIAUNKNOWNKEY000000"))
    assert not ok and message.startswith("credentials refused: the access key id is unknown to S3")


def test_connection_without_write_permission(moto: MotoS3) -> None:
    dest = s3_dest(moto, "ro/", access_key_id=moto.reader_key_id, secret_access_key=moto.reader_secret)
    ok, message = connection_test(dest)
    assert not ok and message.startswith("access denied: the credentials may not write to s3://llm-logs/ro/")


def test_connection_unreachable() -> None:
    port = _free_port()  # nothing listens there
    dest = destination(
        f"destinations: [{{kind: s3, bucket: {BUCKET}, endpoint_url: 'http://127.0.0.1:{port}',"
        " access_key_id: AKIAEXAMPLE, secret_access_key: secret-example-123}]"
    )
    ok, message = connection_test(dest)
    assert not ok and message.startswith(f"unreachable: http://127.0.0.1:{port} (")


def test_connection_without_any_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    dest = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, endpoint_url: 'http://127.0.0.1:9'}}]")
    ok, message = connection_test(dest)
    assert not ok and message.startswith("no AWS credentials found: set access_key_id and secret_access_key")


def test_delivery_errors_are_classified(moto: MotoS3) -> None:
    for extra, retryable, start in (
        ({"bucket": "no-such-bucket"}, False, "bucket 'no-such-bucket' does not exist"),
        ({"secret_access_key": "wrong"}, False, "credentials refused"),
    ):
        with pytest.raises(ExportError) as e:
            export(s3_dest(moto, "err/", **extra), [record(10, AFTER_NINE)])
        assert e.value.retryable is retryable and e.value.message.startswith(start)


def test_answers_s3_asks_to_retry_and_ones_it_does_not() -> None:
    """S3's own error documents (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html), answered
    by a capture server: SlowDown is retried, a bucket in another region is said plainly and not retried, and a
    redirect is never followed."""

    def xml(code: str, extra: str = "") -> bytes:
        return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message>{extra}</Error>".encode()

    async def body(cap: Any, session: aiohttp.ClientSession) -> list[ExportError]:
        cap.answers = [
            (503, {"retry-after": "2"}, xml("SlowDown")),
            (301, {"x-amz-bucket-region": "eu-west-1"}, xml("PermanentRedirect")),
            (307, {"location": f"{cap.url}/elsewhere"}, xml("TemporaryRedirect")),
            (500, {}, xml("InternalError")),
            (403, {}, xml("RequestTimeTooSkewed")),
        ]
        dest = destination(
            f"destinations: [{{kind: s3, bucket: {BUCKET}, endpoint_url: '{cap.url}', region: us-east-1,"
            " access_key_id: AKIAEXAMPLE, secret_access_key: secret-example-123}]"
        )
        exp = build(dest, session)
        items = exp.encode(record(11, AFTER_NINE), False, ())
        out = []
        for _ in cap.answers[:]:
            with pytest.raises(ExportError) as e:
                await exp.send(items)
            out.append(e.value)
        assert [p for p, _, _ in cap.requests if p == "/elsewhere"] == []
        path, headers, _ = cap.requests[0]
        assert path.startswith(f"/{BUCKET}/relaycast/dt=2025-10-09/hour=09/")
        assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/")
        assert "/us-east-1/s3/aws4_request" in headers["authorization"]
        assert headers["x-amz-content-sha256"] != "UNSIGNED-PAYLOAD" and "content-md5" in headers
        return out

    slow, moved, temporary, internal, skewed = run_with_capture(body)
    assert slow.retryable and slow.retry_after == 2 and "slow down" in slow.message
    assert not moved.retryable and moved.message == (
        "bucket 'llm-logs' is in region eu-west-1, not us-east-1: set `region: eu-west-1`"
    )
    assert temporary.retryable and "not followed" in temporary.message
    assert internal.retryable
    # the batch waits in the spool until the clock is synced, then goes out (each try is signed afresh)
    assert skewed.retryable and skewed.message.startswith("request refused: this machine's clock is too far")


# --- credentials from the chain change while relaycast runs --------------------------------------------


def chain_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Only the files under `tmp_path` for the AWS chain (no variables, no instance metadata): the credentials
    file's path, not yet written."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return tmp_path / "credentials"


def write_credentials(path: Path, key_id: str, secret: str, token: str | None = None) -> None:
    lines = ["[default]", f"aws_access_key_id = {key_id}", f"aws_secret_access_key = {secret}"]
    path.write_text("\n".join([*lines, *([f"aws_session_token = {token}"] if token else [])]) + "\n")


def new_user(moto: MotoS3, name: str) -> tuple[Any, dict[str, str]]:
    iam = moto.iam()
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=ALLOW_ALL)
    return iam, iam.create_access_key(UserName=name)["AccessKey"]


def chain_dest(endpoint: str, prefix: str) -> DestinationConfig:
    return destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, prefix: {prefix}, endpoint_url: '{endpoint}'}}]")


def test_a_rotated_key_in_the_credentials_file_is_picked_up(
    moto: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The file gets a new key and the old one is deleted while the exporter runs: the next batch still lands."""
    creds = chain_env(monkeypatch, tmp_path)
    iam, old = new_user(moto, "rotated")
    write_credentials(creds, old["AccessKeyId"], old["SecretAccessKey"])
    dest = chain_dest(moto.url, "rotate")

    async def go(session: aiohttp.ClientSession) -> None:
        exp = build(dest, session)
        await exp.send(exp.encode(record(20, AFTER_NINE), False, ()))
        new = iam.create_access_key(UserName="rotated")["AccessKey"]
        write_credentials(creds, new["AccessKeyId"], new["SecretAccessKey"])
        iam.delete_access_key(UserName="rotated", AccessKeyId=old["AccessKeyId"])
        await exp.send(exp.encode(record(21, AFTER_NINE + 1), False, ()))

    run(go)
    found = [
        json.loads(x)["request_id"]
        for body in moto.objects("rotate/").values()
        for x in gzip.decompress(body).splitlines()
    ]
    assert sorted(found) == ["req-20", "req-21"]


def test_a_deleted_key_still_in_the_file_is_refused_and_not_retried(
    moto: MotoS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    creds = chain_env(monkeypatch, tmp_path)
    iam, old = new_user(moto, "deleted")
    write_credentials(creds, old["AccessKeyId"], old["SecretAccessKey"])
    dest = chain_dest(moto.url, "deleted")

    async def go(session: aiohttp.ClientSession) -> None:
        exp = build(dest, session)
        await exp.send(exp.encode(record(22, AFTER_NINE), False, ()))
        iam.delete_access_key(UserName="deleted", AccessKeyId=old["AccessKeyId"])
        await exp.send(exp.encode(record(23, AFTER_NINE + 1), False, ()))

    with pytest.raises(ExportError) as e:
        run(go)
    assert not e.value.retryable
    assert e.value.message.startswith("credentials refused: the access key id is unknown to S3")


def xml_error(code: str) -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode()


def test_an_expired_session_token_from_the_chain_is_renewed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """S3 answers ExpiredToken (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): with new
    session keys in the file, the batch goes again at once with them; with none yet, it is retried later (the
    spool keeps it), asking the file again then."""
    creds = chain_env(monkeypatch, tmp_path)
    write_credentials(creds, "AKIAFIRST", "secret-1", "token-1")

    async def body(cap: Any, session: aiohttp.ClientSession) -> tuple[list[str], ExportError]:
        exp = build(chain_dest(cap.url, "tok"), session)
        items = exp.encode(record(24, AFTER_NINE), False, ())
        await exp.send(items)
        write_credentials(creds, "AKIASECOND", "secret-2", "token-2")
        cap.answers = [(400, {}, xml_error("ExpiredToken"))]
        await exp.send(items)
        cap.answers = [(400, {}, xml_error("ExpiredToken"))]
        with pytest.raises(ExportError) as e:
            await exp.send(items)  # the file has nothing newer: no second PUT now
        return [h["x-amz-security-token"] for _, h, _ in cap.requests], e.value

    tokens, still_expired = run_with_capture(body)
    assert tokens == ["token-1", "token-1", "token-2", "token-2"]
    assert still_expired.retryable and still_expired.message.startswith("credentials refused: the session token is")


def test_an_expired_configured_session_token_is_final() -> None:
    """Configured keys never change while relaycast runs: retrying them would only fill the spool."""

    async def body(cap: Any, session: aiohttp.ClientSession) -> tuple[int, ExportError]:
        dest = destination(
            f"destinations: [{{kind: s3, bucket: {BUCKET}, endpoint_url: '{cap.url}', access_key_id: AKIAEXAMPLE,"
            " secret_access_key: secret-example-123, session_token: token-0}]"
        )
        exp = build(dest, session)
        cap.answers = [(400, {}, xml_error("ExpiredToken"))]
        with pytest.raises(ExportError) as e:
            await exp.send(exp.encode(record(25, AFTER_NINE), False, ()))
        return len(cap.requests), e.value

    sent, error = run_with_capture(body)
    assert sent == 1 and not error.retryable
    assert error.message == (
        "credentials refused: the session token is expired (set a current session_token, or leave the keys out "
        "to use the AWS credential chain)"
    )


def test_configured_keys_leave_profiles_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With keys set, AWS_PROFILE (here naming a profile that does not exist) and the profile's region are not
    read: the region is the configured one, else us-east-1. Without keys, the profile's region applies."""
    chain_env(monkeypatch, tmp_path)
    (tmp_path / "config").write_text("[default]\nregion = eu-west-3\n[profile other]\nregion = ap-south-1\n")
    (tmp_path / "credentials").write_text("[other]\naws_access_key_id = AKIAFILE\naws_secret_access_key = s\n")

    async def body(cap: Any, session: aiohttp.ClientSession) -> list[str]:
        keys = f"access_key_id: AKIAEXAMPLE, secret_access_key: secret-example-123, endpoint_url: '{cap.url}'"
        monkeypatch.setenv("AWS_PROFILE", "missing")
        with_keys = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, {keys}}}]", dict(os.environ))
        await build(with_keys, session).send([b'{"started_unix_ns":1760000400250000000}\n'])
        monkeypatch.setenv("AWS_PROFILE", "other")
        chain = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, endpoint_url: '{cap.url}'}}]")
        await build(chain, session).send([b'{"started_unix_ns":1760000400250000000}\n'])
        return [h["authorization"] for _, h, _ in cap.requests]

    keyed, chained = run_with_capture(body)
    assert "Credential=AKIAEXAMPLE/" in keyed and "/us-east-1/s3/aws4_request" in keyed
    assert "Credential=AKIAFILE/" in chained and "/ap-south-1/s3/aws4_request" in chained


# --- object size ----------------------------------------------------------------------------------------


def test_the_pipelines_count_of_a_batch_is_the_objects_size() -> None:
    """The pipeline keeps the sum of a batch's item sizes within max_batch_bytes; each item is a whole line, so
    that sum is the object's size before gzip and an object never passes the bound."""

    async def body(cap: Any, session: aiohttp.ClientSession) -> tuple[int, bytes]:
        dest = destination(
            f"destinations: [{{kind: s3, bucket: {BUCKET}, endpoint_url: '{cap.url}', compression: none,"
            " access_key_id: AKIAEXAMPLE, secret_access_key: secret-example-123}]"
        )
        exp = build(dest, session)
        items = [it for i in range(5) for it in exp.encode(record(30 + i, AFTER_NINE + i), False, ())]
        await exp.send(items)
        ((_, _, sent),) = cap.requests
        return sum(len(it) for it in items), sent

    counted, sent = run_with_capture(body)
    assert len(sent) == counted
    assert [json.loads(x)["request_id"] for x in sent.splitlines()] == [f"req-{30 + i}" for i in range(5)]


def test_a_record_at_the_bound_keeps_its_line_within_it() -> None:
    async def go(session: aiohttp.ClientSession) -> None:
        exp = build(destination("destinations: [{kind: s3, bucket: logs}]"), session)
        big = record(40, AFTER_NINE, text="x" * 4000)
        whole = exp.encode(big, False, ())[0]
        assert isinstance(exp, S3Exporter)
        exp.max_batch_bytes = len(whole) - 1  # its JSON alone would fit, its line would not: the text must go
        (item,) = exp.encode(big, False, ())
        assert len(item) <= exp.max_batch_bytes and item.endswith(b"}\n")
        assert json.loads(item)["output_text"] != "x" * 4000
        assert jsonl([item, item]) == item + item

    run(go)


# --- layout ----------------------------------------------------------------------------------------------


def test_object_key_names_the_partition_the_time_and_the_content() -> None:
    key = object_key("relaycast/", BEFORE_NINE, b'{"a":1}\n', "gzip")
    assert key.startswith("relaycast/dt=2025-10-09/hour=08/20251009T085959Z-") and key.endswith(".jsonl.gz")
    assert key == object_key("relaycast/", BEFORE_NINE, b'{"a":1}\n', "gzip")
    assert key != object_key("relaycast/", BEFORE_NINE, b'{"a":2}\n', "gzip")
    assert object_key("", AFTER_NINE, b"x", "none").startswith("dt=2025-10-09/hour=09/")


def test_hour_groups_read_each_records_own_start() -> None:
    tricky = b'{"schema":"relaycast.request.v1","request_id":"r","client_request_id":"\\"started_unix_ns\\":1",'
    items = [tricky + f'"started_unix_ns":{AFTER_NINE}}}'.encode(), f'{{"started_unix_ns":{BEFORE_NINE}}}'.encode()]
    groups = hour_groups(items, now_ns=0)
    assert [(earliest, len(g)) for earliest, g in groups] == [(BEFORE_NINE, 1), (AFTER_NINE, 1)]


def test_object_urls_for_aws_and_custom_endpoints() -> None:
    def url(**o: Any) -> str:
        return object_url(S3Options(**{"bucket": "logs", **o}), o.get("region") or "eu-west-1", "p/dt=1/k")

    assert url() == "https://logs.s3.eu-west-1.amazonaws.com/p/dt%3D1/k"
    assert url(bucket="my.logs") == "https://s3.eu-west-1.amazonaws.com/my.logs/p/dt%3D1/k"
    assert url(region="cn-north-1") == "https://logs.s3.cn-north-1.amazonaws.com.cn/p/dt%3D1/k"
    assert url(addressing_style="path") == "https://s3.eu-west-1.amazonaws.com/logs/p/dt%3D1/k"
    assert url(endpoint_url="http://127.0.0.1:9000") == "http://127.0.0.1:9000/logs/p/dt%3D1/k"
    assert (
        url(endpoint_url="https://acct.r2.cloudflarestorage.com", addressing_style="virtual")
        == "https://logs.acct.r2.cloudflarestorage.com/p/dt%3D1/k"
    )


# --- settings --------------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    d = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}}}]")
    assert d.name == "s3"
    assert d.options == S3Options(bucket=BUCKET, prefix="relaycast/", compression="gzip")
    assert (d.flush_interval_s, d.timeout_s) == (30.0, 30.0)  # S3 bills every PUT: fewer, larger objects
    d = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, flush_interval: 2, timeout: 7}}]")
    assert (d.flush_interval_s, d.timeout_s) == (2.0, 7.0)


def test_settings_read_the_aws_environment_variables() -> None:
    env = {
        "AWS_REGION": "eu-central-1",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000/",
    }
    o = destination(f"destinations: [{{kind: s3, bucket: {BUCKET}, prefix: /a/b}}]", env).options
    assert isinstance(o, S3Options)
    assert (o.region, o.endpoint_url, o.prefix) == ("eu-central-1", "http://127.0.0.1:9000", "a/b/")
    o = destination(
        f"destinations: [{{kind: s3, bucket: {BUCKET}}}]",
        {
            "AWS_DEFAULT_REGION": "us-west-2",
            "AWS_ENDPOINT_URL": "http://e:1",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
        },
    ).options
    assert isinstance(o, S3Options) and (o.region, o.endpoint_url) == ("us-west-2", None)


@pytest.mark.parametrize(
    ("settings", "where", "says"),
    [
        ("{kind: s3}", "bucket", "required: bucket"),
        ("{kind: s3, bucket: 's3://logs/x'}", "bucket", "is not a bucket name"),
        ("{kind: s3, bucket: logs, access_key_id: AKIA}", "secret_access_key", "required with the other key"),
        ("{kind: s3, bucket: logs, compression: zstd}", "compression", "not one of: gzip, none"),
        ("{kind: s3, bucket: logs, endpoint_url: 'minio:9000'}", "endpoint_url", "is not an http(s) URL"),
        ("{kind: s3, bucket: logs, acl: public-read}", "acl", "unknown setting for a s3 destination"),
    ],
)
def test_settings_errors(settings: str, where: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        destination(f"destinations: [{settings}]")
    assert where in str(e.value) and says in str(e.value)


def test_without_botocore_the_config_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "botocore" else real(n, *a))
    with pytest.raises(ConfigError) as e:
        destination("destinations: [{kind: s3, bucket: logs}]")
    assert "pip install 'relaycast[s3]'" in str(e.value)


def test_secrets_are_named_for_the_redactor_and_hidden_from_repr() -> None:
    d = destination(
        "destinations: [{kind: s3, bucket: logs, access_key_id: AKIAEXAMPLE, secret_access_key: wJalrSECRETkey,"
        " session_token: FwoGZXIvYXdzTOKEN, endpoint_url: 'https://u:p4ssw0rd@minio.example:9000'}]"
    )
    assert set(d.secrets()) == {"wJalrSECRETkey", "FwoGZXIvYXdzTOKEN", "p4ssw0rd"}
    assert "wJalrSECRETkey" not in repr(d) and "FwoGZXIvYXdzTOKEN" not in repr(d)


def test_the_exporter_is_built_for_the_kind() -> None:
    async def go(session: aiohttp.ClientSession) -> None:
        exp = build(destination("destinations: [{kind: s3, bucket: logs}]"), session)
        assert isinstance(exp, S3Exporter) and exp.max_batch_bytes == 8 * 1024 * 1024

    run(go)
