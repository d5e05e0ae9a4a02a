"""The price catalog: the data file shipped with the package (`prices.json`), and the one price type, `ModelPrice`.

Prices are given in USD per million tokens (and USD per request for `request` fees) as decimal text, and held as
integer pico-dollars per token, which is exact for any price with up to six decimals. The same type holds the
catalog's prices, the config's `prices:` and a route target's `price:`; `costs.pricer` resolves which one applies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from relaycast.costs.money import pico_from_usd

PER_MILLION = 10**6  # a price per 1M tokens in USD, times this, is pico-dollars per token
FIELDS = ("input", "output", "cached_input", "cache_write", "reasoning", "request")


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
    by_key: Mapping[str, ModelPrice]  # "vendor/model" and aliases
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
            vendor, _, model = key.partition("/")
            for name in (model, *(a for a in raw.get("aliases", ()) if "/" not in a or a.split("/", 1)[0] != vendor)):
                bare.setdefault(name, []).append(price)
        by_model = {name: ps[0] for name, ps in bare.items() if len(set(ps)) == 1}
        return cls(as_of=str(data.get("as_of", "")), by_key=by_key, by_model=by_model)
