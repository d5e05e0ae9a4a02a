"""Webhook: batches of request records POSTed as JSON to a URL of your own.

Each POST carries `{"records": [<record>, ...], "count": N}`, each record in the shape `jsonrecord` documents
(`"schema": "relaycast.request.v1"`), with `content-type: application/json` and `user-agent: relaycast`, plus the
configured headers. A record may arrive more than once (a retry after a timeout, a replay from the spool):
deduplicate on `request_id`. A 2xx answer is a success; 408, 429 and 5xx (and connection errors) are
retried with backoff; a redirect is not followed (it would turn the POST into a GET elsewhere): a 3xx, like any
other 4xx, drops the batch and is counted as rejected.

Signatures. With a `secret` configured, every POST (the Test Connection one too) carries

    x-relaycast-timestamp: 1760000000                       (Unix seconds when it was sent)
    x-relaycast-signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

To verify, a receiver takes the raw request body (before any JSON parsing), computes
`hmac_sha256(secret, timestamp_header + "." + body)` in hex, compares it with the header in constant time, and
rejects a timestamp more than a few minutes from its own clock, so a captured request cannot be replayed later.
`verify_signature` below does exactly that, for Python receivers (and tests):

    if not verify_signature(SECRET, request.headers["x-relaycast-timestamp"], body,
                            request.headers["x-relaycast-signature"]):
        return 401

A Test Connection POST is `{"records": [], "count": 0, "test": true}`, signed the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

import aiohttp

from relaycast.records import RequestRecord
from relaycast.telemetry.exporters.base import ExportError, TestResult, display_url, post
from relaycast.telemetry.exporters.jsonrecord import record_json
from relaycast.telemetry.settings import DestinationConfig, WebhookOptions

MiB = 1024 * 1024
TIMESTAMP_HEADER = "x-relaycast-timestamp"
SIGNATURE_HEADER = "x-relaycast-signature"
TEST_BODY = b'{"records":[],"count":0,"test":true}'
_OURS = frozenset({"content-type", "content-length", "user-agent", TIMESTAMP_HEADER, SIGNATURE_HEADER})


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The `x-relaycast-signature` value for a body sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str | int, body: bytes, header: str, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """True when `header` (the `x-relaycast-signature` value) signs `body` sent at `timestamp` (the
    `x-relaycast-timestamp` value) with `secret`, and the timestamp is within `tolerance_s` of `now`."""
    try:
        ts = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    if not isinstance(header, str) or not header.startswith("sha256="):
        return False
    expected = sign(secret, ts, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode())


class WebhookExporter:
    kind = "webhook"
    # The pipeline bounds the items' total; the envelope and commas add a few bytes per record on top.
    max_batch_bytes = 4 * MiB - 64 * 1024
    max_age_s = None

    def __init__(
        self, dest: DestinationConfig, session: aiohttp.ClientSession, clock: Callable[[], float] = time.time
    ) -> None:
        assert isinstance(dest.options, WebhookOptions)
        self.dest = dest
        self.o: WebhookOptions = dest.options
        self._session = session
        self._clock = clock
        self._headers = {k: v for k, v in self.o.headers if k.lower() not in _OURS}
        self._headers["content-type"] = "application/json"
        self._headers["user-agent"] = "relaycast"
        self._where = display_url(self.o.url, with_path=False)
        self._what = f"webhook {self._where}"

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        return [record_json(record, privacy, tags, max_bytes=self.max_batch_bytes)]

    @staticmethod
    def body(items: list[bytes]) -> bytes:
        """`{"records":[...],"count":N}` from the encoded items, never parsed again."""
        return b'{"records":[' + b",".join(items) + b'],"count":' + str(len(items)).encode() + b"}"

    def headers(self, body: bytes) -> dict[str, str]:
        h = dict(self._headers)
        if self.o.secret:
            ts = int(self._clock())
            h[TIMESTAMP_HEADER] = str(ts)
            h[SIGNATURE_HEADER] = sign(self.o.secret, ts, body)
        return h

    async def send(self, items: list[bytes]) -> None:
        body = self.body(items)
        await post(self._session, self.o.url, body, self.headers(body), self.dest.timeout_s, self._what)

    async def test(self) -> TestResult:
        try:
            status, _ = await post(
                self._session, self.o.url, TEST_BODY, self.headers(TEST_BODY), self.dest.timeout_s, self._what
            )
        except ExportError as e:
            if e.status is not None:
                return TestResult(False, f"{self._where} answered HTTP {e.status}")
            reason = e.message.removeprefix(self._what).strip().removeprefix("unreachable:").strip()
            return TestResult(False, f"unreachable: {self._where} ({reason})")
        signed = " (signed)" if self.o.secret else ""
        return TestResult(True, f"ok: {self._where} accepted a test delivery{signed}, HTTP {status}")

    async def close(self) -> None:
        return None  # the session belongs to the caller
