"""The `prices:` section of the config: extends and overrides the packaged price catalog.

    prices:
      openai/gpt-4o-mini: {input: 0.15, output: 0.60, cached_input: 0.075}   # provider name/model
      my-finetune: {input: 0.30, output: 1.20, cache_write: 0.375, reasoning: 2.0, request: 0.001}
      llama3:8b: {input: 0, output: 0}                                       # self-hosted: free, not unpriced

USD per million tokens (`request`: USD per request), up to six decimals.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.catalog import ModelPrice


def parse_prices(r: Reader, raw: Any) -> Mapping[str, ModelPrice]:
    if raw is None:
        return MappingProxyType({})
    m = r.mapping(raw, "prices", None)
    out: dict[str, ModelPrice] = {}
    for name, spec in m.items():
        at = f"prices.{name}"
        spec = r.mapping(spec, at, None)
        try:
            out[str(name)] = ModelPrice.parse(spec, "config", at)
        except ValueError as e:
            raise ConfigError(at, str(e).removeprefix(f"{at}: ").removeprefix(f"{at}.")) from None
    return MappingProxyType(out)
