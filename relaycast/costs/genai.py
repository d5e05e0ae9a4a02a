"""A genai-prices model as relaycast prices it: resolved for a date and a service tier ONCE, converted to `ModelPrice`.

genai-prices (`genai_prices.types`) lists a model's prices per unit as Decimal USD per million tokens (per thousand
requests or searches), possibly as `TieredPrices` (the whole request at the tier's rate once its input tokens pass
the tier's `start`), possibly by date (`ConditionalPrice` with a start date or a time of day: the last active one
wins) and by request context (`price_variants`, e.g. `service_tier: priority`, each with its own start date).
`calc_price` walks all of that per call (tens of microseconds); `Listing.at` does it once per (UTC day, time-of-day
segment, service tier) and keeps the result, so pricing a request is integer arithmetic (`costs.compute`).

Units relaycast's usage carries are converted: input, output, cache reads, cache writes (and their 1-hour part),
reasoning, audio in and out, web searches, requests. Others (images, video, documents, characters, storage
searches, audio hours) are never reported by relaycast's upstream adapters, so they count zero here as they would in
`calc_price` with the same usage; `unsupported_units` names them for `relaycast prices show`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from genai_prices import types as gp

from relaycast.costs.price import ModelPrice, from_rates

# genai-prices price keys -> ModelPrice fields, with the factor from the key's unit to pico-dollars per unit.
TOKEN_KEYS: Mapping[str, str] = {
    "input_mtok": "input",
    "output_mtok": "output",
    "cache_read_mtok": "cached_input",
    "cache_write_mtok": "cache_write",
    "cache_write_1h_mtok": "cache_write_1h",
    "output_reasoning_mtok": "reasoning",
    "input_audio_mtok": "input_audio",
    "output_audio_mtok": "output_audio",
}
COUNT_KEYS: Mapping[str, str] = {"requests_kcount": "request", "web_searches_kcount": "web_search"}
PICO_PER_MTOK_USD = 10**6  # USD per million tokens -> pico-dollars per token
PICO_PER_KCOUNT_USD = 10**9  # USD per thousand -> pico-dollars each
# Tier names upstreams report for the standard price (OpenAI "default", Anthropic "standard", Groq "on_demand").
STANDARD_TIERS = frozenset({"default", "standard", "auto", "on_demand"})
DAY_NS = 86_400 * 10**9
MAX_RESOLVED = 256  # (day, segment, tier) prices kept per listing
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def unsupported_units(p: gp.ModelPrice) -> list[str]:
    """The price keys of `p` relaycast never has a count for (they price as zero here)."""
    return sorted(k for k, v in _items(p) if v is not None and k not in TOKEN_KEYS and k not in COUNT_KEYS)


def convert(p: gp.ModelPrice) -> ModelPrice | None:
    """`p` in integer pico-dollars, its `TieredPrices` as `ModelPrice.tiers`; None for a price with neither input nor
    output tokens (priced per second, per image, ...: relaycast cannot count what it charges for)."""
    vals = {k: v for k, v in _items(p) if v is not None and (k in TOKEN_KEYS or k in COUNT_KEYS)}
    if "input_mtok" not in vals and "output_mtok" not in vals:
        return None
    starts = sorted({t.start for v in vals.values() if isinstance(v, gp.TieredPrices) for t in v.tiers})
    base = _flat(vals, 0)
    if not starts:
        return base
    return replace(base, tiers=tuple((s, _flat(vals, s + 1)) for s in starts))


def _items(p: gp.ModelPrice) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in p.__dict__.items() if not k.startswith("_")]


def _at(v: Decimal | gp.TieredPrices, input_tokens: int) -> Decimal:
    """genai-prices' `calc_unit_price`: the highest tier whose start the input tokens exceed, else the base."""
    if isinstance(v, gp.TieredPrices):
        for tier in reversed(v.tiers):
            if input_tokens > tier.start:
                return tier.price
        return v.base
    return v


def _flat(vals: Mapping[str, Decimal | gp.TieredPrices], input_tokens: int) -> ModelPrice:
    """The rates that apply to a request with `input_tokens` prompt tokens."""
    pico: dict[str, Decimal] = {}
    for key, v in vals.items():
        if key in TOKEN_KEYS:
            pico[TOKEN_KEYS[key]] = _at(v, input_tokens) * PICO_PER_MTOK_USD
        else:
            pico[COUNT_KEYS[key]] = _at(v, input_tokens) * PICO_PER_KCOUNT_USD
    decimals = max((max(0, -int(d.normalize().as_tuple().exponent)) for d in pico.values()), default=0)
    rounded = from_rates({k: int(d.to_integral_value(rounding=ROUND_HALF_EVEN)) for k, d in pico.items()}, "catalog")
    if decimals == 0:
        return rounded
    scale = 10**decimals
    return replace(rounded, fine=from_rates({k: int(d * scale) for k, d in pico.items()}, "catalog", scale))


def highest(prices: list[ModelPrice]) -> ModelPrice:
    """Each rate at its highest over `prices` (flat: tiers are among `prices` when they count)."""

    def top(get: Any) -> int:
        return max((get(p) or 0 for p in prices), default=0)

    return ModelPrice(
        input=top(lambda p: p.input),
        output=top(lambda p: p.output),
        cached_input=top(lambda p: p.cached_input),
        cache_write=top(lambda p: p.cache_write),
        reasoning=top(lambda p: p.reasoning),
        request=top(lambda p: p.request),
        source="catalog",
        cache_write_1h=top(lambda p: p.cache_write_1h) or None,
        input_audio=top(lambda p: p.input_audio) or None,
        output_audio=top(lambda p: p.output_audio) or None,
        web_search=top(lambda p: p.web_search) or None,
    )


def _seconds_of_day(t: Any) -> int:
    """A constraint's time of day (naive is UTC) in seconds since UTC midnight."""
    at = datetime.combine(date(1970, 1, 2), t)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    utc = at.astimezone(UTC)
    return utc.hour * 3600 + utc.minute * 60 + utc.second


def tier_listed(model: gp.ModelInfo, when: datetime, tier: str) -> bool:
    """Whether a price variant for service tier `tier` is in force at `when`."""
    for v in model.price_variants or ():
        if v.when.get("service_tier") == tier and (v.constraint is None or v.constraint.active(when)):
            return True
    return False


def at_ns(when_ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=when_ns // 1000)


class Listing:
    """One catalog model as a provider lists it (`home`: in that provider's own list, not a fallback provider's, as
    genai-prices applies price variants only then), resolved per (UTC day, time-of-day segment, service tier)."""

    def __init__(self, provider_id: str, model: gp.ModelInfo, home: bool, origin: str) -> None:
        self.provider_id = provider_id
        self.model = model
        self.home = home
        self.origin = origin  # where the catalog data came from (`Catalog.origin`)
        bounds: set[int] = set()
        conditional = model.prices if isinstance(model.prices, list) else []
        constraints = [c.constraint for c in conditional] + [v.constraint for v in model.price_variants or ()]
        for c in constraints:
            if isinstance(c, gp.TimeOfDateConstraint):
                bounds.update((_seconds_of_day(c.start_time), _seconds_of_day(c.end_time)))
        self.day_bounds: tuple[int, ...] = tuple(sorted(bounds))  # seconds of the UTC day where a price may change
        self._resolved: dict[tuple[int, int, str | None], tuple[ModelPrice | None, str | None]] = {}
        self._ceilings: dict[str | None, ModelPrice | None] = {}

    @property
    def key(self) -> str:
        return f"{self.provider_id}/{self.model.id}"

    def at(self, when_ns: int, tier: str | None) -> tuple[ModelPrice | None, str | None]:
        """The price in force at `when_ns` (unix ns) for service tier `tier`, and why it is not exact (a tier with no
        listed price), or None."""
        day, ns = divmod(when_ns, DAY_NS)
        seg = bisect_right(self.day_bounds, ns // 10**9) if self.day_bounds else 0
        key = (day, seg, tier)
        try:
            return self._resolved[key]
        except KeyError:
            pass
        found = self.resolve(at_ns(when_ns), tier)
        if len(self._resolved) >= MAX_RESOLVED:
            self._resolved.clear()
        self._resolved[key] = found
        return found

    def ceiling(self, tier: str | None = None) -> ModelPrice | None:
        """The highest rate of each kind this model is listed at from today on, whatever the time of day, at the
        standard price or service tier `tier` (the one a request asks for): what a budget reserves before it knows
        which applies. Computed once per tier (a gateway that runs past a listed price change keeps the ceiling of
        the day it started, which includes that change)."""
        if tier in self._ceilings:
            return self._ceilings[tier]
        conditional = self.model.prices if isinstance(self.model.prices, list) else []
        starts = {c.constraint.start_date for c in conditional if isinstance(c.constraint, gp.StartDateConstraint)}
        starts |= {
            v.constraint.start_date
            for v in self.model.price_variants or ()
            if isinstance(v.constraint, gp.StartDateConstraint)
        }
        today = datetime.now(UTC).date()  # prices from now on: a superseded one is never billed again
        days = [datetime.combine(d, time_of_day.min, tzinfo=UTC) for d in {today, *(d for d in starts if d > today)}]
        moments = [d + timedelta(seconds=s) for d in days for s in (0, *self.day_bounds)]
        contexts: list[dict[str, str] | None] = [None]
        if tier and tier.lower() not in STANDARD_TIERS and self.home:
            contexts.append({"service_tier": tier})
        found: list[ModelPrice] = []
        for when in moments:
            for context in contexts:
                try:
                    p = convert(self.model.get_prices(when, context))
                except Exception:  # noqa: BLE001 - a price not in force then: nothing to take
                    continue
                if p is not None:
                    found.extend((p, *(t for _, t in p.tiers)))
        if len(self._ceilings) >= MAX_RESOLVED:
            self._ceilings.clear()
        self._ceilings[tier] = out = highest(found) if found else None
        return out

    def resolve(self, when: datetime, tier: str | None) -> tuple[ModelPrice | None, str | None]:
        """As `ModelInfo.calc_price` resolves it: the conditional price in force, then the tier's variant (only for
        a model in the provider's own list)."""
        context = {"service_tier": tier} if tier and self.home else None
        price = convert(self.model.get_prices(when, context))
        why = None
        if tier and tier.lower() not in STANDARD_TIERS and not (self.home and tier_listed(self.model, when, tier)):
            why = f"service tier {tier!r} has no listed price on {when.date().isoformat()}: priced at standard rates"
        return price, why
