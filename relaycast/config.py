"""Configuration: YAML with ${ENV} references, validated once at load into frozen objects.

Every problem is reported with the exact place, e.g. `models[2].targets[0]: unknown provider 'opnai'`.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

import yaml

from relaycast.providers.presets import PRESETS

if TYPE_CHECKING:
    from relaycast.keys.policy import KeyPolicy
    from relaycast.limits.settings import LimitsConfig
    from relaycast.monitors.settings import MonitorsConfig
    from relaycast.costs.catalog import ModelPrice
    from relaycast.store.settings import StoreConfig
    from relaycast.routing.settings import Route, RoutingSettings
    from relaycast.telemetry.settings import BroadcastConfig

DEFAULT_MAX_BODY = 20 * 1024 * 1024


class ConfigError(ValueError):
    def __init__(self, where: str, problem: str, source: str | None = None) -> None:
        self.where = where
        self.problem = problem
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{where}: {problem}" if where else f"{prefix}{problem}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 10.0
    first_token_s: float = 120.0  # until the response starts (headers, or the first stream event)
    idle_s: float = 120.0  # between two stream reads
    total_s: float = 600.0


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    kind: str  # a preset name
    adapter: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    models: tuple[str, ...] = ()
    timeouts: Timeouts = Timeouts()


@dataclass(frozen=True, slots=True)
class GatewayKey:
    name: str
    sha256: str = field(repr=False)
    policy: KeyPolicy = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.policy is None:
            from relaycast.keys.policy import KeyPolicy

            object.__setattr__(self, "policy", KeyPolicy(name=self.name))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = DEFAULT_MAX_BODY
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, Route]
    keys: tuple[GatewayKey, ...] = ()
    admin_key_sha256: str | None = field(default=None, repr=False)
    source: str | None = None
    broadcast: BroadcastConfig | None = None
    routing: RoutingSettings | None = None
    store: StoreConfig | None = None
    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: MappingProxyType({}))
    dashboard_secret: str | None = field(default=None, repr=False)  # signs dashboard sessions (random if unset)
    monitors: MonitorsConfig | None = None
    limits: LimitsConfig | None = None
    metrics: MetricsConfig = field(default_factory=lambda: _metrics_default())

    def secrets(self) -> tuple[str, ...]:
        """Every secret value this config holds, for the redactor."""
        provider = tuple(
            s
            for p in self.providers.values()
            for s in (p.api_key, *(v for k, v in p.headers if _secret_header(k)))
            if s
        )
        dests = self.broadcast.destinations if self.broadcast else ()
        store = self.store.secrets() if self.store else ()
        dash = (self.dashboard_secret,) if self.dashboard_secret else ()
        mon = self.monitors.secrets() if self.monitors else ()
        lim = self.limits.secrets() if self.limits else ()
        return provider + tuple(s for d in dests for s in d.secrets()) + store + dash + mon + lim


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _secret_header(name: str) -> bool:
    n = name.lower()
    return "auth" in n or "key" in n or "token" in n or "secret" in n


# --- loading ------------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


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
    r = _Reader(env)
    from relaycast.routing.settings import parse_routes, parse_routing
    from relaycast.costs.settings import parse_prices
    from relaycast.limits.settings import parse_limits
    from relaycast.monitors.settings import parse_monitors
    from relaycast.store.settings import parse_store
    from relaycast.telemetry.settings import parse_broadcast

    root = r.mapping(raw, "", {"server", "providers", "models", "routing", "keys", "admin_key", "broadcast", "store", "prices",
                               "dashboard", "monitors", "metrics", "limits", "redis_url"})  # fmt: skip
    server = _server(r, root.get("server"))
    providers = _providers(r, root.get("providers"))
    models = parse_routes(r, root.get("models"), providers)
    keys = _keys(r, root.get("keys"))
    monitors = parse_monitors(r, root.get("monitors"))
    store_raw = root.get("store")
    if monitors is not None and monitors.rules and (store_raw is False or (isinstance(store_raw, dict) and store_raw.get("enabled") is False)):
        raise ConfigError("monitors", "monitors read the store: enable `store:` to use them")
    admin = root.get("admin_key")
    admin_hash = None
    if admin is not None:
        admin_hash = _secret_or_hash(r, admin, "admin_key")
    return Config(
        server=server,
        providers=MappingProxyType(providers),
        models=MappingProxyType(models),
        keys=keys,
        admin_key_sha256=admin_hash,
        source=source,
        broadcast=parse_broadcast(r, root.get("broadcast"), env, source),
        routing=parse_routing(r, root.get("routing")),
        store=parse_store(r, root.get("store"), env, source),
        prices=parse_prices(r, root.get("prices")),
        dashboard_secret=_dashboard_secret(r, root.get("dashboard")),
        monitors=monitors,
        metrics=_metrics(r, root.get("metrics")),
        limits=parse_limits(r, root.get("limits"), env, root.get("redis_url")),
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`metrics: {public: false, user_label: false}`: GET /metrics needs the admin key unless public; the `user`
    label is off by default, to bound the number of series."""

    public: bool = False
    user_label: bool = False
    max_series: int = 10_000


def _metrics_default() -> MetricsConfig:
    return MetricsConfig()


def _metrics(r: _Reader, raw: Any) -> MetricsConfig:
    if raw is None:
        return MetricsConfig()
    m = r.mapping(raw, "metrics", {"public", "user_label", "max_series"})
    return MetricsConfig(public=r.boolean(m.get("public", False), "metrics.public"),
                         user_label=r.boolean(m.get("user_label", False), "metrics.user_label"),
                         max_series=r.integer(m.get("max_series", 10_000), "metrics.max_series", 10, 10_000_000))  # fmt: skip


def _dashboard_secret(r: _Reader, raw: Any) -> str | None:
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


def _server(r: _Reader, raw: Any) -> ServerConfig:
    if raw is None:
        return ServerConfig()
    m = r.mapping(raw, "server", {"host", "port", "max_body_bytes", "insecure"})
    return ServerConfig(
        host=r.string(m.get("host", "127.0.0.1"), "server.host"),
        port=r.integer(m.get("port", 8080), "server.port", 0, 65535),
        max_body_bytes=r.integer(m.get("max_body_bytes", DEFAULT_MAX_BODY), "server.max_body_bytes", 1024),
        insecure=r.boolean(m.get("insecure", False), "server.insecure"),
    )


def _providers(r: _Reader, raw: Any) -> dict[str, ProviderConfig]:
    if raw is None:
        raise ConfigError("providers", "at least one provider is required")
    items = r.sequence(raw, "providers")
    out: dict[str, ProviderConfig] = {}
    allowed = {"name", "kind", "base_url", "api_key", "headers", "models", "timeouts"}
    for i, item in enumerate(items):
        at = f"providers[{i}]"
        m = r.mapping(item, at, allowed)
        name = r.string(r.required(m, "name", at), f"{at}.name")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"{at}.name", f"'{name}' may only hold letters, digits, '_', '.' and '-'")
        if name in out:
            raise ConfigError(f"{at}.name", f"duplicate provider name '{name}'")
        kind = r.string(m.get("kind", name), f"{at}.kind")
        preset = PRESETS.get(kind)
        if preset is None:
            raise ConfigError(f"{at}.kind", f"unknown kind '{kind}' (expected one of: {', '.join(PRESETS)})")
        base_url = m.get("base_url", preset.base_url)
        if base_url is None:
            raise ConfigError(f"{at}.base_url", f"required for kind '{kind}'")
        base_url = r.string(base_url, f"{at}.base_url").rstrip("/")
        if not re.match(r"https?://[^/]+", base_url):
            raise ConfigError(f"{at}.base_url", f"'{base_url}' is not an http(s) URL")
        api_key = m.get("api_key")
        if api_key is not None:
            api_key = r.string(api_key, f"{at}.api_key") or None
        headers = ()
        if m.get("headers") is not None:
            hm = r.mapping(m["headers"], f"{at}.headers", None)
            headers = tuple((str(k), r.string(v, f"{at}.headers.{k}")) for k, v in hm.items())
        models: tuple[str, ...] = ()
        if m.get("models") is not None:
            models = tuple(
                r.string(v, f"{at}.models[{j}]") for j, v in enumerate(r.sequence(m["models"], f"{at}.models"))
            )
        out[name] = ProviderConfig(
            name=name,
            kind=kind,
            adapter=preset.adapter,
            base_url=base_url,
            api_key=api_key,
            headers=headers,
            models=models,
            timeouts=_timeouts(r, m.get("timeouts"), f"{at}.timeouts"),
        )
    if not out:
        raise ConfigError("providers", "at least one provider is required")
    return out


def _timeouts(r: _Reader, raw: Any, at: str) -> Timeouts:
    if raw is None:
        return Timeouts()
    m = r.mapping(raw, at, {"connect", "first_token", "idle", "total"})
    d = Timeouts()
    return Timeouts(
        connect_s=r.number(m.get("connect", d.connect_s), f"{at}.connect"),
        first_token_s=r.number(m.get("first_token", d.first_token_s), f"{at}.first_token"),
        idle_s=r.number(m.get("idle", d.idle_s), f"{at}.idle"),
        total_s=r.number(m.get("total", d.total_s), f"{at}.total"),
    )


def _keys(r: _Reader, raw: Any) -> tuple[GatewayKey, ...]:
    from relaycast.keys.policy import LIMIT_FIELDS, KeyPolicy, Limits

    if raw is None:
        return ()
    out = []
    for i, item in enumerate(r.sequence(raw, "keys")):
        at = f"keys[{i}]"
        m = r.mapping(item, at, {"name", "secret", "sha256", "models", "user", "feature", "owner", *LIMIT_FIELDS})
        name = r.string(r.required(m, "name", at), f"{at}.name")
        sha = _secret_or_hash(r, {k: m[k] for k in ("secret", "sha256") if k in m}, at)
        models = None
        if m.get("models") is not None:
            models = tuple(r.string(x, f"{at}.models") for x in r.sequence(m["models"], f"{at}.models"))
        try:
            limits = Limits.parse(m, at)
        except ValueError as e:
            where, _, problem = str(e).partition(": ")
            raise ConfigError(where, problem) from None
        policy = KeyPolicy(name=name, source="config", owner=m.get("owner"), models=models,
                           user=r.string(m["user"], f"{at}.user") if m.get("user") else None,
                           feature=r.string(m["feature"], f"{at}.feature") if m.get("feature") else None, limits=limits)  # fmt: skip
        out.append(GatewayKey(name=name, sha256=sha, policy=policy))
    names = [k.name for k in out]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"keys[{i}].name", f"duplicate key name '{n}'")
    return tuple(out)


def _secret_or_hash(r: _Reader, raw: Any, at: str) -> str:
    if isinstance(raw, str):
        raw = {"secret": raw}
    m = r.mapping(raw, at, {"name", "secret", "sha256"})
    if ("secret" in m) == ("sha256" in m):
        raise ConfigError(at, "give exactly one of 'secret' (usually ${ENV_VAR}) or 'sha256'")
    if "sha256" in m:
        h = r.string(m["sha256"], f"{at}.sha256").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", h):
            raise ConfigError(f"{at}.sha256", "must be 64 hex digits")
        return h
    secret = r.string(m["secret"], f"{at}.secret")
    if len(secret) < 8:
        raise ConfigError(f"{at}.secret", "must be at least 8 characters")
    return hash_secret(secret)


class _Reader:
    """Typed access to raw YAML values, with ${ENV} expansion of strings and exact error places."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def expand(self, value: str, at: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in self.env:
                return self.env[name]
            if default is not None:
                return default
            raise ConfigError(at, f"environment variable {name} is not set")

        return _ENV_REF.sub(sub, value)

    def mapping(self, v: Any, at: str, allowed: set[str] | None) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise ConfigError(at, f"expected a mapping, got {_kind(v)}")
        if allowed is not None:
            for k in v:
                if k not in allowed:
                    raise ConfigError(f"{at}.{k}" if at else str(k), f"unknown setting (expected one of: {', '.join(sorted(allowed))})")
        return v

    def sequence(self, v: Any, at: str) -> list[Any]:
        if not isinstance(v, list):
            raise ConfigError(at, f"expected a list, got {_kind(v)}")
        return v

    def required(self, m: dict[str, Any], key: str, at: str) -> Any:
        if m.get(key) is None:
            raise ConfigError(f"{at}.{key}", "is required")
        return m[key]

    def string(self, v: Any, at: str) -> str:
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(at, f"expected a string, got {_kind(v)}")
        return self.expand(str(v), at)

    def integer(self, v: Any, at: str, lo: int | None = None, hi: int | None = None) -> int:
        if isinstance(v, str):
            v = self.expand(v, at)
            try:
                v = int(v)
            except ValueError:
                raise ConfigError(at, f"expected an integer, got '{v}'") from None
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(at, f"expected an integer, got {_kind(v)}")
        if lo is not None and v < lo or hi is not None and v > hi:
            raise ConfigError(at, f"{v} is out of range [{lo}, {hi if hi is not None else '∞'}]")
        return v

    def number(self, v: Any, at: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(at, f"expected a positive number of seconds, got {v!r}")
        return float(v)

    def boolean(self, v: Any, at: str) -> bool:
        if not isinstance(v, bool):
            raise ConfigError(at, f"expected true or false, got {_kind(v)}")
        return v


def _kind(v: Any) -> str:
    if v is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: f"'{v}'", bool: str(v).lower()}.get(type(v), repr(v))
