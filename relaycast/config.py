"""Configuration: YAML with ${ENV} references, validated once at load into frozen objects.

Every problem is reported with the exact place, e.g. `models[2].targets[0]: unknown provider 'opnai'`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.catalog import ModelPrice
from relaycast.costs.settings import parse_prices
from relaycast.keys.settings import GatewayKey, parse_keys, secret_or_hash
from relaycast.limits.settings import LimitsConfig, parse_limits
from relaycast.monitors.settings import MonitorsConfig, parse_monitors
from relaycast.providers.settings import DEFAULT_UPSTREAM_BUFFER, ProviderConfig, parse_providers
from relaycast.routing.settings import Route, RoutingSettings, parse_routes, parse_routing
from relaycast.store.settings import StoreConfig, parse_store
from relaycast.telemetry.settings import BroadcastConfig, MetricsConfig, parse_broadcast, parse_metrics

__all__ = ["Config", "ConfigError", "ServerConfig", "load", "load_or_say", "parse"]

DEFAULT_MAX_BODY = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = DEFAULT_MAX_BODY
    insecure: bool = False
    # Host names the gateway answers to; () means the default: loopback names when bound to loopback, the bound
    # address otherwise, any when bound to 0.0.0.0/::. ("*",) allows any.
    allowed_hosts: tuple[str, ...] = ()
    # Connection guards (server/guards.py): seconds and bytes a client may take before it is answered 408/431/503.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 75.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000
    # Bytes of upstream answers (non-streaming chat, embeddings, error bodies) held at once, across all requests.
    max_upstream_buffer_bytes: int = DEFAULT_UPSTREAM_BUFFER
    # On SIGTERM: seconds the requests in flight get to finish (streams included; then they are cut), then seconds
    # the telemetry gets to send and write what it holds (then it spools what it could not send and counts the rest).
    drain_timeout: float = 30.0
    flush_timeout: float = 10.0
    # The telemetry process's CPU priority against the workers': "auto", "idle" (Linux SCHED_IDLE: only the CPU no
    # worker wants) or a nice increment 0..19 (relaycast.server.telemetry_process.lower_priority).
    telemetry_priority: str | int = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, Route]
    keys: tuple[GatewayKey, ...] = ()
    # Whether requests need a key (`keys.registry`): None (unset) once a key exists or existed; True always;
    # False only while a key exists (the gateway reopens when the last one is deleted).
    keys_required: bool | None = None
    admin_key_sha256: str | None = field(default=None, repr=False)
    source: str | None = None
    broadcast: BroadcastConfig | None = None
    routing: RoutingSettings | None = None
    store: StoreConfig | None = None
    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: MappingProxyType({}))
    dashboard_secret: str | None = field(default=None, repr=False)  # signs dashboard sessions (random if unset)
    monitors: MonitorsConfig | None = None
    limits: LimitsConfig | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def redis_url(self) -> str | None:
        """The one Redis (limits, and the routing health replicas share): the top-level `redis_url`,
        `limits.redis_url`, or $RELAYCAST_REDIS_URL, resolved when the config is read."""
        return self.limits.redis_url if self.limits is not None else None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this config holds, for the redactor (which also masks their encoded forms)."""
        from relaycast.redact import proxy_secrets, url_secrets

        provider = tuple(s for p in self.providers.values() for s in p.secrets())
        dests = self.broadcast.destinations if self.broadcast else ()
        store = self.store.secrets() if self.store else ()
        dash = (self.dashboard_secret,) if self.dashboard_secret else ()
        mon = self.monitors.secrets() if self.monitors else ()
        lim = self.limits.secrets() if self.limits else ()
        # A password given as a query parameter (`?password=`) rather than in the userinfo.
        urls = url_secrets(self.store.url if self.store else None) + url_secrets(self.redis_url)
        urls += proxy_secrets()
        return provider + tuple(s for d in dests for s in d.secrets()) + store + dash + mon + lim + urls


# --- loading ------------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError("", f"cannot read config: {e.strerror}", str(p)) from None
    return parse(text, env=env, source=str(p))


def load_or_say(path: str | os.PathLike[str]) -> Config | None:
    """For commands: the config, or None after printing why it is invalid (the caller exits with 2)."""
    import sys

    try:
        return load(path)
    except ConfigError as e:
        print(f"relaycast: invalid config: {e}", file=sys.stderr)
        return None


def parse(text: str, env: Mapping[str, str] | None = None, source: str | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(where, f"invalid YAML: {problem}", source) from None
    try:
        return _build(raw if raw is not None else {}, os.environ if env is None else env, source)
    except ConfigError as e:
        if e.args and source and not str(e).startswith(source):
            raise ConfigError(e.where, e.problem, source) from None
        raise


def _build(raw: Any, env: Mapping[str, str], source: str | None) -> Config:
    r = Reader(env)

    root = r.mapping(
        raw,
        "",
        {
            "server",
            "providers",
            "models",
            "routing",
            "keys",
            "keys_required",
            "admin_key",
            "broadcast",
            "store",
            "prices",
            "dashboard",
            "monitors",
            "metrics",
            "limits",
            "redis_url",
        },
    )
    server = _server(r, root.get("server"))
    providers = parse_providers(r, root.get("providers"))
    models = parse_routes(r, root.get("models"), providers)
    keys = parse_keys(r, root.get("keys"))
    keys_required = root.get("keys_required")
    if keys_required is not None:
        keys_required = r.boolean(keys_required, "keys_required")
    monitors = parse_monitors(r, root.get("monitors"))
    store_raw = root.get("store")
    if (
        monitors is not None
        and monitors.rules
        and (store_raw is False or (isinstance(store_raw, dict) and store_raw.get("enabled") is False))
    ):
        raise ConfigError("monitors", "monitors read the store: enable `store:` to use them")
    admin = root.get("admin_key")
    admin_hash = None
    if admin is not None:
        admin_hash = secret_or_hash(
            r, admin, "admin_key", min_len=16, why=": it guards /admin/*, /metrics and the dashboard"
        )
    return Config(
        server=server,
        providers=MappingProxyType(providers),
        models=MappingProxyType(models),
        keys=keys,
        keys_required=keys_required,
        admin_key_sha256=admin_hash,
        source=source,
        broadcast=parse_broadcast(r, root.get("broadcast"), env, source),
        routing=parse_routing(r, root.get("routing")),
        store=parse_store(r, root.get("store"), env, source),
        prices=parse_prices(r, root.get("prices")),
        dashboard_secret=_dashboard_secret(r, root.get("dashboard")),
        monitors=monitors,
        metrics=parse_metrics(r, root.get("metrics")),
        limits=parse_limits(r, root.get("limits"), env, root.get("redis_url")),
    )


def _dashboard_secret(r: Reader, raw: Any) -> str | None:
    """`dashboard: {session_secret: ...}`: replicas behind one load balancer share it, so a login holds on each."""
    if raw is None:
        return None
    m = r.mapping(raw, "dashboard", {"session_secret"})
    v = m.get("session_secret")
    if v is None:
        return None
    v = r.string(v, "dashboard.session_secret")
    if len(v) < 16:
        raise ConfigError("dashboard.session_secret", "must be at least 16 characters")
    return v


def _server(r: Reader, raw: Any) -> ServerConfig:
    if raw is None:
        return ServerConfig()
    m = r.mapping(
        raw,
        "server",
        {
            "host",
            "port",
            "max_body_bytes",
            "insecure",
            "allowed_hosts",
            "header_timeout",
            "body_timeout",
            "keep_alive_timeout",
            "max_header_bytes",
            "max_connections",
            "max_upstream_buffer_bytes",
            "drain_timeout",
            "flush_timeout",
            "telemetry_priority",
        },
    )
    d = ServerConfig()
    return ServerConfig(
        host=r.string(m.get("host", "127.0.0.1"), "server.host"),
        port=r.integer(m.get("port", 8080), "server.port", 0, 65535),
        max_body_bytes=r.integer(m.get("max_body_bytes", DEFAULT_MAX_BODY), "server.max_body_bytes", 1024),
        insecure=r.boolean(m.get("insecure", False), "server.insecure"),
        allowed_hosts=_allowed_hosts(r, m.get("allowed_hosts")),
        header_timeout=r.number(m.get("header_timeout", d.header_timeout), "server.header_timeout"),
        body_timeout=r.number(m.get("body_timeout", d.body_timeout), "server.body_timeout"),
        keep_alive_timeout=r.number(m.get("keep_alive_timeout", d.keep_alive_timeout), "server.keep_alive_timeout"),
        max_header_bytes=r.integer(
            m.get("max_header_bytes", d.max_header_bytes), "server.max_header_bytes", 1024, 16 * 1024 * 1024
        ),
        max_connections=r.integer(m.get("max_connections", d.max_connections), "server.max_connections", 1),
        max_upstream_buffer_bytes=r.integer(
            m.get("max_upstream_buffer_bytes", d.max_upstream_buffer_bytes), "server.max_upstream_buffer_bytes", 1024
        ),
        drain_timeout=_stop_seconds(r, m, "drain_timeout", d.drain_timeout),
        flush_timeout=_stop_seconds(r, m, "flush_timeout", d.flush_timeout),
        telemetry_priority=_telemetry_priority(r, m.get("telemetry_priority", d.telemetry_priority)),
    )


MAX_STOP_S = 3600.0


def _stop_seconds(r: Reader, m: Mapping[str, Any], key: str, default: float) -> float:
    """`server.drain_timeout` / `server.flush_timeout`: positive seconds, an hour at most."""
    v = r.number(m.get(key, default), f"server.{key}")
    if v > MAX_STOP_S:
        raise ConfigError(f"server.{key}", f"{v:g} is out of range (0, {MAX_STOP_S:g}] seconds")
    return v


def _telemetry_priority(r: Reader, raw: Any) -> str | int:
    """`server.telemetry_priority`: `auto`, `idle`, or a nice increment from 0 to 19."""
    at = "server.telemetry_priority"
    if not isinstance(raw, str):
        return r.integer(raw, at, 0, 19)
    text = str(r.expand(raw, at)).strip()
    if text in ("auto", "idle"):
        return text
    if not text.isdigit():
        raise ConfigError(at, f"expected 'auto', 'idle' or a nice increment from 0 to 19, got '{text[:40]}'")
    return r.integer(int(text), at, 0, 19)


def _allowed_hosts(r: Reader, raw: Any) -> tuple[str, ...]:
    """`server.allowed_hosts`: host names (no port), compared case-insensitively; `["*"]` allows any."""
    if raw is None:
        return ()
    hosts = []
    for i, v in enumerate(r.sequence(raw, "server.allowed_hosts")):
        at = f"server.allowed_hosts[{i}]"
        h = r.string(v, at).strip().lower()
        if not h or any(c.isspace() or c in "/?#@" for c in h):
            raise ConfigError(at, f"expected a host name, got '{h}'")
        name, colon, port = h.rpartition("]:" if h.startswith("[") else ":")
        if colon and port.isdigit() and (h.startswith("[") or ":" not in name):
            raise ConfigError(at, f"'{h}': give the host name without its port (the check ignores ports)")
        hosts.append(h)
    return tuple(hosts)
