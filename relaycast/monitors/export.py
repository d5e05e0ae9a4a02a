"""The configured monitor rules, exported for the places SREs already look:

- `prometheus`: alerting rules over relaycast's own `/metrics` (a rules file for Prometheus or Thanos/Mimir).
- `datadog`: monitor definitions for Datadog's monitor API (POST /api/v1/monitor), over the LLM Observability
  metrics Datadog derives from the spans relaycast broadcasts (`ml_obs.*`, tagged by `ml_app`, `model_name`,
  `model_provider`, `env`).

Both take the rules and the routes (route name -> its targets); Prometheus also whether `/metrics` carries the
user label, Datadog the options of the configured Datadog destination (for `ml_app` and `env`).

Each export says plainly where it can only approximate a rule: Prometheus has no calendar day, so a budget is a
rolling 24 h (30 d for a month); Datadog's LLM Observability metrics carry no user, feature or key tags, and a
change alert compares with one earlier window (not a mean of N), so such rules are exported at the closest scope
and the difference is written into the monitor's message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from relaycast.errors import PROVIDER_FAILURES
from relaycast.monitors.settings import Rule
from relaycast.telemetry.settings import DatadogOptions

Routes = Mapping[str, tuple[str, ...]]  # route name -> its targets ("provider/model"), in order

PROM_LABELS = {"model": "model", "provider": "provider", "key": "key", "feature": "feature", "user": "user"}
# The outcomes an error rate counts: provider failures, never client-caused refusals (relaycast.errors).
PROVIDER_FAILED = "|".join(sorted(PROVIDER_FAILURES))
CANCELLED = "client_cancelled|hedge_lost"


def _dur(s: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)}{unit}"
    return f"{int(s)}s"


def _sel(pairs: list[tuple[str, str, str]]) -> str:
    """PromQL selector from (label, op, value)."""
    inner = ",".join(f'{k}{op}"{_esc(v)}"' for k, op, v in pairs)
    return "{" + inner + "}" if inner else ""


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def _alert_name(rule: Rule) -> str:
    return "Relaycast_" + re.sub(r"[^A-Za-z0-9_]", "_", rule.name)


def _route_targets(routes: Routes, route: str) -> list[str]:
    targets = routes.get(route)
    return list(targets) if targets is not None else [route]


def prometheus_rule(rule: Rule, routes: Routes, user_label: bool) -> tuple[dict[str, Any], list[str]]:
    """One alerting rule, and notes on what it approximates."""
    notes: list[str] = []
    w = _dur(rule.window_s)
    labels = {"severity": "warning", "relaycast_rule": rule.name, "relaycast_kind": rule.kind}
    if rule.kind == "spend_spike":
        sel = _sel([(PROM_LABELS[k], "=", v) for k, v in rule.where])
        by = f" by ({PROM_LABELS[rule.by]})" if rule.by else ""
        if rule.by == "user" and not user_label:
            notes.append(
                "the user label is off in /metrics (metrics.user_label: false): this rule cannot split by user"
            )
        cur = f"sum{by}(increase(relaycast_cost_usd_total{sel}[{w}]))"
        n = rule.baseline_windows
        if rule.baseline == "previous":
            base = f"(sum{by}(increase(relaycast_cost_usd_total{sel}[{_dur(rule.window_s * n)}] offset {w})) / {n})"
        else:
            terms = " + ".join(
                f"sum{by}(increase(relaycast_cost_usd_total{sel}[{w}] offset {d}d))" for d in range(1, min(n, 30) + 1)
            )
            base = f"(({terms}) / {min(n, 30)})"
        expr = f"{cur} > {1 + rule.threshold_pct / 100:g} * {base} and {cur} >= {rule.min_usd:g}"
        summary = f"Spend over {w} grew more than {rule.threshold_pct:g}% against its baseline"
    elif rule.kind == "latency_sla":
        metric = "relaycast_ttft_seconds" if rule.metric.startswith("ttft_") else "relaycast_attempt_duration_seconds"
        q = float(rule.metric.rsplit("p", 1)[1]) / 100
        if rule.route is not None:
            targets = _route_targets(routes, rule.route)
            sel_pairs = [("target", "=~", "|".join(re.escape(t) for t in targets))]
        else:
            col = "model" if rule.model else "provider" if rule.provider else "target"
            sel_pairs = [(col, "=", getattr(rule, col))]
        sel = _sel(sel_pairs)
        quant = f"histogram_quantile({q:g}, sum by (le, target) (rate({metric}_bucket{sel}[{w}])))"
        count = f"sum by (target) (increase({metric}_count{sel}[{w}]))"
        expr = f"{quant} > {rule.threshold_ms / 1000:g} and {count} >= {rule.min_requests}"
        summary = f"{rule.metric} of {{{{ $labels.target }}}} over {rule.threshold_ms:g} ms"
    elif rule.kind == "error_rate":
        assert rule.provider is not None
        errs = [("provider", "=", rule.provider)] + (
            [("outcome", "=", rule.error_class)] if rule.error_class else [("outcome", "=~", PROVIDER_FAILED)]
        )
        total = _sel([("provider", "=", rule.provider), ("outcome", "!~", CANCELLED)])
        expr = (
            f"sum(increase(relaycast_attempts_total{_sel(errs)}[{w}])) / sum(increase(relaycast_attempts_total{total}[{w}])) "
            f"> {rule.threshold_pct / 100:g} and sum(increase(relaycast_attempts_total{total}[{w}])) >= {rule.min_requests}"
        )
        summary = f"{rule.provider} error rate over {rule.threshold_pct:g}%"
    else:
        assert rule.scope is not None
        dim, value = rule.scope
        span = "1d" if rule.period == "day" else "30d"
        notes.append(f"Prometheus has no calendar {rule.period}: this is spend over a rolling {span}")
        if dim == "user" and not user_label:
            notes.append("the user label is off in /metrics (metrics.user_label: false)")
        expr = f"sum(increase(relaycast_cost_usd_total{_sel([(PROM_LABELS[dim], '=', value)])}[{span}])) > {rule.limit_usd:g}"
        summary = f"{dim} {value} spent more than ${rule.limit_usd:g} in a {rule.period}"
    annotations = {"summary": summary, "relaycast_rule": rule.name}
    if notes:
        annotations["relaycast_notes"] = "; ".join(notes)
    return {"alert": _alert_name(rule), "expr": expr, "labels": labels, "annotations": annotations}, notes


def prometheus_rules(rules: Iterable[Rule], routes: Routes, user_label: bool) -> tuple[str, list[str]]:
    """A Prometheus rules file (YAML) for every rule, and the notes on approximations. `user_label`: whether
    `/metrics` carries the user label (`metrics.user_label`)."""
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for r in rules:
        rule, n = prometheus_rule(r, routes, user_label)
        out.append(rule)
        notes.extend(f"{r.name}: {x}" for x in n)
    doc = {"groups": [{"name": "relaycast", "rules": out}]}
    return yaml.safe_dump(doc, sort_keys=False, width=1000), notes


# --- Datadog ------------------------------------------------------------------------------------

DD_COST = "ml_obs.span.llm.total.cost"  # nanodollars, per LLM span (relaycast sends its cost as `total_cost`)
DD_SPANS = "ml_obs.span"
DD_ERRORS = "ml_obs.span.error"
DD_DURATION = "ml_obs.span.duration"  # seconds, a distribution
NANO = 1_000_000_000
DD_DIMS = {"model": "model_name", "provider": "model_provider"}  # the only scopes ml_obs metrics carry


def datadog_scope(datadog: DatadogOptions | None, ml_app: str | None) -> tuple[str, str | None, str]:
    """(ml_app, env, service) from the Datadog destination's options, or the given ml_app."""
    if datadog is not None:
        return ml_app or datadog.ml_app, datadog.env, datadog.service
    return ml_app or "relaycast", None, "relaycast"


def _tags(base: list[str], pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(base + [f"{k}:{v}" for k, v in pairs]) + "}"


def datadog_monitor(
    rule: Rule, routes: Routes, ml_app: str, env: str | None, vendors: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """`vendors`: each configured provider's vendor (`providers.presets.vendor`), which spans carry as
    `model_provider`; a provider rule is scoped by its vendor."""
    notes: list[str] = []
    known = vendors or {}

    def vendor_of(provider: str) -> str:
        if vendors is not None and provider not in known:
            notes.append(
                f"Datadog's model_provider is the vendor, and provider {provider} serves several: scoped by its "
                "name, which spans do not carry (scope the rule by model instead)"
            )
            return provider
        v = known.get(provider, provider)
        if v != provider:
            notes.append(
                f"Datadog's model_provider is the vendor: provider {provider} is scoped as {v} "
                "(every provider serving its models)"
            )
        return v

    base = [f"ml_app:{ml_app}"] + ([f"env:{env}"] if env else [])
    w = _dur(rule.window_s)
    message = f"relaycast rule `{rule.name}` ({rule.kind})."
    options: dict[str, Any] = {"notify_no_data": False, "include_tags": True, "renotify_interval": 0}
    if rule.kind == "spend_spike":
        scope = [(DD_DIMS[k], vendor_of(v) if k == "provider" else v) for k, v in rule.where if k in DD_DIMS]
        lost = [k for k, _ in rule.where if k not in DD_DIMS] + (
            [rule.by] if rule.by and rule.by not in DD_DIMS else []
        )
        if lost:
            notes.append(
                f"Datadog's LLM Observability metrics have no {', '.join(sorted(set(lost)))} tag: exported for the whole ml_app"
            )
        by = f" by {{{DD_DIMS[rule.by]}}}" if rule.by in DD_DIMS else ""
        shift = w if rule.baseline == "previous" else "1d"
        if rule.baseline_windows > 1:
            notes.append(
                f"a change alert compares with the one window {shift} earlier, not the mean of {rule.baseline_windows}"
            )
        if rule.min_usd > 0:
            notes.append(
                f"the ${rule.min_usd:g} floor is not part of the query (combine with a threshold monitor on {DD_COST})"
            )
        query = f"pct_change(sum(last_{w}),last_{shift}):sum:{DD_COST}{_tags(base + ['span_kind:llm'], scope)}{by}.as_count() > {rule.threshold_pct:g}"
        options["thresholds"] = {"critical": float(rule.threshold_pct)}
        message += f" LLM spend over {w} grew more than {rule.threshold_pct:g}% against the window {shift} earlier."
    elif rule.kind == "latency_sla":
        pairs: list[tuple[str, str]] = []
        if rule.model:
            pairs = [("model_name", rule.model)]
        elif rule.provider:
            pairs = [("model_provider", vendor_of(rule.provider))]
        else:
            targets = _route_targets(routes, rule.route) if rule.route else [rule.target or ""]
            models = sorted({t.split("/", 1)[1] for t in targets if "/" in t})
            if len(models) == 1:
                pairs = [("model_name", models[0])]
            notes.append(
                "LLM Observability metrics carry model and provider, not relaycast routes or targets: scoped by model"
            )
        if rule.metric.startswith("ttft_"):
            notes.append("time to first token is not an LLM Observability metric: exported on the span duration")
        q = rule.metric.rsplit("p", 1)[1]
        query = f"percentile(last_{w}):p{q}:{DD_DURATION}{_tags(base + ['span_kind:llm'], pairs)} by {{model_name}} > {rule.threshold_ms / 1000:g}"
        options["thresholds"] = {"critical": rule.threshold_ms / 1000}
        message += f" p{q} latency over {rule.threshold_ms:g} ms for {{{{model_name.name}}}}."
    elif rule.kind == "error_rate":
        assert rule.provider is not None
        sel = _tags(base + ["span_kind:llm"], [("model_provider", vendor_of(rule.provider))])
        if rule.error_class:
            notes.append("LLM Observability metrics have no error class tag: this counts every error")
        else:
            notes.append(
                "LLM Observability counts every error span, client-caused refusals included; relaycast's own rule "
                "counts provider failures only"
            )
        query = f"sum(last_{w}):sum:{DD_ERRORS}{sel}.as_count() / sum:{DD_SPANS}{sel}.as_count() * 100 > {rule.threshold_pct:g}"
        options["thresholds"] = {"critical": float(rule.threshold_pct)}
        message += f" {rule.provider} error rate over {rule.threshold_pct:g}% (at least {rule.min_requests} requests in relaycast's rule)."
    else:
        assert rule.scope is not None
        dim, value = rule.scope
        pairs = [(DD_DIMS[dim], vendor_of(value) if dim == "provider" else value)] if dim in DD_DIMS else []
        if dim not in DD_DIMS:
            notes.append(f"Datadog's LLM Observability metrics have no {dim} tag: exported for the whole ml_app")
        span = "1d" if rule.period == "day" else "1w"
        if rule.period == "month":
            notes.append(
                "Datadog metric monitors look back at most a week or so: a monthly budget becomes a weekly share of it"
            )
        limit = rule.limit_usd if rule.period == "day" else rule.limit_usd * 7 / 30
        query = (
            f"sum(last_{span}):sum:{DD_COST}{_tags(base + ['span_kind:llm'], pairs)}.as_count() / {NANO} > {limit:g}"
        )
        options["thresholds"] = {"critical": float(limit)}
        message += f" {dim} {value} spent more than ${limit:g} over {span}."
    if notes:
        message += " Note: " + "; ".join(notes) + "."
    monitor = {
        "name": f"[relaycast] {rule.name}",
        "type": "query alert",
        "query": query,
        "message": message,
        "tags": ["source:relaycast", f"relaycast_rule:{rule.name}", f"ml_app:{ml_app}"],
        "options": options,
        "priority": 3,
    }
    return monitor, notes


def datadog_monitors(
    rules: Iterable[Rule],
    routes: Routes,
    datadog: DatadogOptions | None,
    ml_app: str | None = None,
    vendors: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Datadog monitor definitions for every rule, and the notes on approximations. `datadog`: the options of the
    configured Datadog destination (None: none is configured); `ml_app` overrides its ml_app; `vendors`: each
    configured provider's vendor."""
    app, env, _ = datadog_scope(datadog, ml_app)
    out: list[dict[str, Any]] = []
    notes: list[str] = []
    for r in rules:
        m, n = datadog_monitor(r, routes, app, env, vendors)
        out.append(m)
        notes.extend(f"{r.name}: {x}" for x in n)
    return out, notes
