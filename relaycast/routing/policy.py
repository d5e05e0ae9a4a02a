"""Routing policy: order a route's candidate targets for one request. Pure: no I/O, no clock, no shared state.

Order of decisions:
1. the request's OpenRouter `provider` preferences filter (`only`, `ignore`, `max_price`);
2. the strategy orders (`priority`, `weighted`, `lowest_latency`, `lowest_cost`, or the request's `sort`:
   price / throughput / latency), then `provider.order` puts the named providers first;
3. health partitions: healthy targets first, demoted ones after them (a small share of requests probes the
   first demoted target first, so a recovered target wins its traffic back), rate-limited ones only as a last
   resort, open circuits never;
4. `allow_fallbacks: false` keeps only the first.

Prices are each candidate's `costs.ModelPrice` as the pricer resolves it (the config's `prices:`, a route
target's `price:`, the packaged catalog). `lowest_cost` and `sort: "price"` order by input + output price per
token, ties in route order; a target with no known price sorts after every priced one. `max_price` (`prompt`,
`completion`: USD per million tokens, compared exactly) keeps the targets priced at or under each cap given; a
target with no known price is excluded, as OpenRouter does, since it cannot be shown to be under the cap.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from relaycast.costs.catalog import PER_MILLION, ModelPrice
from relaycast.costs.money import pico_from_usd
from relaycast.routing.target import Target
from relaycast.schema import ProviderPrefs


@dataclass(frozen=True, slots=True)
class Candidate:
    target: Target
    kind: str = ""  # the provider's preset ("openai", "anthropic", ...), matched by `provider` preferences too
    weight: float = 1.0
    price: ModelPrice | None = None  # None: no known price (the planner reads prices only when `uses_price`)
    state: str = "ok"  # ok | cooling | open | half_open | probing
    demoted: bool = False
    p50_ms: float | None = None
    p99_ms: float | None = None
    tokens_per_s: float | None = None

    def named(self, names: frozenset[str]) -> bool:
        return self.target.provider.lower() in names or self.kind.lower() in names


def order(
    candidates: Sequence[Candidate],
    strategy: str,
    prefs: ProviderPrefs,
    rng: random.Random,
    probe_share: float = 0.0,
) -> list[Target]:
    cands = list(candidates)
    if prefs.only:
        only = frozenset(p.lower() for p in prefs.only)
        cands = [c for c in cands if c.named(only)]
    if prefs.ignore:
        ignore = frozenset(p.lower() for p in prefs.ignore)
        cands = [c for c in cands if not c.named(ignore)]
    if prefs.max_prompt_price is not None or prefs.max_completion_price is not None:
        prompt_cap, completion_cap = _cap(prefs.max_prompt_price), _cap(prefs.max_completion_price)
        cands = [c for c in cands if _within(c.price, prompt_cap, completion_cap)]
    cands = _by_strategy(cands, prefs.sort or strategy, rng)
    if prefs.order:
        rank = {p.lower(): i for i, p in enumerate(prefs.order)}
        cands.sort(
            key=lambda c: min(rank.get(c.target.provider.lower(), len(rank)), rank.get(c.kind.lower(), len(rank)))
        )
    healthy = [c for c in cands if c.state in ("ok", "half_open") and not c.demoted]
    demoted = [c for c in cands if c.state in ("ok", "half_open") and c.demoted]
    cooling = [c for c in cands if c.state == "cooling"]
    if demoted and probe_share > 0 and rng.random() < probe_share:
        healthy, demoted = [demoted[0], *healthy], demoted[1:]
    out = [c.target for c in (*healthy, *demoted)]
    if not out:
        out = [c.target for c in sorted(cooling, key=lambda c: c.demoted)]
    if not prefs.allow_fallbacks:
        out = out[:1]
    return out


def uses_price(strategy: str, prefs: ProviderPrefs) -> bool:
    """Whether ordering for this strategy and these preferences reads the candidates' prices."""
    return (
        strategy == "lowest_cost"
        or prefs.sort == "price"
        or prefs.max_prompt_price is not None
        or prefs.max_completion_price is not None
    )


def _cap(usd_per_million: float | None) -> int | None:
    """A cap in USD per million tokens as pico-dollars per million tokens (exact: 0.15 is 150_000_000_000)."""
    return None if usd_per_million is None else pico_from_usd(usd_per_million)


def _within(price: ModelPrice | None, prompt_cap: int | None, completion_cap: int | None) -> bool:
    if price is None:
        return False  # an unknown price cannot be shown to be under the cap
    if prompt_cap is not None and price.input * PER_MILLION > prompt_cap:
        return False
    return completion_cap is None or price.output * PER_MILLION <= completion_cap


def _by_strategy(cands: list[Candidate], strategy: str, rng: random.Random) -> list[Candidate]:
    if strategy == "weighted":
        return _weighted_shuffle(cands, rng)
    if strategy in ("lowest_latency", "latency"):
        # Unknown latency sorts first: a target with no recent traffic gets explored.
        return sorted(cands, key=lambda c: -1.0 if c.p99_ms is None else c.p99_ms)
    if strategy in ("lowest_cost", "price"):
        return sorted(cands, key=lambda c: (1, 0) if c.price is None else (0, c.price.input + c.price.output))
    if strategy == "throughput":
        return sorted(cands, key=lambda c: -(c.tokens_per_s or 0.0))
    return cands


def _weighted_shuffle(cands: list[Candidate], rng: random.Random) -> list[Candidate]:
    """Draw without replacement, each draw in proportion to the weights left (Efraimidis-Spirakis keys)."""
    keyed = [(rng.random() ** (1.0 / c.weight) if c.weight > 0 else 0.0, c) for c in cands]
    keyed.sort(key=lambda kc: -kc[0])
    return [c for _, c in keyed]
