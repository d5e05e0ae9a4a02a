"""The `broadcast:` section of the config, and the standard Datadog and OpenTelemetry environment variables.

    broadcast:
      spool_dir: .relaycast/spool        # beside the config file unless absolute
      destinations:
        - name: datadog
          kind: datadog                   # datadog | otlp | webhook | file, or a backend by name (langfuse, s3, ...)
          api_key: ${DD_API_KEY}
          ml_app: checkout
          site: us5.datadoghq.com         # or https://api.us5.datadoghq.com
          # agent_url: http://127.0.0.1:8126   (through a local Datadog Agent instead)
          sample_rate: 1.0                # kept or dropped per session, deterministically
          privacy_mode: false             # true: no prompts or completions
          include_keys: [web-app]         # gateway key names; exclude_keys too
          tags: {team: payments}
          overflow: drop_oldest           # or drop_newest: what a full queue and a full spool give up

Config values win over the environment: a configured Datadog destination takes from DD_* only what it does not
set; a Datadog (or OTLP) destination exists with no YAML at all when the standard variables are set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relaycast.config_reader import ConfigError, Reader, did_you_mean
from relaycast.redact import header_secrets, url_secrets
from relaycast.telemetry import kinds
from relaycast.telemetry.kinds.base import Check, KindOptions

BUILT_IN = ("datadog", "otlp", "webhook", "file")
KINDS = (*BUILT_IN, *kinds.KINDS)
# What a full queue or spool gives up. The oldest by default: the newest records matter most in an incident, they
# join up with live traffic when the destination comes back, and old ones are the first a destination refuses
# (Datadog: 24 hours).
OVERFLOW = ("drop_oldest", "drop_newest")
# What a SIGKILL loses is what waits in memory: about this long of records. Half a second against one costs no
# measurable CPU at 120 records/s (two POSTs a second instead of one) and halves the loss.
FLUSH_INTERVAL_S = 0.5
DD_SITES = (
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "uk1.datadoghq.com",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
)
DEFAULT_SITE = "us5.datadoghq.com"
OTEL_TIMEOUT_S = 10.0  # the OpenTelemetry specification's default for OTEL_EXPORTER_OTLP_TIMEOUT
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DatadogOptions:
    site: str  # "us5.datadoghq.com"
    ml_app: str
    service: str
    env: str | None
    api_key: str | None = field(repr=False)  # agentless
    agent_url: str | None  # agent mode when set
    api_url_override: str | None = None  # advanced: a proxy in front of api.<site> (and tests)
    intake_url_override: str | None = None  # advanced: a proxy in front of llmobs-intake.<site>

    @property
    def agentless(self) -> bool:
        return self.agent_url is None

    @property
    def api_url(self) -> str:
        return (self.api_url_override or f"https://api.{self.site}").rstrip("/")

    @property
    def intake_url(self) -> str:
        if self.agent_url:
            return self.agent_url.rstrip("/") + "/evp_proxy/v2/api/v2/llmobs"
        return (self.intake_url_override or f"https://llmobs-intake.{self.site}").rstrip("/") + "/api/v2/llmobs"


@dataclass(frozen=True, slots=True)
class OtlpOptions:
    endpoint: str  # the full traces URL, .../v1/traces
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    protocol: str = "protobuf"  # "protobuf" | "json"
    service: str = "relaycast"
    backend: str = "otlp"  # the kind whose attributes (`Dialect`) are added to the GenAI ones
    resource: tuple[tuple[str, str], ...] = ()  # more resource attributes (a backend's project name, ...)
    check: Check | None = field(default=None, repr=False)  # Test Connection's call; None: an empty export
    credentials: tuple[str, ...] = field(default=(), repr=False)  # keys as given, for the redactor
    compression: str = "none"  # "gzip" | "none"
    max_body_bytes: int = 4 * 1024 * 1024 - 64 * 1024  # the backend's request size limit, less some room


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    url: str
    secret: str | None = field(default=None, repr=False)  # HMAC-SHA256 signing secret
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class FileOptions:
    path: str
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    name: str
    kind: str
    options: DatadogOptions | OtlpOptions | WebhookOptions | FileOptions | KindOptions
    enabled: bool = True
    sample_rate: float = 1.0
    privacy_mode: bool = False
    include_keys: tuple[str, ...] = ()
    exclude_keys: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    queue_size: int = 10_000
    max_batch_records: int = 1000
    flush_interval_s: float = FLUSH_INTERVAL_S
    timeout_s: float = 5.0
    max_retries: int = 4
    spool_max_bytes: int = 64 * MiB
    overflow: str = "drop_oldest"  # or "drop_newest": what a full queue and a full spool give up (OVERFLOW)
    # Where it was made: "config file", "DD_* variables", "OTEL_EXPORTER_OTLP_* variables" or "dashboard"
    source: str = field(default="config file", compare=False)

    def secrets(self) -> tuple[str, ...]:
        """For the redactor: the Datadog key, the webhook secret, credential headers whatever their length (by
        name: `redact.secret_name`), any other header value of 8 characters or more (OTLP vendors name their key
        headers freely, e.g. `x-honeycomb-team`), and the passwords and tokens in the destination's URLs."""
        o = self.options
        out: list[str] = []
        if isinstance(o, DatadogOptions):
            if o.api_key:
                out.append(o.api_key)
            for u in (o.agent_url, o.api_url_override, o.intake_url_override):
                out.extend(url_secrets(u))
        if isinstance(o, WebhookOptions) and o.secret:
            out.append(o.secret)
        if isinstance(o, (OtlpOptions, WebhookOptions)):
            # Headers a user typed (webhook, generic OTLP) may hold a key under any name; a backend preset builds
            # its own, and names its keys in `credentials`: its other headers (a project, a workspace, the SDK's
            # name) are not secrets, and masking them would mask those words everywhere.
            typed = isinstance(o, WebhookOptions) or o.backend in ("otlp", "otel_collector")
            for k, v in o.headers:
                out.extend(typed_secrets(((k, v),)) if typed else header_secrets(k, v))
            out.extend(url_secrets(o.endpoint if isinstance(o, OtlpOptions) else o.url))
        if isinstance(o, OtlpOptions):
            out.extend(s for s in o.credentials if s)
            if o.check is not None:
                for k, v in o.check.headers:
                    out.extend(header_secrets(k, v))
                out.extend(url_secrets(o.check.url))
        elif not isinstance(o, (DatadogOptions, WebhookOptions, FileOptions)):
            out.extend(s for s in o.secrets() if s)
        return tuple(out)


@dataclass(frozen=True, slots=True)
class BroadcastConfig:
    destinations: tuple[DestinationConfig, ...] = ()
    spool_dir: str = ".relaycast/spool"


COMMON = {
    "name",
    "kind",
    "enabled",
    "sample_rate",
    "privacy_mode",
    "include_keys",
    "exclude_keys",
    "tags",
    "queue_size",
    "max_batch_records",
    "flush_interval",
    "timeout",
    "max_retries",
    "spool_max_bytes",
    "overflow",
}
KIND_KEYS = {
    "datadog": {"api_key", "site", "ml_app", "service", "env", "agent_url", "api_url", "intake_url"},
    "otlp": {"endpoint", "headers", "protocol", "service", "compression"},
    "webhook": {"url", "secret", "headers"},
    "file": {"path", "max_bytes", "backups"},
}


def parse_broadcast(r: Reader, raw: Any, env: Mapping[str, str], source: str | None) -> BroadcastConfig:
    base = Path(source).parent if source else Path(".")
    spool_dir = ".relaycast/spool"
    items: list[Any] = []
    if raw is not None:
        m = r.mapping(raw, "broadcast", {"destinations", "spool_dir"})
        spool_dir = r.string(m.get("spool_dir", spool_dir), "broadcast.spool_dir")
        if m.get("destinations") is not None:
            items = r.sequence(m["destinations"], "broadcast.destinations")
    dests: list[DestinationConfig] = []
    for i, item in enumerate(items):
        dests.append(destination(r, item, f"broadcast.destinations[{i}]", env, base))
    names = [d.name for d in dests]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"broadcast.destinations[{i}].name", f"duplicate destination name '{n}'")
    given = {d.kind for d in dests}
    if "datadog" not in given:
        dd = datadog_from_env(env)
        if dd is not None:
            dests.append(replace(_unique(dd, names, "DD_* variables"), source="DD_* variables"))
    if not given & {"otlp", "otel_collector"}:  # the OTEL_* variables describe the collector a config names
        otel = otlp_from_env(env)
        if otel is not None:
            dests.append(replace(_unique(otel, names, "OTEL_EXPORTER_OTLP_* variables"), source="OTEL_* variables"))
    spool = Path(spool_dir)
    return BroadcastConfig(destinations=tuple(dests), spool_dir=str(spool if spool.is_absolute() else base / spool))


def _unique(d: DestinationConfig, names: list[str], source: str) -> DestinationConfig:
    """A destination made from the environment, refused when a configured one of another kind has its name (two
    destinations would share one spool directory and one status line)."""
    if d.name in names:
        raise ConfigError(
            "broadcast.destinations",
            f"the {source} make a destination named '{d.name}', and a configured destination of another kind has "
            "that name: rename it",
        )
    return d


def destination(r: Reader, raw: Any, at: str, env: Mapping[str, str], base: Path) -> DestinationConfig:
    m = r.mapping(raw, at, None)
    kind = r.string(m.get("kind", m.get("name", "")), f"{at}.kind")
    if kind not in KINDS:
        raise ConfigError(
            f"{at}.kind", f"unknown kind '{kind}'{did_you_mean(kind, KINDS)} (expected one of: {', '.join(KINDS)})"
        )
    spec = kinds.spec(kind) if kind not in BUILT_IN else None
    allowed = COMMON | (spec.keys if spec is not None else KIND_KEYS[kind])
    for k in m:
        if k not in allowed:
            raise ConfigError(
                f"{at}.{k}",
                f"unknown setting for a {kind} destination{did_you_mean(k, allowed)} (expected one of: "
                f"{', '.join(sorted(allowed))})",
            )
    name = r.string(m.get("name", kind), f"{at}.name")
    if spec is not None:
        options: Any = spec.parse(r, m, at, env, base)
    elif kind == "datadog":
        options = _datadog(r, m, at, env)
    elif kind == "otlp":
        options = otlp_options(r, m, at, env)
    elif kind == "webhook":
        secret = m.get("secret")
        options = WebhookOptions(
            url=url(r, r.required(m, "url", at), f"{at}.url"),
            secret=r.string(secret, f"{at}.secret") if secret is not None else None,
            headers=headers(r, m.get("headers"), f"{at}.headers"),
        )
    else:
        path = Path(r.string(r.required(m, "path", at), f"{at}.path"))
        options = FileOptions(
            path=str(path if path.is_absolute() else base / path),
            max_bytes=r.integer(m.get("max_bytes", 10 * MiB), f"{at}.max_bytes", 1024),
            backups=r.integer(m.get("backups", 5), f"{at}.backups", 0, 1000),
        )
    own = spec.defaults if spec is not None else {}
    rate = m.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ConfigError(f"{at}.sample_rate", f"must be a number from 0 to 1, got {rate!r}")
    tags = m.get("tags")
    return DestinationConfig(
        name=name,
        kind=kind,
        options=options,
        enabled=r.boolean(m.get("enabled", True), f"{at}.enabled"),
        sample_rate=float(rate),
        privacy_mode=r.boolean(m.get("privacy_mode", False), f"{at}.privacy_mode"),
        include_keys=_names(r, m.get("include_keys"), f"{at}.include_keys"),
        exclude_keys=_names(r, m.get("exclude_keys"), f"{at}.exclude_keys"),
        tags=tuple(
            (str(k), r.string(v, f"{at}.tags.{k}"))
            for k, v in (r.mapping(tags, f"{at}.tags", None) if tags is not None else {}).items()
        ),
        queue_size=r.integer(m.get("queue_size", 10_000), f"{at}.queue_size", 1),
        max_batch_records=r.integer(m.get("max_batch_records", 1000), f"{at}.max_batch_records", 1),
        flush_interval_s=r.number(
            m.get("flush_interval", own.get("flush_interval", FLUSH_INTERVAL_S)), f"{at}.flush_interval"
        ),
        timeout_s=r.number(m.get("timeout", own.get("timeout", 5.0)), f"{at}.timeout"),
        max_retries=r.integer(m.get("max_retries", 4), f"{at}.max_retries", 0, 100),
        spool_max_bytes=r.integer(m.get("spool_max_bytes", 64 * MiB), f"{at}.spool_max_bytes", 0),
        overflow=choice(r, m.get("overflow", OVERFLOW[0]), f"{at}.overflow", OVERFLOW),
    )


def otlp_options(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str], backend: str = "otlp") -> OtlpOptions:
    """A generic OTLP/HTTP destination's settings (also the `otel_collector` kind's)."""
    return OtlpOptions(
        endpoint=url(r, r.required(m, "endpoint", at), f"{at}.endpoint"),
        headers=headers(r, m.get("headers"), f"{at}.headers"),
        protocol=choice(r, m.get("protocol", "protobuf"), f"{at}.protocol", ("protobuf", "json")),
        service=r.string(m.get("service", env.get("OTEL_SERVICE_NAME", "relaycast")), f"{at}.service"),
        backend=backend,
        compression=choice(r, m.get("compression", "none"), f"{at}.compression", ("none", "gzip")),
    )


def _datadog(r: Reader, m: dict[str, Any], at: str, env: Mapping[str, str]) -> DatadogOptions:
    agent_url = m.get("agent_url")
    if agent_url is not None:
        agent_url = url(r, agent_url, f"{at}.agent_url")
    api_key = m.get("api_key", env.get("DD_API_KEY"))
    api_key = r.string(api_key, f"{at}.api_key") if api_key else None
    if agent_url is None and not api_key:
        raise ConfigError(
            f"{at}.api_key", "required for agentless mode (or set agent_url to send through a Datadog Agent)"
        )
    return DatadogOptions(
        site=parse_site(r.string(m.get("site", env.get("DD_SITE", DEFAULT_SITE)), f"{at}.site"), f"{at}.site"),
        ml_app=r.string(m.get("ml_app", env.get("DD_LLMOBS_ML_APP", "relaycast")), f"{at}.ml_app"),
        service=r.string(m.get("service", env.get("DD_SERVICE", "relaycast")), f"{at}.service"),
        env=r.string(m["env"], f"{at}.env") if m.get("env") is not None else env.get("DD_ENV"),
        api_key=api_key,
        agent_url=agent_url,
        api_url_override=url(r, m["api_url"], f"{at}.api_url") if m.get("api_url") is not None else None,
        intake_url_override=url(r, m["intake_url"], f"{at}.intake_url")
        if m.get("intake_url") is not None
        else _override_origin(env),
    )


def parse_site(value: str, at: str) -> str:
    """`us5.datadoghq.com`, `https://api.us5.datadoghq.com`, `https://us5.datadoghq.com` or
    `app.datadoghq.com` -> `us5.datadoghq.com` / `datadoghq.com`."""
    v = value.strip().lower()
    v = re.sub(r"^https?://", "", v).rstrip("/")
    for prefix in ("api.", "app.", "llmobs-intake."):
        if v.startswith(prefix):
            v = v[len(prefix) :]
    if v not in DD_SITES:
        raise ConfigError(
            at,
            f"'{value}' is not a Datadog site with LLM Observability{did_you_mean(v, DD_SITES)} (one of: "
            f"{', '.join(DD_SITES)})",
        )
    return v


def _override_origin(env: Mapping[str, str]) -> str | None:
    """ddtrace's `DD_LLMOBS_OVERRIDE_ORIGIN`: another origin for the agentless intake (a proxy in front of it)."""
    origin = (env.get("DD_LLMOBS_OVERRIDE_ORIGIN") or "").strip()
    if not origin:
        return None
    if not re.match(r"https?://[^/]+", origin):
        raise ConfigError("DD_LLMOBS_OVERRIDE_ORIGIN", f"'{origin[:100]}' is not an http(s) URL")
    return origin.rstrip("/")


def _off(value: str | None) -> bool:
    """A switch variable set to off (`0`, `false`, `no`, `off`, any case)."""
    return (value or "").strip().lower() in ("0", "false", "no", "off")


def datadog_from_env(env: Mapping[str, str]) -> DestinationConfig | None:
    """A Datadog destination from DD_* variables alone, as Datadog's own library reads them; none when
    `DD_LLMOBS_ENABLED` turns LLM Observability off."""
    if _off(env.get("DD_LLMOBS_ENABLED")):
        return None
    agentless = env.get("DD_LLMOBS_AGENTLESS_ENABLED", "").strip().lower() in ("1", "true", "yes")
    agent_url = env.get("DD_TRACE_AGENT_URL")
    if not agent_url and env.get("DD_AGENT_HOST"):
        agent_url = f"http://{env['DD_AGENT_HOST']}:{env.get('DD_TRACE_AGENT_PORT', '8126')}"
    api_key = env.get("DD_API_KEY") or None
    if agentless:
        if not api_key:
            raise ConfigError("DD_LLMOBS_AGENTLESS_ENABLED", "is set but DD_API_KEY is not")
        agent_url = None
    elif not agent_url and not api_key:
        return None
    if agent_url and not agentless:
        api_key = None  # the agent adds the key itself
    return DestinationConfig(
        name="datadog",
        kind="datadog",
        options=DatadogOptions(
            site=parse_site(env.get("DD_SITE", DEFAULT_SITE), "DD_SITE"),
            ml_app=env.get("DD_LLMOBS_ML_APP") or env.get("DD_SERVICE") or "relaycast",
            service=env.get("DD_SERVICE") or "relaycast",
            env=env.get("DD_ENV"),
            api_key=api_key,
            agent_url=agent_url.rstrip("/") if agent_url else None,
            intake_url_override=_override_origin(env),
        ),
    )


def otlp_from_env(env: Mapping[str, str]) -> DestinationConfig | None:
    """An OTLP destination from OTEL_* variables alone, as an OpenTelemetry SDK reads them: none when the SDK is
    disabled (`OTEL_SDK_DISABLED=true`) or the traces exporters named (`OTEL_TRACES_EXPORTER`) leave out `otlp`."""
    if (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true":
        return None
    exporters = (env.get("OTEL_TRACES_EXPORTER") or "").strip().lower()
    if exporters and "otlp" not in {e.strip() for e in exporters.split(",")}:
        return None
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    if not endpoint:
        return None
    headers = parse_otel_headers(
        env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    )
    proto = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).lower()
    return DestinationConfig(
        name="otlp",
        kind="otlp",
        options=OtlpOptions(
            endpoint=endpoint,
            headers=headers,
            protocol="json" if proto == "http/json" else "protobuf",
            service=env.get("OTEL_SERVICE_NAME", "relaycast"),
            compression="gzip"
            if (env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") or env.get("OTEL_EXPORTER_OTLP_COMPRESSION") or "")
            .strip()
            .lower()
            == "gzip"
            else "none",
        ),
        timeout_s=_otel_timeout_s(env),
    )


def _otel_timeout_s(env: Mapping[str, str]) -> float:
    """`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` (or `OTEL_EXPORTER_OTLP_TIMEOUT`): milliseconds, as the OpenTelemetry
    specification has them, default 10 s; at most an hour."""
    name = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
    raw = (env.get(name) or "").strip()
    if not raw:
        name = "OTEL_EXPORTER_OTLP_TIMEOUT"
        raw = (env.get(name) or "").strip()
    if not raw:
        return OTEL_TIMEOUT_S
    try:
        ms = float(raw)
    except ValueError:
        ms = 0.0
    if not 1 <= ms <= 3_600_000:  # NaN too
        raise ConfigError(name, f"expected a number of milliseconds from 1 to 3600000, got '{raw[:40]}'")
    return ms / 1000


def typed_secrets(headers: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The secrets in headers a user typed: a credential header's value by its name, and any other value of 8
    characters or more (vendors name their key headers freely, e.g. `x-honeycomb-team`)."""
    out: list[str] = []
    for k, v in headers:
        out.extend(header_secrets(k, v) or ((v,) if len(v) >= 8 else ()))
    return tuple(out)


def parse_otel_headers(text: str) -> tuple[tuple[str, str], ...]:
    from urllib.parse import unquote

    out = []
    for part in text.split(","):
        k, sep, v = part.partition("=")
        if sep and k.strip():
            out.append((unquote(k.strip()), unquote(v.strip())))
    return tuple(out)


def url(r: Reader, v: Any, at: str) -> str:
    s = r.string(v, at)
    if not re.match(r"https?://[^/]+", s):
        raise ConfigError(at, f"'{s}' is not an http(s) URL")
    return s


def headers(r: Reader, v: Any, at: str) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    return tuple((str(k), r.string(x, f"{at}.{k}")) for k, x in r.mapping(v, at, None).items())


def _names(r: Reader, v: Any, at: str) -> tuple[str, ...]:
    if v is None:
        return ()
    return tuple(r.string(x, f"{at}[{i}]") for i, x in enumerate(r.sequence(v, at)))


def choice(r: Reader, v: Any, at: str, options: tuple[str, ...]) -> str:
    s = r.string(v, at)
    if s not in options:
        raise ConfigError(at, f"'{s}' is not one of: {', '.join(options)}{did_you_mean(s, options)}")
    return s


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`metrics: {public: false, user_label: false}`: GET /metrics needs the admin key unless public; the `user`
    label is off by default, to bound the number of series."""

    public: bool = False
    user_label: bool = False
    max_series: int = 10_000


def parse_metrics(r: Reader, raw: Any) -> MetricsConfig:
    if raw is None:
        return MetricsConfig()
    m = r.mapping(raw, "metrics", {"public", "user_label", "max_series"})
    return MetricsConfig(
        public=r.boolean(m.get("public", False), "metrics.public"),
        user_label=r.boolean(m.get("user_label", False), "metrics.user_label"),
        max_series=r.integer(m.get("max_series", 10_000), "metrics.max_series", 10, 10_000_000),
    )
