"""The `store:` section of the config: where requests are kept for the analytics API, dashboard and report.

    store:
      path: relaycast.db          # SQLite, beside the config file unless absolute (the default)
      # url: postgresql://relaycast@127.0.0.1:5432/relaycast   (instead: several replicas share one store)
      retention_days: 30          # older requests and rollups are deleted, hourly
      privacy_mode: false         # true: prompts and completions are not stored
      enabled: true
      connect_timeout_s: 5        # Postgres: connecting, TLS and authentication (at least 2)
      read_timeout_s: 10          # one read (analytics, keys, monitors, budgets), then 503 store_unavailable
      write_timeout_s: 30         # one batch written with its rollups, then abandoned and retried
      lock_timeout_s: 10          # waiting for a lock: Postgres lock_timeout, SQLite's busy timeout
      keepalive_idle_s: 10        # Postgres TCP keepalives: first probe after this long idle,
      keepalive_interval_s: 5     # then one every this long,
      keepalive_count: 3          # and the connection is dead after this many unanswered

`RELAYCAST_STORE_URL` in the environment sets `url` when the config does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relaycast.config_reader import ConfigError, Reader


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: str | None = None  # SQLite file; None when `url` is set
    url: str | None = field(default=None, repr=False)  # postgresql://...
    retention_days: float = 30.0
    privacy_mode: bool = False
    queue_size: int = 100_000
    batch_size: int = 2_000
    flush_interval_s: float = 0.5
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    write_timeout_s: float = 30.0
    lock_timeout_s: float = 10.0
    keepalive_idle_s: int = 10
    keepalive_interval_s: int = 5
    keepalive_count: int = 3

    @property
    def dialect(self) -> str:
        return "postgres" if self.url else "sqlite"

    def display(self) -> str:
        """Where the store is, with any password removed."""
        if not self.url:
            return f"sqlite:{self.path}"
        u = urlsplit(self.url)
        host = u.hostname or ""
        port = f":{u.port}" if u.port else ""
        user = f"{u.username}@" if u.username else ""
        return f"{u.scheme}://{user}{host}{port}{u.path}"

    def secrets(self) -> tuple[str, ...]:
        if self.url:
            pw = urlsplit(self.url).password
            if pw:
                return (pw,)
        return ()


def parse_store(r: Reader, raw: Any, env: Mapping[str, str], source: str | None) -> StoreConfig | None:
    base = Path(source).parent if source else Path(".")
    m: dict[str, Any] = {}
    if raw is not None:
        if raw is False:
            return None
        m = r.mapping(
            raw,
            "store",
            {
                "path",
                "url",
                "retention_days",
                "privacy_mode",
                "enabled",
                "queue_size",
                "batch_size",
                "flush_interval_s",
                "connect_timeout_s",
                "read_timeout_s",
                "write_timeout_s",
                "lock_timeout_s",
                "keepalive_idle_s",
                "keepalive_interval_s",
                "keepalive_count",
            },
        )
        if m.get("enabled") is not None and not r.boolean(m["enabled"], "store.enabled"):
            return None
    url = m.get("url") or env.get("RELAYCAST_STORE_URL") or None
    if url is not None:
        url = r.string(url, "store.url")
        scheme = urlsplit(url).scheme
        if scheme not in ("postgresql", "postgres"):
            raise ConfigError("store.url", f"must be a postgresql:// URL (SQLite takes `path`), got scheme '{scheme}'")
        if m.get("path") is not None:
            raise ConfigError("store", "set either `path` (SQLite) or `url` (Postgres), not both")
    path = None
    if url is None:
        p = Path(r.string(m.get("path", "relaycast.db"), "store.path"))
        path = str(p if p.is_absolute() else base / p)
    retention = r.number(m.get("retention_days", 30), "store.retention_days")
    if retention <= 0:
        raise ConfigError("store.retention_days", "must be more than 0")
    return StoreConfig(
        path=path,
        url=url,
        retention_days=retention,
        privacy_mode=r.boolean(m.get("privacy_mode", False), "store.privacy_mode"),
        queue_size=r.integer(m.get("queue_size", 100_000), "store.queue_size", 100, 10_000_000),
        batch_size=r.integer(m.get("batch_size", 2_000), "store.batch_size", 1, 100_000),
        flush_interval_s=r.number(m.get("flush_interval_s", 0.5), "store.flush_interval_s"),
        connect_timeout_s=r.number(m.get("connect_timeout_s", 5), "store.connect_timeout_s"),
        read_timeout_s=r.number(m.get("read_timeout_s", 10), "store.read_timeout_s"),
        write_timeout_s=r.number(m.get("write_timeout_s", 30), "store.write_timeout_s"),
        lock_timeout_s=r.number(m.get("lock_timeout_s", 10), "store.lock_timeout_s"),
        keepalive_idle_s=r.integer(m.get("keepalive_idle_s", 10), "store.keepalive_idle_s", 1, 3600),
        keepalive_interval_s=r.integer(m.get("keepalive_interval_s", 5), "store.keepalive_interval_s", 1, 3600),
        keepalive_count=r.integer(m.get("keepalive_count", 3), "store.keepalive_count", 1, 100),
    )
