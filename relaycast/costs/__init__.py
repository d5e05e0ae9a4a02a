"""Exact cost: the price type (`price`), the catalog (`catalog`: genai-prices' data, resolved per date and service
tier by `genai`; refreshed by `update`), which price applies (`pricer`), cost of an attempt (`compute`), token
estimates (`estimate`).

Money is integer pico-dollars (1e-12 USD) everywhere: a price of up to six decimals per million tokens is exactly
an integer number of pico-dollars per token, so a cost is an exact integer and any sum of costs is exact.
"""

from relaycast.costs.money import PICO_PER_USD, format_usd, pico_from_usd

__all__ = ["PICO_PER_USD", "format_usd", "pico_from_usd"]
