"""The S3 destination as a user runs it: a real `relaycast serve` writing to a real S3 server on loopback (moto's,
checking signatures), credentials and endpoint from the standard AWS variables, read back with boto3; and
`relaycast broadcast test` giving its verdict."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.unit.test_kind_s3 import BUCKET, MotoS3


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


def aws_env(moto: MotoS3, tmp_path: Path) -> dict[str, str]:
    """The standard AWS variables, and nothing from this machine's own AWS setup."""
    return {
        "AWS_ACCESS_KEY_ID": moto.key_id,
        "AWS_SECRET_ACCESS_KEY": moto.secret,
        "AWS_ENDPOINT_URL_S3": moto.url,
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_a_request_lands_in_s3_as_partitioned_json_lines(fake: Fake, moto: MotoS3, tmp_path: Path) -> None:
    extra = f"""
broadcast:
  spool_dir: {tmp_path / "spool"}
  destinations:
    - {{name: archive, kind: s3, bucket: {BUCKET}, prefix: e2e/full, flush_interval: 0.1}}
    - {{name: private, kind: s3, bucket: {BUCKET}, prefix: e2e/private, compression: none, privacy_mode: true,
       flush_interval: 0.1}}
"""
    env = {"TEST_UPSTREAM_KEY": UPSTREAM_KEY, **aws_env(moto, tmp_path)}
    gw = GatewayProcess(standard_config(fake.url, extra), env=env).wait_ready()
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        raw = c.chat.completions.with_raw_response.create(
            model="fast", messages=[{"role": "user", "content": "private words"}], user="alice"
        )
        rid = raw.headers["x-request-id"]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            full, private = moto.objects("e2e/full/"), moto.objects("e2e/private/")
            if full and private:
                break
            time.sleep(0.1)
        log = gw.log()
    finally:
        gw.stop()
    assert full and private, log

    ((key, body),) = full.items()
    (doc,) = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert doc["request_id"] == rid and doc["attribution"]["user"] == "alice"
    started = datetime.fromisoformat(doc["started_at"].replace("Z", "+00:00")).astimezone(UTC)
    assert key.startswith(f"e2e/full/dt={started:%Y-%m-%d}/hour={started:%H}/{started:%Y%m%dT%H%M%SZ}-")
    assert key.endswith(".jsonl.gz")
    assert [a["error_class"] for a in doc["attempts"]] == ["upstream_5xx", None], "failed over once, then answered"
    assert doc["attempts"][-1]["model"] and doc["attempts"][-1]["usage"]["total_tokens"] > 0
    assert doc["cost_usd"] is not None and doc["cost_source"] != "unpriced"
    assert doc["input_messages"][0]["content"] == "private words"

    ((pkey, pbody),) = private.items()
    (pdoc,) = [json.loads(line) for line in pbody.splitlines()]
    assert pkey.endswith(".jsonl") and pdoc["request_id"] == rid and pdoc["privacy_mode"] is True
    assert b"private words" not in pbody
    assert moto.secret not in log


def test_broadcast_test_cli_gives_a_plain_verdict(fake: Fake, moto: MotoS3, tmp_path: Path) -> None:
    extra = f"""
broadcast:
  destinations:
    - {{name: good, kind: s3, bucket: {BUCKET}, prefix: cli}}
    - {{name: missing, kind: s3, bucket: not-a-bucket-here}}
    - {{name: badkey, kind: s3, bucket: {BUCKET}, access_key_id: {moto.key_id}, secret_access_key: wrong-secret-123}}
"""
    path = tmp_path / "relaycast.yaml"
    path.write_text(standard_config(fake.url, extra))
    own = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env = {**own, **aws_env(moto, tmp_path), "TEST_UPSTREAM_KEY": UPSTREAM_KEY}

    def verdict(name: str) -> tuple[int, str]:
        p = subprocess.run(
            [sys.executable, "-m", "relaycast", "broadcast", "test", name, "--config", str(path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return p.returncode, p.stdout.strip()

    assert verdict("good") == (
        0,
        f"OK   good (s3): ok: wrote an empty test object to s3://{BUCKET}/cli/_relaycast_connection_test "
        f"({moto.url}, us-east-1)",
    )
    assert verdict("missing") == (1, f"FAIL missing (s3): bucket 'not-a-bucket-here' does not exist at {moto.url}")
    code, out = verdict("badkey")
    assert code == 1 and out == (
        "FAIL badkey (s3): credentials refused: the secret access key does not match the access key id"
    )
