"""The one price type, `ModelPrice`: what a model costs per unit, in integer pico-dollars, as one request sees it.

The same type holds a catalog price resolved for a date and a service tier (`costs.genai`), the config's `prices:`
and a route target's `price:` (parsed here, from USD per million tokens). `costs.compute` prices usage with it.

Rates are pico-dollars per token (per request for `request`, per search for `web_search`), exact for any price of up
to six decimals per million tokens. A catalog price finer than that (a few list prices carry float artefacts such as
0.18000000000000002, or thirds of a cent) keeps its exact rates in `fine`, scaled by `fine.scale`, and the integer
fields hold them rounded to the pico-dollar: routing and budget reservations read the rounded ones, the cost of an
attempt the exact ones (rounded once, at the end).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from relaycast.costs.money import pico_from_usd

PER_MILLION = 10**6  # a price per 1M tokens in USD, times this, is pico-dollars per token
TOKEN_FIELDS = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "input_audio",
    "output_audio",
)
UNIT_FIELDS = ("request", "web_search")  # USD per request, USD per web search
FIELDS = (*TOKEN_FIELDS, *UNIT_FIELDS)
TIERS_FIELD = "above_tokens"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Pico-dollars per token (per request for `request`, per search for `web_search`).

    A `None` rate is one the price does not list: such tokens are priced at their parent's rate (1h cache writes as
    cache writes, audio as text), a search at nothing, and an attempt that has any is marked "estimated".
    `tiers`: (above, price) in ascending order; the last whose `above` the request's prompt tokens exceed prices the
    whole request instead (a long-context tier, as providers and genai-prices apply them)."""

    input: int
    output: int
    cached_input: int
    cache_write: int
    reasoning: int
    request: int = 0
    source: str = "catalog"  # "catalog" | "config" | "route"
    cache_write_1h: int | None = None
    input_audio: int | None = None
    output_audio: int | None = None
    web_search: int | None = None
    tiers: tuple[tuple[int, ModelPrice], ...] = ()
    fine: ModelPrice | None = None  # the exact rates, times `scale`, when a list price is finer than a pico-dollar
    scale: int = 1

    def at_prompt(self, prompt_tokens: int) -> ModelPrice:
        """The price of a request of `prompt_tokens` prompt tokens: its tier's, or this one."""
        p = self
        for above, tier in self.tiers:
            if prompt_tokens > above:
                p = tier
            else:
                break
        return p

    @classmethod
    def parse(cls, raw: Mapping[str, Any], source: str, where: str) -> ModelPrice:
        """A price of the config (USD per million tokens; `request` and `web_search` in USD each), with optional
        tiers: `above_tokens: {200000: {input: ..., output: ...}}` (a tier's missing fields are the base's)."""
        unknown = set(raw) - set(FIELDS) - {TIERS_FIELD}
        if unknown:
            raise ValueError(
                f"{where}: unknown price field(s) {', '.join(sorted(map(str, unknown)))} "
                f"(known: {', '.join(FIELDS)}, {TIERS_FIELD})"
            )
        if "input" not in raw and "output" not in raw:
            raise ValueError(f"{where}: a price needs at least 'input' or 'output'")
        vals = _values(raw, where)
        base = from_rates(vals, source)
        raw_tiers = raw.get(TIERS_FIELD)
        if raw_tiers is None:
            return base
        if not isinstance(raw_tiers, Mapping) or not raw_tiers:
            raise ValueError(f"{where}.{TIERS_FIELD}: must map a prompt size to the prices above it")
        tiers: list[tuple[int, ModelPrice]] = []
        for above, spec in raw_tiers.items():
            at = f"{where}.{TIERS_FIELD}.{above}"
            try:
                n = int(str(above))
            except ValueError:
                raise ValueError(f"{at}: a tier's key is a number of prompt tokens, got {above!r}") from None
            if n < 0:
                raise ValueError(f"{at}: must not be negative")
            if not isinstance(spec, Mapping):
                raise ValueError(f"{at}: must be a mapping of prices")
            bad = set(spec) - set(TOKEN_FIELDS)
            if bad:
                raise ValueError(
                    f"{at}: unknown tier price field(s) {', '.join(sorted(map(str, bad)))} (known: "
                    f"{', '.join(TOKEN_FIELDS)})"
                )
            tv = _values(spec, at)
            tiers.append((n, from_rates({**vals, **tv}, source)))
        tiers.sort(key=lambda t: t[0])
        if len({n for n, _ in tiers}) != len(tiers):
            raise ValueError(f"{where}.{TIERS_FIELD}: two tiers start at the same size")
        return replace(base, tiers=tuple(tiers))


def _values(raw: Mapping[str, Any], where: str) -> dict[str, int]:
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
        if f in TOKEN_FIELDS:
            if pico % PER_MILLION:
                raise ValueError(f"{where}.{f}: {v!r} has more than six decimals per million tokens")
            pico //= PER_MILLION
        vals[f] = pico
    return vals


def from_rates(vals: Mapping[str, int], source: str, scale: int = 1) -> ModelPrice:
    """A price from its given rates, as genai-prices prices unlisted ones: cached reads and cache writes default to
    the input rate, reasoning to the output rate, a request to nothing; 1h cache writes, audio and web searches stay
    unlisted (None: their parent's rate, and the attempt "estimated"). `scale`: what the rates are multiplied by."""
    inp = vals.get("input", 0)
    out = vals.get("output", 0)
    return ModelPrice(
        input=inp,
        output=out,
        cached_input=vals.get("cached_input", inp),
        cache_write=vals.get("cache_write", inp),
        reasoning=vals.get("reasoning", out),
        request=vals.get("request", 0),
        source=source,
        cache_write_1h=vals.get("cache_write_1h"),
        input_audio=vals.get("input_audio"),
        output_audio=vals.get("output_audio"),
        web_search=vals.get("web_search"),
        scale=scale,
    )


FREE = ModelPrice(0, 0, 0, 0, 0, 0, source="catalog", web_search=0)
