"""Which price applies to a model on a provider: one `Pricer` for the router, admission and the cost of attempts.

Lookup for provider `p` and model `m`, first match wins:

1. the config's `prices:`: `p/m`, then `m`;
2. the price on a route's target (`models: ... targets: [{target: p/m, price: ...}]`);
3. the catalog (genai-prices, `costs.catalog`), as the provider's preset says its models are listed: in the
   genai-prices provider its kind or `price_vendor` names (genai-prices matches provider names itself: `gemini` is
   `google`, `xai` is `x-ai`); for a preset whose model names carry their vendor (OpenRouter:
   `anthropic/claude-3.5-haiku`), in that provider's list, then the vendor's own list under the name's prefix; then,
   except for self-hosted presets (whose models have no list price), the provider genai-prices infers from the name
   (`gpt-` is OpenAI's, `claude` Anthropic's).

A suffix after '@' (`gpt-4o-mini@fast`, the fake upstream's behaviour syntax) or ':' (variants such as `:nitro`)
is tried off when the full name is not found; `:free` is priced at zero.

Which model prices it is found once per (provider, model) and memoised; a catalog price is then resolved for the
request's date and service tier once per UTC day, time-of-day segment and tier (`costs.genai.Listing`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

from relaycast.costs.catalog import Catalog
from relaycast.costs.genai import STANDARD_TIERS, Listing
from relaycast.costs.price import FREE, ModelPrice
from relaycast.providers.presets import PRESETS, Preset

if TYPE_CHECKING:
    from relaycast.providers.settings import ProviderConfig
    from relaycast.routing.settings import Route

MAX_MEMO = 10_000


class Pricer:
    """Resolves the price of (provider, model), memoised. `kinds` maps provider names to their preset name."""

    def __init__(
        self,
        catalog: Catalog,
        kinds: Mapping[str, str],
        overrides: Mapping[str, ModelPrice] | None = None,
        route_prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self.catalog = catalog
        self._kinds = dict(kinds)
        self._presets: dict[str, Preset | None] = {name: PRESETS.get(kind) for name, kind in kinds.items()}
        self._overrides = dict(overrides or {})
        self._routes = dict(route_prices or {})
        self._memo: OrderedDict[tuple[str, str], ModelPrice | Listing | None] = OrderedDict()

    def price(
        self, provider: str, model: str, when_ns: int | None = None, tier: str | None = None
    ) -> ModelPrice | None:
        """The price (at `when_ns`, default now, for service tier `tier`), or None when nothing prices the model
        (it is "unpriced", never free)."""
        return self.quote(provider, model, when_ns, tier)[0]

    def quote(
        self, provider: str, model: str, when_ns: int | None = None, tier: str | None = None
    ) -> tuple[ModelPrice | None, str | None]:
        """The price and why it is not exact for this tier (None when it is): a service tier with no listed price is
        priced at the standard rates and the attempt marked "estimated"."""
        found = self.entry(provider, model)
        if found is None or found is FREE:
            return found, None
        if isinstance(found, ModelPrice):
            if tier and tier.lower() not in STANDARD_TIERS:
                return found, f"service tier {tier!r}: the {found.source} price has no tier rates"
            return found, None
        return found.at(time.time_ns() if when_ns is None else when_ns, tier)

    def ceiling(self, provider: str, model: str, tier: str | None = None) -> ModelPrice | None:
        """The highest rates the model may be billed at from today on, whatever the time of day, at the standard
        price or the service tier a request asks for (a budget's reservation); None when nothing prices it."""
        found = self.entry(provider, model)
        if found is None or isinstance(found, ModelPrice):
            return found
        return found.ceiling(tier)

    def entry(self, provider: str, model: str) -> ModelPrice | Listing | None:
        """What prices the model: a fixed price (config, route, `:free`), a catalog listing, or None."""
        key = (provider, model)
        memo = self._memo
        try:
            found = memo[key]
        except KeyError:
            pass
        else:
            memo.move_to_end(key)  # least recently used goes first: names a client cycles never evict the popular
            return found
        found = self._find(provider, model)
        if len(memo) >= MAX_MEMO:
            memo.popitem(last=False)
        memo[key] = found
        return found

    def _find(self, provider: str, model: str) -> ModelPrice | Listing | None:
        preset = self._presets.get(provider)
        kind = self._kinds.get(provider, provider)
        homes: list[str] = []  # genai-prices providers that list this provider's models under their own names
        if preset is None or not preset.self_hosted:
            homes.append(kind)
        if preset is not None and preset.price_vendor:
            homes.append(preset.price_vendor)
        vendor_in_name = preset is not None and preset.vendor_in_model_name
        listed = preset is None or not preset.self_hosted
        catalog = self.catalog
        names = _candidates(model)
        # The config's and the routes' prices first, for every form of the name: the catalog matches names by
        # prefix, so it would take `claude-sonnet-4-5@fast` before the config's `claude-sonnet-4-5` were tried.
        for name in names:
            fixed = (
                self._overrides.get(f"{provider}/{name}")
                or self._overrides.get(name)
                or self._routes.get(f"{provider}/{name}")
            )
            if fixed is not None:
                return fixed
        for name in names:
            if name.endswith(":free") and vendor_in_name:  # OpenRouter's free variants
                return FREE
            hit: ModelPrice | Listing | None = None
            for home in dict.fromkeys(homes):
                hit = hit or catalog.find(home, name)
            if hit is None and vendor_in_name and "/" in name:
                prefix, _, rest = name.partition("/")
                hit = catalog.find(prefix, rest)
            if hit is None and listed:
                hit = catalog.infer(name)
            if hit is not None:
                return hit
        return None


def build_pricer(
    providers: Mapping[str, ProviderConfig],
    routes: Mapping[str, Route],
    prices: Mapping[str, ModelPrice],
    catalog: Catalog | None = None,
) -> Pricer:
    """The gateway's pricer: the catalog (`Catalog.load()`: fetched data if any, else the bundled data; or
    `catalog`), the config's `prices:` and the routes' `price:`s.

    A target priced on several routes takes the price of the last route that prices it."""
    kinds = {name: p.kind for name, p in providers.items()}
    route_prices: dict[str, ModelPrice] = {}
    for route in routes.values():
        for target, price in zip(route.targets, route.prices, strict=False):
            if price is not None:
                route_prices[target] = price
    return Pricer(catalog or Catalog.load(), kinds, prices, route_prices)


def _candidates(model: str) -> list[str]:
    names = [model]
    if "@" in model:
        names.append(model.split("@", 1)[0])
    for n in list(names):
        if ":" in n:
            names.append(n.split(":", 1)[0])
    return names
