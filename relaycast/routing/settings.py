"""Routes (the `models:` section) and routing health settings (the `routing:` section), validated at load.

models:
  - name: fast
    strategy: lowest_latency          # priority (default) | weighted | lowest_latency | lowest_cost
    targets:
      - openai/gpt-4o-mini
      - {target: groq/llama-3.1-8b-instant, weight: 2, price: {input: 0.05, output: 0.08}}   # USD per 1M tokens
    sla: {p99_ms: 3000, ttft_p99_ms: 800}   # a target over its SLA is demoted
    timeouts: {connect: 3, ttft: 2, idle: 10, total: 30}   # seconds; total is the request's deadline
    retries: 1                        # same-target retries per request, with backoff, within the deadline
    hedge_after_ms: 400               # streams: start the next target if no first token by then
    content_policy_fallback: anthropic/claude-3-5-haiku-latest
    context_length_fallback: [openai/gpt-4.1]
routing:
  window_s: 60                        # rolling window of the health statistics
  min_requests: 10                    # before an error rate or a p99 counts
  error_rate: 0.5                     # a target failing more than this share is demoted
  circuit: {failures: 5, cooldown_s: 30}
  probe_share: 0.05                   # share of requests that try a demoted target first
  rate_limit_cooldown_s: 5            # without Retry-After
  quota_cooldown_s: 300               # quota or billing exhausted

A target's `price:` is a `costs.ModelPrice` (source "route"): it overrides the catalog's price for that target, and
the config's `prices:` override it (see `costs.pricer`). `lowest_cost` needs no `price:`: it orders by whatever
price the pricer knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relaycast.config_reader import ConfigError, Reader, did_you_mean
from relaycast.costs.catalog import ModelPrice
from relaycast.costs.settings import parse_price

if TYPE_CHECKING:
    from relaycast.providers.settings import ProviderConfig

STRATEGIES = ("priority", "weighted", "lowest_latency", "lowest_cost")


@dataclass(frozen=True, slots=True)
class RouteTimeouts:
    connect_s: float | None = None
    ttft_s: float | None = None
    idle_s: float | None = None
    total_s: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    targets: tuple[str, ...]  # "provider/model", in order of preference
    weights: tuple[float, ...] = ()
    prices: tuple[ModelPrice | None, ...] = ()  # a target's `price:` (source "route"), by position
    strategy: str = "priority"
    sla_p99_ms: float | None = None
    sla_ttft_p99_ms: float | None = None
    timeouts: RouteTimeouts = RouteTimeouts()
    retries: int = 0
    hedge_after_s: float | None = None
    content_policy_fallback: tuple[str, ...] = ()
    context_length_fallback: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    window_s: float = 60.0
    min_requests: int = 10
    error_rate: float = 0.5
    circuit_failures: int = 5
    circuit_cooldown_s: float = 30.0
    probe_share: float = 0.05
    rate_limit_cooldown_s: float = 5.0
    quota_cooldown_s: float = 300.0


ROUTE_KEYS = {
    "name",
    "targets",
    "strategy",
    "sla",
    "timeouts",
    "retries",
    "hedge_after_ms",
    "content_policy_fallback",
    "context_length_fallback",
}


def parse_routes(r: Reader, raw: Any, providers: dict[str, ProviderConfig]) -> dict[str, Route]:
    if raw is None:
        return {}
    out: dict[str, Route] = {}
    for i, item in enumerate(r.sequence(raw, "models")):
        at = f"models[{i}]"
        m = r.mapping(item, at, ROUTE_KEYS)
        name = r.string(r.required(m, "name", at), f"{at}.name")
        if name in out:
            raise ConfigError(f"{at}.name", f"duplicate model alias '{name}'")
        if "/" in name and name.split("/", 1)[0] in providers:
            raise ConfigError(f"{at}.name", f"'{name}' would shadow a provider's model; pick another alias")
        items = r.sequence(r.required(m, "targets", at), f"{at}.targets")
        if not items:
            raise ConfigError(f"{at}.targets", "needs at least one target")
        targets: list[str] = []
        weights: list[float] = []
        prices: list[ModelPrice | None] = []
        for j, t in enumerate(items):
            tat = f"{at}.targets[{j}]"
            weight, price = 1.0, None
            if isinstance(t, dict):
                tm = r.mapping(t, tat, {"target", "weight", "price"})
                t = r.required(tm, "target", tat)
                if "weight" in tm:
                    weight = r.number(tm["weight"], f"{tat}.weight")
                if tm.get("price") is not None:
                    price = _price(r, tm["price"], f"{tat}.price")
            targets.append(_target(r, t, tat, providers))
            weights.append(weight)
            prices.append(price)
        strategy = r.string(m.get("strategy", "priority"), f"{at}.strategy")
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"{at}.strategy",
                f"unknown strategy '{strategy}'{did_you_mean(strategy, STRATEGIES)} (expected one of: "
                f"{', '.join(STRATEGIES)})",
            )
        sla = r.mapping(m["sla"], f"{at}.sla", {"p99_ms", "ttft_p99_ms"}) if m.get("sla") is not None else {}
        tm = (
            r.mapping(m["timeouts"], f"{at}.timeouts", {"connect", "ttft", "idle", "total"})
            if m.get("timeouts") is not None
            else {}
        )
        hedge = m.get("hedge_after_ms")
        out[name] = Route(
            name=name,
            targets=tuple(targets),
            weights=tuple(weights),
            prices=tuple(prices),
            strategy=strategy,
            sla_p99_ms=r.number(sla["p99_ms"], f"{at}.sla.p99_ms") if "p99_ms" in sla else None,
            sla_ttft_p99_ms=r.number(sla["ttft_p99_ms"], f"{at}.sla.ttft_p99_ms") if "ttft_p99_ms" in sla else None,
            timeouts=RouteTimeouts(
                *(
                    r.number(tm[k], f"{at}.timeouts.{k}") if k in tm else None
                    for k in ("connect", "ttft", "idle", "total")
                )
            ),
            retries=r.integer(m.get("retries", 0), f"{at}.retries", 0, 10),
            hedge_after_s=r.number(hedge, f"{at}.hedge_after_ms") / 1000 if hedge is not None else None,
            content_policy_fallback=_fallback(
                r, m.get("content_policy_fallback"), f"{at}.content_policy_fallback", providers
            ),
            context_length_fallback=_fallback(
                r, m.get("context_length_fallback"), f"{at}.context_length_fallback", providers
            ),
        )
    return out


def parse_routing(r: Reader, raw: Any) -> RoutingSettings:
    if raw is None:
        return RoutingSettings()
    keys = {
        "window_s",
        "min_requests",
        "error_rate",
        "circuit",
        "probe_share",
        "rate_limit_cooldown_s",
        "quota_cooldown_s",
    }
    m = r.mapping(raw, "routing", keys)
    d = RoutingSettings()
    c = r.mapping(m["circuit"], "routing.circuit", {"failures", "cooldown_s"}) if m.get("circuit") is not None else {}
    return RoutingSettings(
        window_s=r.number(m.get("window_s", d.window_s), "routing.window_s"),
        min_requests=r.integer(m.get("min_requests", d.min_requests), "routing.min_requests", 1),
        error_rate=_share(r, m.get("error_rate", d.error_rate), "routing.error_rate"),
        circuit_failures=r.integer(c.get("failures", d.circuit_failures), "routing.circuit.failures", 1),
        circuit_cooldown_s=r.number(c.get("cooldown_s", d.circuit_cooldown_s), "routing.circuit.cooldown_s"),
        probe_share=_share(r, m.get("probe_share", d.probe_share), "routing.probe_share"),
        rate_limit_cooldown_s=r.number(
            m.get("rate_limit_cooldown_s", d.rate_limit_cooldown_s), "routing.rate_limit_cooldown_s"
        ),
        quota_cooldown_s=r.number(m.get("quota_cooldown_s", d.quota_cooldown_s), "routing.quota_cooldown_s"),
    )


def _target(r: Reader, t: Any, at: str, providers: dict[str, ProviderConfig]) -> str:
    text = r.string(t, at)
    prov, sep, model = text.partition("/")
    if not sep or not model:
        raise ConfigError(at, f"'{text}' is not of the form provider/model")
    if prov not in providers:
        raise ConfigError(at, f"unknown provider '{prov}'{did_you_mean(prov, providers)}")
    return text


def _fallback(r: Reader, v: Any, at: str, providers: dict[str, ProviderConfig]) -> tuple[str, ...]:
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else r.sequence(v, at)
    return tuple(_target(r, t, f"{at}[{i}]" if not isinstance(v, str) else at, providers) for i, t in enumerate(items))


def _share(r: Reader, v: Any, at: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ConfigError(at, f"must be a number from 0 to 1, got {v!r}")
    return float(v)


def _price(r: Reader, raw: Any, at: str) -> ModelPrice:
    """A target's `price: {input, output}` in USD per million tokens (a missing one is 0)."""
    pm = r.mapping(raw, at, {"input", "output"})
    usd = {k: _money(pm.get(k, 0), f"{at}.{k}") for k in ("input", "output")}
    return parse_price(usd, "route", at)


def _money(v: Any, at: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ConfigError(at, f"must be a price in USD per million tokens, got {v!r}")
    return float(v)
