"""New Relic: OTLP traces into a New Relic account, through its native OTLP endpoint.

From https://docs.newrelic.com/docs/opentelemetry/best-practices/opentelemetry-otlp/: the account's license key in
the `api-key` header; OTLP/HTTP protobuf to `https://otlp.nr-data.net:4318` (US), `https://otlp.eu01.nr-data.net:4318`
(EU) or `https://gov-otlp.nr-data.net:4318` (US FedRAMP), traces at `/v1/traces`. EU license keys begin with
`eu01`, so the region follows the key when the config names none. The key falls back on `NEW_RELIC_LICENSE_KEY`,
the variable New Relic's agents read.

Limits (.../best-practices/opentelemetry-best-practices-compression/ and ...-attributes/): a payload of at most
1 MB (10^6 bytes), gzip supported; attribute values of at most 4095 characters (longer ones are truncated by New
Relic). Bodies here are kept under 1 MB before compression, so they stay under it after.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from relaycast.config_reader import Reader
from relaycast.telemetry.kinds.base import KindSpec, env_or, need
from relaycast.telemetry.settings import OtlpOptions, choice, url

REGIONS = MappingProxyType(
    {
        "us": "https://otlp.nr-data.net:4318",
        "eu": "https://otlp.eu01.nr-data.net:4318",
        "fedramp": "https://gov-otlp.nr-data.net:4318",
    }
)
MAX_PAYLOAD = 1_000_000  # bytes, New Relic's documented limit
MAX_BODY = MAX_PAYLOAD - 64 * 1024  # uncompressed, with room for framing


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> OtlpOptions:
    key = need(
        r,
        env_or(m, "license_key", env, "NEW_RELIC_LICENSE_KEY"),
        f"{at}.license_key",
        "the account's ingest license key (or NEW_RELIC_LICENSE_KEY)",
    )
    if m.get("endpoint") is not None:
        e = url(r, m["endpoint"], f"{at}.endpoint").rstrip("/")
        endpoint = e if e.endswith("/v1/traces") else e + "/v1/traces"
    else:
        default = "eu" if key.lower().startswith("eu01") else "us"
        region = choice(r, m.get("region", default), f"{at}.region", tuple(REGIONS))
        endpoint = REGIONS[region] + "/v1/traces"
    return OtlpOptions(
        endpoint=endpoint,
        headers=(("api-key", key),),
        backend="newrelic",
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        credentials=(key,),
        compression="gzip",
        max_body_bytes=MAX_BODY,
    )


SPEC = KindSpec(
    kind="newrelic",
    title="New Relic",
    keys=frozenset({"license_key", "region", "endpoint", "service"}),
    parse=parse,
    auth_hint="check license_key (NEW_RELIC_LICENSE_KEY): an ingest license key of the account (not a user key), "
    "and the region (us, eu, fedramp) the account lives in",
)
