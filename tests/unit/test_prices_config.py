"""The config's prices: the new units (1-hour cache writes, audio, web searches), long-context tiers, their errors at
their exact place, and that a config price overrides the catalog with exactly the given numbers."""

from __future__ import annotations

import pytest

from relaycast import config as config_mod
from relaycast.costs.catalog import Catalog
from relaycast.costs.compute import Coster, input_cost, usage_cost
from relaycast.costs.pricer import build_pricer
from relaycast.records import Attempt, Usage

HEAD = "providers: [{name: claude, kind: anthropic, api_key: k}, {name: oai, kind: openai, api_key: k}]\n"


def parse(prices: str) -> config_mod.Config:
    return config_mod.parse(HEAD + "prices:\n" + prices, env={})


def test_every_unit_and_a_tier_from_the_config_price_a_request_exactly():
    cfg = parse(
        """
  claude/claude-sonnet-4-5:
    input: 3
    output: 15
    cached_input: 0.3
    cache_write: 3.75
    cache_write_1h: 6
    input_audio: 4
    output_audio: 20
    web_search: 0.01
    request: 0.0001
    above_tokens: {200000: {input: 6, output: 22.5, cached_input: 0.6, cache_write: 7.5, cache_write_1h: 12}}
"""
    )
    p = build_pricer(cfg.providers, cfg.models, cfg.prices, Catalog.packaged()).price("claude", "claude-sonnet-4-5")
    assert p is not None and p.source == "config"
    u = Usage(
        prompt_tokens=1_000,
        completion_tokens=500,
        cached_tokens=100,
        cache_write_tokens=300,
        cache_write_1h_tokens=100,
        input_audio_tokens=50,
        output_audio_tokens=40,
        reasoning_tokens=60,
        web_searches=2,
    )
    # USD per million: 550 plain at 3, 100 cached at 0.3, 200 5m writes at 3.75, 100 1h writes at 6, 50 audio at 4;
    # 400 output at 15 (reasoning at the output rate), 40 audio out at 20; two searches at 0.01; the request 0.0001.
    inp = 550 * 3_000_000 + 100 * 300_000 + 200 * 3_750_000 + 100 * 6_000_000 + 50 * 4_000_000 + 100_000_000
    out = 460 * 15_000_000 + 40 * 20_000_000 + 2 * 10_000_000_000
    assert (input_cost(u, p), usage_cost(u, p)) == (inp, inp + out)
    big = Usage(prompt_tokens=200_001, completion_tokens=10, cached_tokens=1, cache_write_tokens=2,
                cache_write_1h_tokens=1)  # fmt: skip
    assert usage_cost(big, p) == (
        199_998 * 6_000_000 + 600_000 + 7_500_000 + 12_000_000 + 10 * 22_500_000 + 100_000_000
    )
    assert usage_cost(Usage(prompt_tokens=200_000), p) == 200_000 * 3_000_000 + 100_000_000  # not above: base


def test_a_tier_inherits_what_it_does_not_name():
    cfg = parse("  m: {input: 1, output: 2, cached_input: 0.5, above_tokens: {1000: {input: 4}}}\n")
    tier = cfg.prices["m"].tiers[0][1]
    assert (tier.input, tier.output, tier.cached_input, tier.cache_write) == (4_000_000, 2_000_000, 500_000, 4_000_000)


@pytest.mark.parametrize(
    ("spec", "where", "message"),
    [
        ("{input: 1, above_tokens: {lots: {input: 2}}}", "prices.m.above_tokens.lots", "number of prompt tokens"),
        ("{input: 1, above_tokens: {1000: {request: 2}}}", "prices.m.above_tokens.1000", "unknown tier price field"),
        ("{input: 1, above_tokens: {1000: {input: 0.0000001}}}", "prices.m.above_tokens.1000.input", "six decimals"),
        ("{input: 1, above_tokens: []}", "prices.m.above_tokens", "must map"),
        ("{input: 1, web_search: -1}", "prices.m.web_search", "negative"),
        ("{input: 1, cache_write_1h: x}", "prices.m.cache_write_1h", "not a decimal"),
    ],
)
def test_config_price_errors_name_their_place(spec: str, where: str, message: str):
    with pytest.raises(config_mod.ConfigError, match=message) as e:
        parse(f"  m: {spec}\n")
    assert where in str(e.value)


def test_a_config_price_without_1h_rates_makes_1h_writes_estimated_and_a_tier_it_lacks_too():
    cfg = parse("  claude/claude-sonnet-4-5: {input: 3, output: 15, cache_write: 3.75}\n")
    coster = Coster(build_pricer(cfg.providers, cfg.models, cfg.prices, Catalog.packaged()))

    def priced(u: Usage) -> Attempt:
        a = Attempt("claude/claude-sonnet-4-5", "claude", "claude-sonnet-4-5", 0, 1, usage=u)
        return coster.chat([a], [], "x", when_ns=0)[0]

    plain = priced(Usage(prompt_tokens=100, completion_tokens=10, cache_write_tokens=50, service_tier="standard"))
    assert plain.cost_source == "computed"
    one_hour = priced(Usage(prompt_tokens=100, completion_tokens=10, cache_write_tokens=50, cache_write_1h_tokens=50))
    assert one_hour.cost_source == "estimated"
    assert one_hour.cost_pusd == 50 * 3_000_000 + 50 * 3_750_000 + 10 * 15_000_000  # 1h writes at the 5m rate
    assert priced(Usage(prompt_tokens=100, service_tier="priority")).cost_source == "estimated"
    assert "no tier rates" in (coster.why_estimated(priced(Usage(prompt_tokens=1, service_tier="priority")), 0) or "")
