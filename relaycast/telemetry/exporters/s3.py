"""S3: batches of request records as JSON-lines objects, in Hive-style date and hour partitions.

Each batch the pipeline hands over (at most `max_batch_records` records and `max_batch_bytes` of JSON lines, sent
when full or when `flush_interval` passes) becomes one object per UTC hour its records started in, usually one:

    <prefix>dt=2025-10-09/hour=08/20251009T085320Z-3f9a1c0b7d2e4a61.jsonl.gz

one record per line in the shape `jsonrecord` documents (`"schema": "relaycast.request.v1"`). Each item `encode`
makes is one whole line, its newline included, so the pipeline's count of a batch's bytes is exactly the object's
size before gzip: an object's lines never pass `max_batch_bytes`. The partition is the
hour of each record's `started_at` (UTC), so a batch that spans an hour boundary is split in two: a query that
filters on `dt` and `hour` finds every record of that hour in that hour's folder and nowhere else. The name starts
with the object's earliest record time (objects sort by time in a listing) and ends with the first 64 bits of the
SHA-256 of its uncompressed lines: the same records always make the same name, so a batch sent again (a retry after
a timeout whose PUT had landed, a replay from the spool) overwrites its own object instead of adding a duplicate.

Compression (`compression: gzip`, the default) is gzip of the whole object, named `.jsonl.gz`, with
`content-type: application/gzip` and no `content-encoding` (so no HTTP client unzips it on download and a reader
unzips it once, by its extension, as Athena, Snowflake, ClickHouse and Spark do). JSON records shrink about
five- to tenfold, and S3 bills storage while Athena bills bytes scanned.

Requests: one signed `PUT /<bucket>/<key>` per object (AWS Signature Version 4, signed by botocore's
`S3SigV4Auth`, payload SHA-256 signed, `content-md5` for S3's integrity check), sent through the pipeline's aiohttp
session (so HTTP(S)_PROXY apply, and a redirect is never followed). Credentials come from botocore's standard chain
(`botocore.session.Session.get_credentials`: environment, shared files and profiles, SSO, web identity, container
and instance metadata) unless the keys are configured. Resolving and refreshing them may block on the network
(instance metadata, STS), and gzip and hashing an 8 MiB body take tens of milliseconds: all of it runs in a worker
thread (`asyncio.to_thread`), never on the event loop.

Answers (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html): 2xx is success; SlowDown,
InternalError, ServiceUnavailable, RequestTimeout, RequestTimeTooSkewed (this machine's clock is off: the batch
waits in the spool until NTP fixes it), 408, 429 and 5xx are retried (the pipeline's backoff); AccessDenied,
NoSuchBucket and a bucket in another region are not, each with a plain message. No credentials found is retried
(instance metadata may come up late; the spool keeps the records meanwhile).

Refused credentials (InvalidAccessKeyId, SignatureDoesNotMatch, InvalidToken, ExpiredToken): configured keys
cannot change while the exporter lives, so their refusal is final (not retried). Credentials from the chain can: a
shared credentials file is rewritten by a key rotation or a tool that renews session keys. So the refused
credentials are forgotten, the chain is asked again at once, and if it now gives other credentials the object is
signed anew and sent once more, right away. If the chain gives the same credentials, the refusal stands: a wrong
key is not retried (the batch is dropped, counted as rejected, as with configured keys), while an expired session
token is (the spool keeps the batch; every later try asks the chain again, so the records go out as soon as the
credentials are renewed). Each refusal asks the chain once: a wrong key costs one re-resolution per batch, never a
loop.

Test Connection writes an empty object, `<prefix>_relaycast_connection_test` (the same key each time, so it never
accumulates), rather than asking HeadBucket: the least-privilege policy for a log writer grants only
`s3:PutObject` on `<bucket>/<prefix>*`, under which HeadBucket (it needs `s3:ListBucket`) is refused though
delivery works. The PUT proves exactly what delivery needs. Its name is outside every `dt=` partition and starts
with an underscore (hidden to Spark and Hive), and being empty it adds no row to a table that reads it anyway.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import botocore.session  # type: ignore[import-untyped]  # botocore has no type information
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials, ReadOnlyCredentials  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
from yarl import URL

from relaycast.records import RequestRecord
from relaycast.retry import RETRYABLE_STATUS, retry_after_seconds
from relaycast.telemetry.exporters.base import ExportError, TestResult, display_url
from relaycast.telemetry.exporters.jsonrecord import record_json
from relaycast.telemetry.kinds.s3 import S3Options
from relaycast.telemetry.settings import DestinationConfig

MiB = 1024 * 1024
DEFAULT_REGION = "us-east-1"  # botocore's and the AWS CLI's fallback for S3
TEST_KEY = "_relaycast_connection_test"
# The top-level `started_unix_ns` of a `jsonrecord` item. JSON strings never hold an unescaped quote, so this can
# only match a key; the top-level one comes before every nested object (params, trace metadata), so the first match
# is it.
_STARTED = re.compile(rb'"started_unix_ns":(-?\d{1,20})')
_CODE = re.compile(rb"<Code>([^<]{1,128})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{1,512})</Message>")
_REGION = re.compile(rb"<Region>([a-z0-9-]{1,40})</Region>")
# S3 error codes worth another try (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html and
# https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorBestPractices.html: "retry InternalErrors", back off on
# SlowDown); RequestTimeTooSkewed (403: "the difference between the request time and the server's time is too
# large"), because the same batch succeeds once the clock is synced and each try is signed with the time then.
RETRYABLE_CODES = frozenset(
    {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted", "RequestTimeTooSkewed"}
)
# The codes S3 answers when it refuses the signing credentials themselves (same page): the key id unknown (deleted,
# deactivated, rotated), the secret not the key's, the session token malformed or expired.
EXPIRED_CODES = frozenset({"ExpiredToken", "TokenRefreshRequired"})
REFUSED_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", *EXPIRED_CODES})


class NoCredentials(Exception):
    """The AWS credential chain found nothing (or failed): said plainly, retried."""


class CredentialsRefused(ExportError):
    """S3 refused the credentials that signed the request (one of `REFUSED_CODES`)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """One object, ready to PUT, with the credentials that signed it (to tell, when S3 refuses them, whether the
    chain has other ones by now)."""

    key: str
    url: str
    body: bytes
    content_type: str
    headers: dict[str, str] = field(repr=False)
    records: int
    source: Credentials = field(repr=False)  # the exporter's credentials object that was asked
    signer: ReadOnlyCredentials = field(repr=False)  # what it gave: the key id, secret and token used


def started_ns(item: bytes, default: int) -> int:
    m = _STARTED.search(item)
    return int(m.group(1)) if m else default


def hour_groups(items: list[bytes], now_ns: int) -> list[tuple[int, list[bytes]]]:
    """The items grouped by the UTC hour their record started in (hours in order, items in order within each), with
    each group's earliest start (unix ns)."""
    groups: dict[int, list[bytes]] = {}
    earliest: dict[int, int] = {}
    for it in items:
        ns = started_ns(it, now_ns)
        hour = ns // 3_600_000_000_000
        groups.setdefault(hour, []).append(it)
        earliest[hour] = min(earliest.get(hour, ns), ns)
    return [(earliest[h], groups[h]) for h in sorted(groups)]


def object_key(prefix: str, earliest_ns: int, lines: bytes, compression: str) -> str:
    """`<prefix>dt=YYYY-MM-DD/hour=HH/YYYYMMDDTHHMMSSZ-<16 hex of SHA-256(lines)>.jsonl[.gz]`."""
    t = datetime.fromtimestamp(earliest_ns // 1_000_000_000, tz=UTC)
    digest = hashlib.sha256(lines).hexdigest()[:16]
    ext = ".jsonl.gz" if compression == "gzip" else ".jsonl"
    return f"{prefix}dt={t:%Y-%m-%d}/hour={t:%H}/{t:%Y%m%dT%H%M%SZ}-{digest}{ext}"


def line(record_json_bytes: bytes) -> bytes:
    """One JSON-lines line: the record and its newline (a JSON text never holds a raw newline)."""
    return record_json_bytes + b"\n"


def jsonl(items: list[bytes]) -> bytes:
    """The object's lines: the items as they are, each already a whole line (`line`)."""
    return b"".join(it if it.endswith(b"\n") else it + b"\n" for it in items)


def aws_host(region: str) -> str:
    """S3's regional endpoint host (https://docs.aws.amazon.com/general/latest/gr/s3.html); the China regions
    live under amazonaws.com.cn."""
    return f"s3.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")


def object_url(o: S3Options, region: str, key: str) -> str:
    """The object's URL, the key percent-encoded as botocore does (`/` and `~` kept). Virtual-hosted style on AWS
    (https://docs.aws.amazon.com/AmazonS3/latest/userguide/VirtualHosting.html) unless the bucket name has dots
    (its TLS certificate would not match) or is not a DNS label; path style on a custom endpoint (MinIO, R2 and
    the like serve it without DNS set up per bucket), unless `addressing_style` says otherwise."""
    path = quote(key, safe="/~")
    style = o.addressing_style
    if style == "auto":
        dns_ok = re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", o.bucket) is not None
        style = "virtual" if o.endpoint_url is None and dns_ok else "path"
    u = urlsplit(o.endpoint_url or f"https://{aws_host(region)}")
    host = u.netloc.rpartition("@")[2]  # never user:password@ (aiohttp would add Basic auth beside the signature)
    if style == "path":
        return f"{u.scheme}://{host}{u.path}/{quote(o.bucket, safe='')}/{path}"
    return f"{u.scheme}://{o.bucket}.{host}{u.path}/{path}"


class S3Exporter:
    kind = "s3"
    # The pipeline's bound on one batch's lines (the items, newlines included: the object before gzip): a few MiB
    # per object is what query engines read best, and it bounds the memory of a batch in flight.
    max_batch_bytes = 8 * MiB
    max_age_s = None

    def __init__(
        self, dest: DestinationConfig, session: aiohttp.ClientSession, clock: Callable[[], int] = time.time_ns
    ) -> None:
        assert isinstance(dest.options, S3Options)
        self.dest = dest
        self.o: S3Options = dest.options
        self._session = session
        self._clock = clock
        self._lock = threading.Lock()  # credential resolution, in whichever worker thread runs it
        self._credentials: Credentials | None = None
        # parse() takes both keys or neither: without them the credentials come from the chain, and may change
        self._chain = not (self.o.access_key_id and self.o.secret_access_key)
        self._region: str | None = self.o.region
        self._where = display_url(self.o.endpoint_url, with_path=False) if self.o.endpoint_url else "AWS S3"

    def encode(self, record: RequestRecord, privacy: bool, tags: tuple[tuple[str, str], ...]) -> list[bytes]:
        """One item: the record's line, newline included, so the pipeline counts the object's exact size."""
        return [line(record_json(record, privacy, tags, max_bytes=self.max_batch_bytes - 1))]

    async def send(self, items: list[bytes]) -> None:
        if not items:
            return
        for earliest, group in hour_groups(items, self._clock()):
            obj = await self._prepare_off_loop(earliest, group)
            await self._put_renewing(obj)

    async def test(self) -> TestResult:
        target = f"s3://{self.o.bucket}/{self.o.prefix}{TEST_KEY}"
        try:
            obj = await asyncio.to_thread(self._prepare_test)
        except NoCredentials as e:
            return TestResult(False, str(e))
        try:
            await self._put_renewing(obj)
        except ExportError as e:
            return TestResult(False, e.message)
        return TestResult(True, f"ok: wrote an empty test object to {target} ({self._where}, {self._region})")

    async def close(self) -> None:
        return None  # the session belongs to the caller; botocore holds no connection here

    # --- the PUT, on the event loop ----------------------------------------------------------------

    async def _prepare_off_loop(self, earliest: int, group: list[bytes]) -> Prepared:
        try:
            return await asyncio.to_thread(self._prepare, earliest, group)
        except NoCredentials as e:
            raise ExportError(str(e), retryable=True) from None

    async def _put_renewing(self, obj: Prepared) -> None:
        """The PUT. When S3 refuses credentials from the chain, the chain is asked again (`_renewed`); if it gives
        other credentials, the object goes once more, signed with them. Otherwise the refusal stands."""
        try:
            await self._put(obj)
            return
        except CredentialsRefused as e:
            if not self._chain:
                raise
            refused = e
        fresh = await asyncio.to_thread(self._renewed, obj)
        if fresh is None:
            raise refused
        await self._put(fresh)

    async def _put(self, obj: Prepared) -> None:
        what = f"s3://{self.o.bucket}/{obj.key}"
        timeout = aiohttp.ClientTimeout(total=self.dest.timeout_s)
        try:
            # encoded=True: the URL goes out exactly as signed (yarl would otherwise re-quote the `=` of dt=...)
            async with self._session.put(
                URL(obj.url, encoded=True), data=obj.body, headers=obj.headers, timeout=timeout, allow_redirects=False
            ) as resp:
                raw = await resp.read()
                if resp.status >= 300:
                    raise self._error(resp.status, raw, resp.headers)
        except ExportError:
            raise
        except TimeoutError:
            raise ExportError(
                f"{self._where} did not answer within {self.dest.timeout_s:g}s writing {what}", retryable=True
            ) from None
        except (aiohttp.ClientError, OSError) as e:
            host = display_url(obj.url, with_path=False)
            raise ExportError(f"unreachable: {host} ({type(e).__name__})", retryable=True) from None

    def _error(self, status: int, body: bytes, headers: Any) -> ExportError:
        """An S3 error answer, said plainly and classified for the retry rules."""
        code_m, msg_m = _CODE.search(body), _MESSAGE.search(body)
        code = code_m.group(1).decode(errors="replace") if code_m else ""
        detail = msg_m.group(1).decode(errors="replace") if msg_m else ""
        bucket = f"bucket '{self.o.bucket}'"
        region_m = _REGION.search(body)
        elsewhere = headers.get("x-amz-bucket-region") or (region_m.group(1).decode() if region_m else None)
        retryable = code in RETRYABLE_CODES or (not code and status in RETRYABLE_STATUS) or status >= 500
        # An expired token from the chain renews (a refreshed role, a rewritten credentials file): retried, asking
        # the chain each time. A configured one never will.
        if code in EXPIRED_CODES:
            retryable = self._chain
        if code == "NoSuchBucket" or (status == 404 and not code):
            msg = f"{bucket} does not exist at {self._where}"
        elif elsewhere and elsewhere != self._region and status in (301, 400):
            msg = f"{bucket} is in region {elsewhere}, not {self._region}: set `region: {elsewhere}`"
        elif code == "InvalidAccessKeyId":
            msg = "credentials refused: the access key id is unknown to S3 (check the key, or the endpoint_url)"
        elif code == "SignatureDoesNotMatch":
            msg = "credentials refused: the secret access key does not match the access key id"
        elif code == "InvalidToken":
            msg = "credentials refused: the session token is invalid"
        elif code in EXPIRED_CODES:
            msg = "credentials refused: the session token is expired" + (
                " (the AWS credential chain is asked again on each try)"
                if self._chain
                else " (set a current session_token, or leave the keys out to use the AWS credential chain)"
            )
        elif code == "RequestTimeTooSkewed":
            msg = "request refused: this machine's clock is too far from S3's (sync it with NTP; retried meanwhile)"
        elif code == "AccessDenied" or status == 403:
            msg = (
                f"access denied: the credentials may not write to s3://{self.o.bucket}/{self.o.prefix} "
                "(they need s3:PutObject there; a bucket policy or KMS key may also refuse)"
            )
        elif code == "SlowDown":
            msg = f"{self._where} asked to slow down (HTTP {status} SlowDown)"
        elif 300 <= status < 400:
            msg = f"{self._where} answered a redirect (HTTP {status} {code}), not followed: check endpoint_url/region"
            retryable = code == "TemporaryRedirect"  # a new bucket's DNS settling
        else:
            msg = f"{self._where} answered HTTP {status}" + (f" {code}: {detail}" if code else "")
        error = CredentialsRefused if code in REFUSED_CODES else ExportError
        return error(msg, retryable=retryable, status=status, retry_after=retry_after_seconds(headers))

    # --- in a worker thread ------------------------------------------------------------------------

    def _prepare(self, earliest: int, group: list[bytes]) -> Prepared:
        lines = jsonl(group)
        key = object_key(self.o.prefix, earliest, lines, self.o.compression)
        if self.o.compression == "gzip":
            # mtime=0: the same lines make the same bytes, so a resent batch is the same object
            body, ctype = gzip.compress(lines, compresslevel=6, mtime=0), "application/gzip"
        else:
            body, ctype = lines, "application/x-ndjson"
        return self._signed(key, body, ctype, len(group))

    def _renewed(self, refused: Prepared) -> Prepared | None:
        """After S3 refused the chain's credentials: forget them (unless another thread already has), ask the
        chain again, and sign the object anew if that gave other credentials; None if it gave the same ones (or
        none: the next batch asks again, and says so)."""
        with self._lock:
            if self._credentials is refused.source:
                self._credentials = None
        try:
            fresh = self._signed(refused.key, refused.body, refused.content_type, refused.records)
        except NoCredentials:
            return None
        return fresh if fresh.signer != refused.signer else None

    def _prepare_test(self) -> Prepared:
        return self._signed(f"{self.o.prefix}{TEST_KEY}", b"", "application/octet-stream", 0)

    def _signed(self, key: str, body: bytes, content_type: str, records: int) -> Prepared:
        source, creds, region = self._resolve()
        url = object_url(self.o, region, key)
        req = AWSRequest(
            method="PUT",
            url=url,
            data=body,
            headers={
                "content-type": content_type,
                "content-md5": base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode(),
            },
        )
        # botocore/auth.py S3SigV4Auth: adds x-amz-date, x-amz-security-token, x-amz-content-sha256 (the payload's
        # SHA-256: signed, since nothing here streams) and the Authorization header.
        S3SigV4Auth(creds, "s3", region).add_auth(req)
        headers = {k: str(v) for k, v in req.headers.items()}
        headers["user-agent"] = "relaycast"
        return Prepared(key, url, body, content_type, headers, records, source, creds)

    def _resolve(self) -> tuple[Credentials, ReadOnlyCredentials, str]:
        """The credentials object, what it gives as of now (a refreshable set renews itself here, which may call STS
        or instance metadata: a worker thread) and the region. With configured keys, profiles play no part: the
        region is the configured one (or AWS_REGION / AWS_DEFAULT_REGION, read by parse), else us-east-1."""
        with self._lock:
            if self._credentials is None or self._region is None:
                if self.o.access_key_id and self.o.secret_access_key:
                    self._credentials = Credentials(
                        self.o.access_key_id, self.o.secret_access_key, self.o.session_token
                    )
                    self._region = self._region or DEFAULT_REGION
                else:
                    self._from_chain()
            creds = self._credentials
            region = self._region or DEFAULT_REGION
        assert creds is not None
        try:
            return creds, creds.get_frozen_credentials(), region
        except BotoCoreError as e:
            raise NoCredentials(f"AWS credentials could not be refreshed: {e}") from None

    def _from_chain(self) -> None:
        """botocore's standard chain (botocore/credentials.py `create_credential_resolver`), in a new session so
        that the files are read again; kept until S3 refuses them (`_renewed`). Nothing found is not remembered,
        so the next batch looks again. The region, unless configured or in the environment: the profile's."""
        try:
            session = botocore.session.Session(profile=self.o.profile)
            if self._region is None:
                self._region = session.get_config_variable("region") or DEFAULT_REGION
            found = session.get_credentials()
        except BotoCoreError as e:
            raise NoCredentials(f"AWS credentials could not be loaded: {e}") from None
        if found is None:
            raise NoCredentials(
                "no AWS credentials found: set access_key_id and secret_access_key, AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role"
            )
        self._credentials = found
