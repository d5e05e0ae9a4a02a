"""The price catalog: the data file shipped with the package, extended and overridden by the config.

Prices are given in USD per million tokens (and USD per request for `request` fees) as decimal text, and held as
integer pico-dollars per token, which is exact for any price with up to six decimals. Lookup for an attempt on
provider `p` (of kind `k`) and model `m`, first match wins:

1. the config's `prices`: `p/m`, then `m`;
2. the price on the route's target (`models: ... price:`);
3. the catalog: `k/m`, then `m` alone when exactly one catalog entry (or alias) carries that name, except for
   self-hosted kinds (vLLM, Ollama), whose models have no list price.

A suffix after '@' (`gpt-4o-mini@fast`, the fake upstream's behaviour syntax) or ':' (OpenRouter variants such as
`:nitro`) is tried off when the full name is not found; `:free` is priced at zero.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from relaycast.costs.money import pico_from_usd

PER_MILLION = 10**6  # a price per 1M tokens in USD, times this, is pico-dollars per token
SELF_HOSTED = frozenset({"vllm", "ollama"})
FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning", "request")
MAX_MEMO = 10_000


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Pico-dollars per token (per request for `request`)."""

    input: int
    output: int
    cached_input: int
    cache_write: int
    reasoning: int
    request: int = 0
    source: str = "catalog"  # "catalog" | "config" | "route"

    @classmethod
    def parse(cls, raw: Mapping[str, Any], source: str, where: str) -> ModelPrice:
        unknown = set(raw) - set(FIELDS) - {"aliases"}
        if unknown:
            raise ValueError(
                f"{where}: unknown price field(s) {', '.join(sorted(unknown))} (known: {', '.join(FIELDS)})"
            )
        if "input" not in raw and "output" not in raw:
            raise ValueError(f"{where}: a price needs at least 'input' or 'output'")
        vals: dict[str, int] = {}
        for f in FIELDS:
            if raw.get(f) is None:
                continue
            v = raw[f]
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise ValueError(f"{where}.{f}: must be a number, got {v!r}")
            try:
                pico = pico_from_usd(v, exact=True)  # a YAML float arrives as its shortest repr: 0.15, not 0.1499...
            except ValueError as e:
                raise ValueError(f"{where}.{f}: {e}") from None
            if pico < 0:
                raise ValueError(f"{where}.{f}: must not be negative")
            if f != "request":
                if pico % PER_MILLION:
                    raise ValueError(f"{where}.{f}: {v!r} has more than six decimals per million tokens")
                pico //= PER_MILLION
            vals[f] = pico
        inp = vals.get("input", 0)
        out = vals.get("output", 0)
        return cls(
            input=inp,
            output=out,
            cached_input=vals.get("cached_input", inp),
            cache_write=vals.get("cache_write", inp),
            reasoning=vals.get("reasoning", out),
            request=vals.get("request", 0),
            source=source,
        )


FREE = ModelPrice(0, 0, 0, 0, 0, 0, source="catalog")


@dataclass(frozen=True, slots=True)
class Catalog:
    as_of: str
    by_key: Mapping[str, ModelPrice]  # "kind/model" and aliases
    by_model: Mapping[str, ModelPrice]  # bare model names that are unambiguous

    @classmethod
    def packaged(cls) -> Catalog:
        text = resources.files("relaycast.costs").joinpath("prices.json").read_text()
        return cls.from_json(json.loads(text))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalog:
        by_key: dict[str, ModelPrice] = {}
        bare: dict[str, list[ModelPrice]] = {}
        for key, raw in data["models"].items():
            price = ModelPrice.parse(raw, "catalog", f"prices.json: {key}")
            names = [key, *raw.get("aliases", ())]
            for name in names:
                by_key[name] = price
            kind, _, model = key.partition("/")
            for name in (model, *(a for a in raw.get("aliases", ()) if "/" not in a or a.split("/", 1)[0] != kind)):
                bare.setdefault(name, []).append(price)
        by_model = {name: ps[0] for name, ps in bare.items() if len(set(ps)) == 1}
        return cls(as_of=str(data.get("as_of", "")), by_key=by_key, by_model=by_model)


class Pricer:
    """Resolves the price of (provider, model), memoised. `kinds` maps provider names to their preset kind."""

    def __init__(
        self,
        catalog: Catalog,
        kinds: Mapping[str, str],
        overrides: Mapping[str, ModelPrice] | None = None,
        route_prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self.catalog = catalog
        self._kinds = dict(kinds)
        self._overrides = dict(overrides or {})
        self._routes = dict(route_prices or {})
        self._memo: dict[tuple[str, str], ModelPrice | None] = {}

    def price(self, provider: str, model: str) -> ModelPrice | None:
        key = (provider, model)
        try:
            return self._memo[key]
        except KeyError:
            pass
        found = self._find(provider, model)
        if len(self._memo) >= MAX_MEMO:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _find(self, provider: str, model: str) -> ModelPrice | None:
        for name in _candidates(model):
            if name.endswith(":free"):
                return FREE
            hit = (
                self._overrides.get(f"{provider}/{name}")
                or self._overrides.get(name)
                or self._routes.get(f"{provider}/{name}")
            )
            if hit is not None:
                return hit
            kind = self._kinds.get(provider, "")
            hit = self.catalog.by_key.get(f"{kind}/{name}")
            if hit is None and kind == "openrouter":
                hit = self.catalog.by_key.get(name)
            if hit is None and kind not in SELF_HOSTED:
                hit = self.catalog.by_model.get(name)
            if hit is not None:
                return hit
        return None


def _candidates(model: str) -> list[str]:
    names = [model]
    if "@" in model:
        names.append(model.split("@", 1)[0])
    for n in list(names):
        if ":" in n:
            names.append(n.split(":", 1)[0])
    return names
