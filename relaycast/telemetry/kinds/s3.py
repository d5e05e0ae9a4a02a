"""Amazon S3 and S3-compatible storage (MinIO, Cloudflare R2, Ceph, ...): request records as JSON-lines objects in
Hive-style date/hour partitions (the exporter, `relaycast.telemetry.exporters.s3`, owns the layout).

    - name: archive
      kind: s3
      bucket: my-llm-logs                  # required
      prefix: relaycast/                   # default
      region: eu-west-1                    # default AWS_REGION, AWS_DEFAULT_REGION, the profile's*, us-east-1
      endpoint_url: http://127.0.0.1:9000  # MinIO, R2, ...; default AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS
      compression: gzip                    # or none
      # access_key_id / secret_access_key / session_token, or profile: else the standard AWS credential chain

Credentials come from botocore's standard chain (environment, shared files and profiles, SSO, web identity,
container and instance metadata) unless the keys are configured. Configured keys leave profiles out entirely:
`profile` is refused beside them, AWS_PROFILE and the files under ~/.aws are not read, and (*) the region is
`region`, else AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1. Without keys, a profile's region comes after
the two variables. botocore is an optional dependency: it is imported only when a config names an `s3`
destination, and its absence is a plain config error. `flush_interval` and `timeout` default to 30 s here
(`COMMON_DEFAULTS`).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.redact import url_secrets
from relaycast.telemetry.kinds.base import KindSpec, env_or, need
from relaycast.telemetry.settings import choice, url

ADDRESSING = ("auto", "path", "virtual")
COMPRESSION = ("gzip", "none")
# The common settings this kind would rather default differently: S3 bills every PUT and a query engine pays per
# object opened, so a batch waits up to 30 s to fill (a few large objects, not two small ones a second), and a
# large object gets 30 s to upload. A destination's own `flush_interval` / `timeout` win.
COMMON_DEFAULTS: Mapping[str, Any] = MappingProxyType({"flush_interval": 30.0, "timeout": 30.0})
# Bucket names: 3-63 characters, lower-case letters, digits, dots and hyphens, starting and ending with a letter or
# digit (https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html). S3-compatible stores are
# looser (MinIO and R2 take the same rules; Ceph may allow upper case and underscores): only what would break the
# URL or the signature is refused here.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


@dataclass(frozen=True, slots=True)
class S3Options:
    bucket: str
    prefix: str = "relaycast/"  # "" or ending in "/"
    region: str | None = None  # None: the profile's region (chain only; botocore), else us-east-1
    endpoint_url: str | None = None  # None: AWS (https://s3.<region>.amazonaws.com)
    addressing_style: str = "auto"  # auto: virtual-hosted on AWS (path for dotted names), path on a custom endpoint
    compression: str = "gzip"
    profile: str | None = None  # chain only: a named profile of ~/.aws/config (else AWS_PROFILE, else the default)
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def secrets(self) -> tuple[str, ...]:
        """The secret key, the session token and any password in the endpoint URL. The access key id is not a
        secret (AWS prints it in errors and CloudTrail): left readable, it says which key was refused."""
        return tuple(s for s in (self.secret_access_key, self.session_token, *url_secrets(self.endpoint_url)) if s)


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> S3Options:
    if importlib.util.find_spec("botocore") is None:
        raise ConfigError(f"{at}.kind", "an s3 destination needs botocore: pip install 'relaycast[s3]'")
    bucket = need(r, m.get("bucket"), f"{at}.bucket", "bucket (the S3 bucket's name)")
    if bucket.startswith("s3://") or not _BUCKET.fullmatch(bucket):
        raise ConfigError(f"{at}.bucket", f"'{bucket}' is not a bucket name (the prefix goes in `prefix`)")
    prefix = r.string(m.get("prefix", "relaycast/"), f"{at}.prefix").strip("/")
    region = env_or(m, "region", env, "AWS_REGION", "AWS_DEFAULT_REGION")
    endpoint = m.get("endpoint_url")
    # botocore's service-specific endpoint variables, unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS says not to
    # (botocore/configprovider.py, EnvironmentProvider / `ignore_configured_endpoint_urls`).
    if endpoint is None and env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() != "true":
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    key_id, secret = m.get("access_key_id"), m.get("secret_access_key")
    if (key_id is None) != (secret is None):
        missing = "secret_access_key" if secret is None else "access_key_id"
        raise ConfigError(f"{at}.{missing}", "required with the other key (or leave both out: the AWS chain)")
    token = m.get("session_token")
    if token is not None and key_id is None:
        raise ConfigError(f"{at}.session_token", "needs access_key_id and secret_access_key")
    profile = m.get("profile")
    if profile is not None and key_id is not None:
        raise ConfigError(f"{at}.profile", "set either a profile or the keys, not both")
    return S3Options(
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        region=(r.string(region, f"{at}.region").strip() or None) if region is not None else None,
        endpoint_url=url(r, endpoint, f"{at}.endpoint_url").rstrip("/") if endpoint is not None else None,
        addressing_style=choice(r, m.get("addressing_style", "auto"), f"{at}.addressing_style", ADDRESSING),
        compression=choice(r, m.get("compression", "gzip"), f"{at}.compression", COMPRESSION),
        profile=r.string(profile, f"{at}.profile") if profile is not None else None,
        access_key_id=need(r, key_id, f"{at}.access_key_id", "access_key_id") if key_id is not None else None,
        secret_access_key=need(r, secret, f"{at}.secret_access_key", "secret_access_key")
        if secret is not None
        else None,
        session_token=r.string(token, f"{at}.session_token") if token is not None else None,
    )


SPEC = KindSpec(
    kind="s3",
    title="Amazon S3",
    keys=frozenset(
        {
            "bucket",
            "prefix",
            "region",
            "endpoint_url",
            "addressing_style",
            "compression",
            "profile",
            "access_key_id",
            "secret_access_key",
            "session_token",
        }
    ),
    parse=parse,
    exporter="relaycast.telemetry.exporters.s3:S3Exporter",
    auth_hint="check the access key and its s3:PutObject permission on the bucket and prefix",
    defaults=COMMON_DEFAULTS,
)
