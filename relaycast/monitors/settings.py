"""The `monitors:` section of the config.

    monitors:
      interval_s: 60                    # how often the rules are evaluated
      notify:                           # where alerts go (always also to the log)
        - {name: ops, kind: webhook, url: https://ops.example/hooks/llm, secret: ${HOOK_SECRET}}
        - {name: slack, kind: slack, url: ${SLACK_WEBHOOK_URL}}
      rules:
        - name: hourly-spend-spike
          kind: spend_spike             # spend over `window` against the mean of earlier windows
          window: 1h
          baseline: previous            # previous (the N windows before) | same_hour (the same window on N earlier days)
          baseline_windows: 24
          threshold_pct: 200            # fires when spend grows by more than this
          min_usd: 1.0                  # ... and is at least this (so $0.01 -> $0.04 is not an incident)
          by: null                      # or model | provider | key | user | feature: one incident per value
          where: {model: gpt-4o}        # optional scope
        - {name: fast-p99, kind: latency_sla, route: fast, metric: p99, window: 5m, threshold_ms: 2000, min_requests: 20}
        - {name: openai-errors, kind: error_rate, provider: openai, error_class: rate_limit, window: 5m,
           threshold_pct: 5, min_requests: 20}
        - {name: team-a-daily, kind: budget, key: team-a, period: day, limit_usd: 50}

Every rule may name the notification targets it uses (`notify: [ops]`; default: all of them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from relaycast.config_reader import ConfigError, Reader, did_you_mean
from relaycast.errors import CLIENT_REFUSALS, PROVIDER_FAILURES
from relaycast.redact import url_secrets

KINDS = ("spend_spike", "latency_sla", "error_rate", "budget")
NOTIFY_KINDS = ("webhook", "slack")
SCOPE_DIMS = ("model", "provider", "key", "user", "feature")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    name: str
    kind: str  # webhook | slack
    url: str = field(repr=False)
    secret: str | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    max_attempts: int = 8


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str
    window_s: float = 3600.0
    # spend_spike
    baseline: str = "previous"
    baseline_windows: int = 24
    threshold_pct: float = 200.0
    min_usd: float = 0.0
    by: str | None = None
    where: tuple[tuple[str, str], ...] = ()
    # latency_sla (one of route / model / provider / target) and error_rate (provider, optional class)
    route: str | None = None
    model: str | None = None
    provider: str | None = None
    target: str | None = None
    metric: str = "p99"  # p99 | ttft_p99 | p90 | p50
    threshold_ms: float = 0.0
    error_class: str | None = None
    min_requests: int = 10
    # budget
    scope: tuple[str, str] | None = None  # (dimension, value)
    period: str = "day"  # day | month
    limit_usd: float = 0.0
    notify: tuple[str, ...] | None = None  # None: every target


@dataclass(frozen=True, slots=True)
class MonitorsConfig:
    interval_s: float = 60.0
    rules: tuple[Rule, ...] = ()
    notify: tuple[NotifyTarget, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        out: list[str] = []
        for t in self.notify:
            if t.kind == "slack":
                out.append(t.url)  # a Slack incoming-webhook URL is itself the credential
            out.extend(url_secrets(t.url))  # a password or token in a webhook URL
            if t.secret:
                out.append(t.secret)
        return tuple(out)


def duration(r: Reader, v: Any, at: str) -> float:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return float(v)
    m = _DURATION.match(str(v).strip()) if isinstance(v, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(at, f"must be a duration like 5m, 1h or 1d (or seconds), got {v!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_monitors(r: Reader, raw: Any) -> MonitorsConfig | None:
    if raw is None:
        return None
    m = r.mapping(raw, "monitors", {"interval_s", "rules", "notify"})
    interval = r.number(m.get("interval_s", 60), "monitors.interval_s")
    if interval < 1:
        raise ConfigError("monitors.interval_s", f"must be at least 1 second, got {interval:g}")
    targets = tuple(
        _target(r, t, f"monitors.notify[{i}]")
        for i, t in enumerate(r.sequence(m.get("notify") or [], "monitors.notify"))
    )
    names = [t.name for t in targets]
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"monitors.notify[{i}].name", f"duplicate name '{n}'")
    rules = tuple(
        _rule(r, x, f"monitors.rules[{i}]", set(names))
        for i, x in enumerate(r.sequence(m.get("rules") or [], "monitors.rules"))
    )
    rnames = [x.name for x in rules]
    for i, n in enumerate(rnames):
        if n in rnames[:i]:
            raise ConfigError(f"monitors.rules[{i}].name", f"duplicate rule name '{n}'")
    return MonitorsConfig(interval_s=interval, rules=rules, notify=targets)


def _target(r: Reader, raw: Any, at: str) -> NotifyTarget:
    m = r.mapping(raw, at, {"name", "kind", "url", "secret", "timeout_s", "max_attempts"})
    kind = r.string(r.required(m, "kind", at), f"{at}.kind")
    if kind not in NOTIFY_KINDS:
        raise ConfigError(
            f"{at}.kind", f"must be one of {', '.join(NOTIFY_KINDS)}, got '{kind}'{did_you_mean(kind, NOTIFY_KINDS)}"
        )
    url = r.string(r.required(m, "url", at), f"{at}.url")
    if not url.startswith(("http://", "https://")):
        # The scheme only: a Slack webhook's URL is its secret.
        scheme = url.partition("://")[0][:20] if "://" in url else "(none)"
        raise ConfigError(f"{at}.url", f"must be an http:// or https:// URL, got scheme '{scheme}'")
    return NotifyTarget(
        name=r.string(m.get("name", kind), f"{at}.name"),
        kind=kind,
        url=url,
        secret=r.string(m["secret"], f"{at}.secret") if m.get("secret") is not None else None,
        timeout_s=r.number(m.get("timeout_s", 10), f"{at}.timeout_s"),
        max_attempts=r.integer(m.get("max_attempts", 8), f"{at}.max_attempts", 1, 100),
    )


_COMMON = {"name", "kind", "window", "notify"}
_METRICS = ("p50", "p90", "p99", "ttft_p50", "ttft_p90", "ttft_p99")
_ALLOWED = {
    "spend_spike": _COMMON | {"baseline", "baseline_windows", "threshold_pct", "min_usd", "by", "where"},
    "latency_sla": _COMMON | {"route", "model", "provider", "target", "metric", "threshold_ms", "min_requests"},
    "error_rate": _COMMON | {"provider", "error_class", "threshold_pct", "min_requests"},
    "budget": {"name", "kind", "notify", "period", "limit_usd", *SCOPE_DIMS},
}


def _rule(r: Reader, raw: Any, at: str, notify_names: set[str]) -> Rule:
    pre = r.mapping(raw, at, None)
    kind = r.string(r.required(pre, "kind", at), f"{at}.kind")
    if kind not in KINDS:
        raise ConfigError(f"{at}.kind", f"must be one of {', '.join(KINDS)}, got '{kind}'{did_you_mean(kind, KINDS)}")
    m = r.mapping(raw, at, _ALLOWED[kind])
    name = r.string(r.required(m, "name", at), f"{at}.name")
    notify = None
    if m.get("notify") is not None:
        notify = tuple(r.string(x, f"{at}.notify") for x in r.sequence(m["notify"], f"{at}.notify"))
        for n in notify:
            if n not in notify_names:
                raise ConfigError(f"{at}.notify", f"unknown notification target '{n}'{did_you_mean(n, notify_names)}")
    kw: dict[str, Any] = {"name": name, "kind": kind, "notify": notify}
    if "window" in _ALLOWED[kind]:
        kw["window_s"] = duration(r, m.get("window", "1h" if kind == "spend_spike" else "5m"), f"{at}.window")
    if kind == "spend_spike":
        baseline = r.string(m.get("baseline", "previous"), f"{at}.baseline")
        if baseline not in ("previous", "same_hour"):
            raise ConfigError(f"{at}.baseline", f"must be 'previous' or 'same_hour', got '{baseline}'")
        by = m.get("by")
        if by is not None and by not in SCOPE_DIMS:
            raise ConfigError(
                f"{at}.by", f"must be one of {', '.join(SCOPE_DIMS)}, got {by!r}{did_you_mean(by, SCOPE_DIMS)}"
            )
        where = r.mapping(m.get("where") or {}, f"{at}.where", set(SCOPE_DIMS))
        kw.update(
            baseline=baseline,
            baseline_windows=r.integer(
                m.get("baseline_windows", 24 if baseline == "previous" else 7), f"{at}.baseline_windows", 1, 1000
            ),
            threshold_pct=_positive(r, m.get("threshold_pct", 200), f"{at}.threshold_pct"),
            min_usd=_non_negative(r, m.get("min_usd", 0), f"{at}.min_usd"),
            by=by,
            where=tuple((k, r.string(v, f"{at}.where.{k}")) for k, v in where.items()),
        )
    elif kind == "latency_sla":
        picked = [k for k in ("route", "model", "provider", "target") if m.get(k) is not None]
        if len(picked) != 1:
            raise ConfigError(at, "a latency_sla rule names exactly one of route, model, provider or target")
        metric = r.string(m.get("metric", "p99"), f"{at}.metric")
        if metric not in _METRICS:
            raise ConfigError(
                f"{at}.metric",
                f"must be p50, p90, p99, ttft_p50, ttft_p90 or ttft_p99, got '{metric}'{did_you_mean(metric, _METRICS)}",
            )
        kw.update(
            {picked[0]: r.string(m[picked[0]], f"{at}.{picked[0]}")},
            metric=metric,
            threshold_ms=_positive(r, r.required(m, "threshold_ms", at), f"{at}.threshold_ms"),
            min_requests=r.integer(m.get("min_requests", 10), f"{at}.min_requests", 1),
        )
    elif kind == "error_rate":
        error_class = r.string(m["error_class"], f"{at}.error_class") if m.get("error_class") else None
        if error_class is not None and error_class not in PROVIDER_FAILURES:
            failures = sorted(PROVIDER_FAILURES)
            why = " is a refusal the request caused, not a provider failure" if error_class in CLIENT_REFUSALS else ""
            raise ConfigError(
                f"{at}.error_class",
                f"'{error_class}'{why}: an error rate counts provider failures, one of {', '.join(failures)}"
                f"{did_you_mean(error_class, failures)}",
            )
        kw.update(
            provider=r.string(r.required(m, "provider", at), f"{at}.provider"),
            error_class=error_class,
            threshold_pct=_positive(r, r.required(m, "threshold_pct", at), f"{at}.threshold_pct"),
            min_requests=r.integer(m.get("min_requests", 20), f"{at}.min_requests", 1),
        )
    else:
        picked = [k for k in SCOPE_DIMS if m.get(k) is not None]
        if len(picked) != 1:
            raise ConfigError(at, "a budget rule names exactly one of key, user, feature, model or provider")
        period = r.string(m.get("period", "day"), f"{at}.period")
        if period not in ("day", "month"):
            raise ConfigError(f"{at}.period", f"must be 'day' or 'month', got '{period}'")
        kw.update(
            scope=(picked[0], r.string(m[picked[0]], f"{at}.{picked[0]}")),
            period=period,
            limit_usd=_positive(r, r.required(m, "limit_usd", at), f"{at}.limit_usd"),
        )
    return Rule(**kw)


def _number(v: Any, at: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(at, f"must be a number, got {v!r}")
    return float(v)


def _positive(r: Reader, v: Any, at: str) -> float:
    x = _number(v, at)
    if x <= 0:
        raise ConfigError(at, f"must be more than 0, got {v!r}")
    return x


def _non_negative(r: Reader, v: Any, at: str) -> float:
    x = _number(v, at)
    if x < 0:
        raise ConfigError(at, f"must not be negative, got {v!r}")
    return x
