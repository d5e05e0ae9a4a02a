"""ClickHouse: every request record as one row of a table relaycast creates, inserted over ClickHouse's HTTP
interface in batches (`INSERT ... FORMAT JSONEachRow`).

Settings are what a ClickHouse connection asks for: the HTTP(S) address (8123 plain, 8443 TLS, as on ClickHouse
Cloud), the user and password, the database and the table. The user and password default to `clickhouse-client`'s
own environment variables, CLICKHOUSE_USER and CLICKHOUSE_PASSWORD (ClickHouse/ClickHouse#48440, docs/en/interfaces/
cli.md). There is no standard variable for an HTTP address (CLICKHOUSE_HOST names a native-protocol host), so `url`
is required.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from relaycast.config_reader import ConfigError, Reader
from relaycast.redact import url_secrets
from relaycast.telemetry.kinds.base import KindSpec, env_or, need
from relaycast.telemetry.settings import url

DEFAULT_USER = "default"  # ClickHouse's built-in user
DEFAULT_DATABASE = "default"
DEFAULT_TABLE = "relaycast_requests"
# A plain identifier: quoted with backticks anyway, but never anything that would need escaping inside them.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True, slots=True)
class ClickHouseOptions:
    url: str  # http(s)://host:port of the HTTP interface
    user: str = DEFAULT_USER
    password: str = field(default="", repr=False)
    database: str = DEFAULT_DATABASE
    table: str = DEFAULT_TABLE

    def secrets(self) -> tuple[str, ...]:
        return (self.password, *url_secrets(self.url)) if self.password else url_secrets(self.url)


def identifier(r: Reader, value: Any, at: str) -> str:
    """A database or table name: letters, digits and underscores, not starting with a digit."""
    s = r.string(value, at)
    if not IDENTIFIER.match(s):
        raise ConfigError(
            at, f"'{s[:100]}' is not a plain ClickHouse name (letters, digits, _; not starting with a digit)"
        )
    return s


def parse(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], base: Path) -> ClickHouseOptions:
    address = url(
        r, need(r, m.get("url"), f"{at}.url", "url (the HTTP interface, e.g. http://127.0.0.1:8123)"), f"{at}.url"
    )
    u = urlsplit(address)
    if u.username or u.password or u.query or u.path.strip("/"):
        raise ConfigError(
            f"{at}.url",
            "give only scheme, host and port (e.g. https://abc.clickhouse.cloud:8443); set user and "
            "password as their own settings",
        )
    user = env_or(m, "user", env, "CLICKHOUSE_USER", default=DEFAULT_USER)
    password = env_or(m, "password", env, "CLICKHOUSE_PASSWORD", default="")
    return ClickHouseOptions(
        url=address.rstrip("/"),
        user=r.string(user, f"{at}.user"),
        password=r.string(password, f"{at}.password") if password != "" else "",
        database=identifier(r, m.get("database", DEFAULT_DATABASE), f"{at}.database"),
        table=identifier(r, m.get("table", DEFAULT_TABLE), f"{at}.table"),
    )


SPEC = KindSpec(
    kind="clickhouse",
    title="ClickHouse",
    keys=frozenset({"url", "user", "password", "database", "table"}),
    parse=parse,
    exporter="relaycast.telemetry.exporters.clickhouse:ClickHouseExporter",
    auth_hint="check user and password (or CLICKHOUSE_USER / CLICKHOUSE_PASSWORD)",
    # ClickHouse wants few, large inserts (its docs: about one a second at most); a destination's own wins
    defaults=MappingProxyType({"flush_interval": 2.0}),
)
