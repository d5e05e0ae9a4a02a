"""Which price applies to a model on a provider: one `Pricer` for the router, admission and the cost of attempts.

Lookup for provider `p` and model `m`, first match wins:

1. the config's `prices:`: `p/m`, then `m`;
2. the price on a route's target (`models: ... targets: [{target: p/m, price: ...}]`);
3. the catalog, as the provider's preset says its models are listed: under the preset's `price_vendor`
   (`vendor/m`); as the catalog key `m` itself when model names carry their vendor (`openai/gpt-4o-mini`);
   then `m` alone when exactly one catalog entry (or alias) carries that name, except for self-hosted presets,
   whose models have no list price.

A suffix after '@' (`gpt-4o-mini@fast`, the fake upstream's behaviour syntax) or ':' (variants such as `:nitro`)
is tried off when the full name is not found; `:free` is priced at zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from relaycast.costs.catalog import FREE, Catalog, ModelPrice
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
        self._presets: dict[str, Preset | None] = {name: PRESETS.get(kind) for name, kind in kinds.items()}
        self._overrides = dict(overrides or {})
        self._routes = dict(route_prices or {})
        self._memo: dict[tuple[str, str], ModelPrice | None] = {}

    def price(self, provider: str, model: str) -> ModelPrice | None:
        """The price, or None when nothing prices the model (it is "unpriced", never free)."""
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
        preset = self._presets.get(provider)
        vendor = preset.price_vendor if preset is not None else None
        vendor_in_name = preset is not None and preset.vendor_in_model_name
        listed = preset is None or not preset.self_hosted
        by_key = self.catalog.by_key
        for name in _candidates(model):
            if name.endswith(":free"):
                return FREE
            hit = (
                self._overrides.get(f"{provider}/{name}")
                or self._overrides.get(name)
                or self._routes.get(f"{provider}/{name}")
            )
            if hit is None and vendor is not None:
                hit = by_key.get(f"{vendor}/{name}")
            if hit is None and vendor_in_name:
                hit = by_key.get(name)
            if hit is None and listed:
                hit = self.catalog.by_model.get(name)
            if hit is not None:
                return hit
        return None


def build_pricer(
    providers: Mapping[str, ProviderConfig],
    routes: Mapping[str, Route],
    prices: Mapping[str, ModelPrice],
    catalog: Catalog | None = None,
) -> Pricer:
    """The gateway's pricer: the packaged catalog (or `catalog`), the config's `prices:` and the routes' `price:`s.

    A target priced on several routes takes the price of the last route that prices it."""
    kinds = {name: p.kind for name, p in providers.items()}
    route_prices: dict[str, ModelPrice] = {}
    for route in routes.values():
        for target, price in zip(route.targets, route.prices, strict=False):
            if price is not None:
                route_prices[target] = price
    return Pricer(catalog or Catalog.packaged(), kinds, prices, route_prices)


def _candidates(model: str) -> list[str]:
    names = [model]
    if "@" in model:
        names.append(model.split("@", 1)[0])
    for n in list(names):
        if ":" in n:
            names.append(n.split(":", 1)[0])
    return names
