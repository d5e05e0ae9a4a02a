"""The `prices:` section of the config: extends and overrides the price catalog (genai-prices).

    prices:
      openai/gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}   # provider name/model
      my-finetune: {input: 0.30, output: 1.20, cache_write: 0.375, reasoning: 2.0, request: 0.001}
      llama3:8b: {input: 0, output: 0}                                       # self-hosted: free, not unpriced
      claude-sonnet-4-5:
        {input: 3, output: 15, cached_input: 0.30, cache_write: 3.75, cache_write_1h: 6, web_search: 0.01,
         above_tokens: {200000: {input: 6, output: 22.5, cached_input: 0.60, cache_write: 7.5, cache_write_1h: 12}}}

USD per million tokens (`input_audio`, `output_audio` too); `request` is USD per request and `web_search` USD per
search; up to six decimals per million tokens. `above_tokens`: the prices of a request whose prompt passes that many
tokens (the whole request, as providers apply long-context tiers); a tier's missing fields are the base's.
`parse_price` also reads a route target's `price:` (routing.settings).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.price import ModelPrice


def parse_prices(r: Reader, raw: Any) -> Mapping[str, ModelPrice]:
    if raw is None:
        return MappingProxyType({})
    m = r.mapping(raw, "prices", None)
    out: dict[str, ModelPrice] = {}
    for name, spec in m.items():
        at = f"prices.{name}"
        out[str(name)] = parse_price(r.mapping(spec, at, None), "config", at)
    return MappingProxyType(out)


def parse_price(raw: Mapping[str, Any], source: str, at: str) -> ModelPrice:
    """One price of the config at place `at`; a problem is a `ConfigError` at its exact place (`at.input`)."""
    try:
        return ModelPrice.parse(raw, source, at)
    except ValueError as e:
        rest = str(e).removeprefix(at)
        where = at
        if rest.startswith("."):
            field, _, rest = rest[1:].partition(": ")
            where = f"{at}.{field}"
        raise ConfigError(where, rest.removeprefix(": ")) from None
