"""Prometheus metrics at `GET /metrics`, in the text exposition format (version 0.0.4).

A record sink: each finished request updates counters and histograms in memory (a few dict operations, after
the response). Cost and latency are counters and histograms, never last-value gauges, so `rate()`,
`increase()` and `histogram_quantile()` work across scrapes and replicas. Labels are bounded in number and in
size: `user` only when `metrics.user_label` is on; past `metrics.max_series` series a metric counts new label
values as "(other)"; a label value longer than 128 characters is cut to 127 and ends with "…". Both are counted:
`relaycast_metrics_series_overflow_total{metric}` and `relaycast_metrics_label_values_truncated_total`.

Requests count for the model and provider of their final attempt; tokens and cost for each attempt's own (the
attribution every sink uses: a failover's two billed attempts on two models cost on both). Cost is summed as
integer pico-dollars and shown as the exact decimal text of that sum (`0.000000000123`): no float rounding, however
many records are added.

    relaycast_requests_total{route, model, provider, key, feature, outcome}      counter
    relaycast_tokens_total{model, provider, key, feature, type}                  counter (prompt, completion, cached, ...)
    relaycast_cost_usd_total{model, provider, key, feature}                      counter, exact to the pico-dollar
    relaycast_unpriced_requests_total{model, provider}                           counter (billed attempts)
    relaycast_request_duration_seconds{route, model, provider}                   histogram (end to end)
    relaycast_attempt_duration_seconds{provider, model, target}                  histogram (each attempt)
    relaycast_ttft_seconds{provider, model, target}                              histogram (streams)
    relaycast_attempts_total{provider, model, target, outcome}                   counter ("ok" or the error class)
    relaycast_metrics_series_overflow_total{metric}, relaycast_metrics_label_values_truncated_total   counters
    relaycast_target_state{target, state}, relaycast_target_demoted{route, target}, relaycast_pass_through_*,
    relaycast_broadcast_*, relaycast_store_*, relaycast_monitor_alerting{rule, scope}   read at scrape

The same sink keeps the gateway's own totals for `GET /admin/stats` (`stats_snapshot`): requests by status,
errors by class, and attempts and tokens by target (the first 1,000 targets by name, the rest as "(other)").
"""

from __future__ import annotations

import collections
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from relaycast.costs.money import format_usd
from relaycast.records import RequestRecord
from relaycast.telemetry.settings import MetricsConfig

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OTHER = "(other)"
MAX_LABEL_CHARS = 128  # a label value's length at most (user, feature and key names, upstream-reported models)
CUT_MARK = "…"
TOKEN_TYPES = ("prompt", "completion", "cached", "cache_write", "reasoning")
MAX_STATS_TARGETS = 1000  # targets counted by name in the /admin/stats totals; the rest are counted as OTHER


class _Bounds:
    """What the label bounds cost: values cut to `MAX_LABEL_CHARS`, and label sets counted as "(other)" by metric."""

    def __init__(self) -> None:
        self.truncated = 0
        self.overflow: collections.Counter[str] = collections.Counter()

    def cut(self, v: str) -> str:
        if len(v) <= MAX_LABEL_CHARS:
            return v
        self.truncated += 1
        return v[: MAX_LABEL_CHARS - len(CUT_MARK)] + CUT_MARK


class _Family:
    """One metric family: label tuples -> value, bounded in number of series and in the size of each value."""

    def __init__(
        self, name: str, kind: str, help_: str, labels: tuple[str, ...], max_series: int, bounds: _Bounds
    ) -> None:
        self.name, self.kind, self.help, self.labels = name, kind, help_, labels
        self.max = max_series
        self.values: dict[tuple[str, ...], Any] = {}
        self._bounds = bounds

    def key(self, values: tuple[str, ...], keep_last: int = 0) -> tuple[str, ...]:
        if values in self.values:  # the common case: a series that exists (its values were cut when it was made)
            return values
        if max(map(len, values), default=0) > MAX_LABEL_CHARS:
            values = tuple(map(self._bounds.cut, values))
        if values in self.values or len(self.values) < self.max:
            return values
        self._bounds.overflow[self.name] += 1
        n = len(values) - keep_last
        return tuple(OTHER for _ in range(n)) + values[n:]

    def inc(self, values: tuple[str, ...], amount: float = 1, keep_last: int = 0) -> None:
        v = self.values
        now = v.get(values)
        if now is not None:  # the common case, in one lookup less than `key` takes
            v[values] = now + amount
            return
        k = self.key(values, keep_last)
        v[k] = v.get(k, 0) + amount


class _Money(_Family):
    """A family of integer pico-dollar sums, rendered as exact decimal US dollars."""


class _Histogram(_Family):
    def observe(self, values: tuple[str, ...], seconds: float) -> None:
        h = self.values.get(values)
        if h is None:
            k = self.key(values)
            h = self.values.get(k)
            if h is None:
                h = self.values[k] = [0] * (len(BUCKETS_S) + 2)  # per-bucket counts, then sum, then count
        i = bisect_left(BUCKETS_S, seconds)  # the first bucket whose bound is >= seconds
        if i < len(BUCKETS_S):
            h[i] += 1
        h[-2] += seconds
        h[-1] += 1


class _Totals:
    """The /admin/stats view: unlabelled totals, and attempts and tokens by target."""

    def __init__(self, bounds: _Bounds) -> None:
        self._bounds = bounds
        self.requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()
        self.errors_by_class: collections.Counter[str] = collections.Counter()
        self.attempts: collections.Counter[tuple[str, str]] = collections.Counter()  # (target, "ok" | class)
        self.tokens: collections.Counter[tuple[str, str]] = collections.Counter()  # (target, prompt|completion)

    def request(self, rec: RequestRecord) -> None:
        self.requests += 1
        self.by_status[rec.status_code] += 1
        if rec.error_class:
            self.errors_by_class[rec.error_class] += 1

    def attempt(self, target: str, outcome: str, prompt_tokens: int, completion_tokens: int) -> None:
        target = self._bounds.cut(target)
        if (target, "prompt") not in self.tokens and len(self.tokens) >= 2 * MAX_STATS_TARGETS:
            target = OTHER
        self.attempts[(target, outcome)] += 1
        self.tokens[(target, "prompt")] += prompt_tokens
        self.tokens[(target, "completion")] += completion_tokens

    def snapshot(self) -> dict[str, Any]:
        targets: dict[str, dict[str, Any]] = {}
        for (target, outcome), n in self.attempts.items():
            targets.setdefault(target, {"attempts": {}, "tokens": {}})["attempts"][outcome] = n
        for (target, kind), n in self.tokens.items():
            targets.setdefault(target, {"attempts": {}, "tokens": {}})["tokens"][kind] = n
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "errors_by_class": dict(self.errors_by_class),
            "targets": targets,
        }


class Metrics:
    def __init__(self, cfg: MetricsConfig) -> None:
        self.cfg = cfg
        dims = ("model", "provider", "key", "feature") + (("user",) if cfg.user_label else ())
        m = cfg.max_series
        self.bounds = b = _Bounds()
        self.requests = _Family(
            "relaycast_requests_total",
            "counter",
            "Requests, by how they ended (ok, error, cancelled).",
            ("route", *dims, "outcome"),
            m,
            b,
        )
        self.tokens = _Family(
            "relaycast_tokens_total",
            "counter",
            "Tokens, by type (prompt includes cached and cache-write; completion includes reasoning).",
            (*dims, "type"),
            m,
            b,
        )
        self.cost = _Money(
            "relaycast_cost_usd_total",
            "counter",
            "Cost in US dollars, exact, by each attempt's model (computed, reported or estimated; unpriced excluded).",
            dims,
            m,
            b,
        )
        self.unpriced = _Family(
            "relaycast_unpriced_requests_total",
            "counter",
            "Billed attempts on models with no known price (their cost is not in relaycast_cost_usd_total).",
            ("model", "provider"),
            m,
            b,
        )
        self.duration = _Histogram(
            "relaycast_request_duration_seconds",
            "histogram",
            "End-to-end request duration.",
            ("route", "model", "provider"),
            m,
            b,
        )
        self.attempt_duration = _Histogram(
            "relaycast_attempt_duration_seconds",
            "histogram",
            "Duration of each provider attempt that succeeded.",
            ("provider", "model", "target"),
            m,
            b,
        )
        self.ttft = _Histogram(
            "relaycast_ttft_seconds",
            "histogram",
            "Time to first token of each streamed attempt.",
            ("provider", "model", "target"),
            m,
            b,
        )
        self.attempts = _Family(
            "relaycast_attempts_total",
            "counter",
            "Provider attempts, by outcome: ok or the error class.",
            ("provider", "model", "target", "outcome"),
            m,
            b,
        )
        self._totals = _Totals(b)
        self._families = (
            self.requests,
            self.tokens,
            self.cost,
            self.unpriced,
            self.duration,
            self.attempt_duration,
            self.ttft,
            self.attempts,
        )

    def __call__(self, rec: RequestRecord) -> None:
        a = rec.attribution
        final = rec.final_attempt
        model = final.model if final else rec.model_requested
        provider = final.provider if final else ""
        who: tuple[str, ...] = (a.key_name or "", a.feature or "")
        if self.cfg.user_label:
            who += (a.user or "",)
        outcome = (
            "cancelled" if rec.client_cancelled else ("error" if rec.status_code >= 400 or rec.error_class else "ok")
        )
        self._totals.request(rec)
        self.requests.inc((rec.model_requested, model, provider, *who, outcome), keep_last=1)
        self.duration.observe((rec.model_requested, model, provider), rec.duration_ns / 1e9)
        for at in rec.attempts:
            self.attempts.inc((at.provider, at.model, at.target, at.error_class or "ok"), keep_last=1)
            if at.ok:
                self.attempt_duration.observe((at.provider, at.model, at.target), at.duration_ns / 1e9)
                if at.ttft_ns is not None:
                    self.ttft.observe((at.provider, at.model, at.target), at.ttft_ns / 1e9)
            u = at.usage
            self._totals.attempt(
                at.target, at.error_class or "ok", u.prompt_tokens if u else 0, u.completion_tokens if u else 0
            )
            # Tokens and cost belong to the attempt's own model and provider, as in every other sink.
            if at.cost_source == "unpriced":
                self.unpriced.inc((at.model, at.provider))
            elif at.cost_pusd:
                self.cost.inc((at.model, at.provider, *who), int(at.cost_pusd))
            if u is not None:
                for t, n in zip(
                    TOKEN_TYPES,
                    (u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.cache_write_tokens, u.reasoning_tokens),
                    strict=True,
                ):
                    if n:
                        self.tokens.inc((at.model, at.provider, *who, t), n, keep_last=1)

    def stats_snapshot(self) -> dict[str, Any]:
        """The totals `GET /admin/stats` serves: requests, by_status, errors_by_class, and per target its attempts
        by outcome ("ok" or the error class) and its prompt and completion tokens."""
        return self._totals.snapshot()

    def render(
        self, gauges: Iterable[tuple[str, str, str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]] = ()
    ) -> bytes:
        """The exposition text; `gauges` adds families read at scrape time: (name, type, help, labels, samples)."""
        out: list[str] = []
        for f in self._families:
            out.append(f"# HELP {f.name} {f.help}\n# TYPE {f.name} {f.kind}\n")
            if isinstance(f, _Histogram):
                base = f.name
                for values, h in f.values.items():
                    lab = _labels(f.labels, values)
                    cum = 0
                    for i, b in enumerate(BUCKETS_S):
                        cum += h[i]
                        out.append(f"{base}_bucket{_join(lab, _le(b))} {cum}\n")
                    out.append(f"{base}_bucket{_join(lab, 'le=' + chr(34) + '+Inf' + chr(34))} {h[-1]}\n")
                    out.append(f"{base}_sum{{{lab}}} {_num(h[-2])}\n" if lab else f"{base}_sum {_num(h[-2])}\n")
                    out.append(f"{base}_count{{{lab}}} {h[-1]}\n" if lab else f"{base}_count {h[-1]}\n")
            else:
                show = _usd if isinstance(f, _Money) else _num
                for values, v in f.values.items():
                    out.append(f"{f.name}{{{_labels(f.labels, values)}}} {show(v)}\n")
        out.append(
            "# HELP relaycast_metrics_label_values_truncated_total Label values cut to "
            f"{MAX_LABEL_CHARS} characters.\n"
            "# TYPE relaycast_metrics_label_values_truncated_total counter\n"
            f"relaycast_metrics_label_values_truncated_total {self.bounds.truncated}\n"
            "# HELP relaycast_metrics_series_overflow_total Observations counted as (other): the metric was at "
            "metrics.max_series.\n"
            "# TYPE relaycast_metrics_series_overflow_total counter\n"
        )
        for f in self._families:
            out.append(f'relaycast_metrics_series_overflow_total{{metric="{f.name}"}} {self.bounds.overflow[f.name]}\n')
        cut = self.bounds.cut
        for name, kind, help_, labels, samples in gauges:
            out.append(f"# HELP {name} {help_}\n# TYPE {name} {kind}\n")
            for values, v in samples:
                if max(map(len, values), default=0) > MAX_LABEL_CHARS:
                    values = tuple(map(cut, values))
                lab = _labels(labels, values)
                out.append(f"{name}{{{lab}}} {_num(v)}\n" if lab else f"{name} {_num(v)}\n")
        return "".join(out).encode()


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values, strict=False))


def _le(b: float) -> str:
    return 'le="' + format(b, "g") + '"'


def _join(lab: str, extra: str) -> str:
    return "{" + (lab + "," if lab else "") + extra + "}"


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def _usd(pico: int) -> str:
    """Integer pico-dollars as exact decimal dollars: '0.000000000123', '118.5'."""
    return format_usd(pico) or "0"
