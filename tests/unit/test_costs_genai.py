"""The catalog prices exactly as genai-prices does: relaycast's integer cost of an attempt equals
`genai_prices.calc_price`'s Decimal total rounded to the pico-dollar, over long-context tiers, 1-hour cache writes,
audio, reasoning priced apart, web searches, per-request fees, service tiers, price history by date and by time of
day, and list prices finer than a pico-dollar per token.

genai-prices is the reference here (its own arithmetic, on its own `Usage`), not relaycast's code.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import genai_prices
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaycast.costs.catalog import Catalog
from relaycast.costs.compute import input_cost, unlisted, usage_cost
from relaycast.costs.money import pico_from_usd
from relaycast.costs.pricer import Pricer
from relaycast.records import Usage

CATALOG = Catalog.packaged()
KINDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gemini",  # no preset of that kind: looked up under genai-prices' id for it
    "deepseek": "deepseek",
    "or": "openrouter",
    "perplexity": "perplexity",
    "mistral": "mistral",
}
PRICER = Pricer(CATALOG, KINDS)
GENAI_ID = {"or": "openrouter"}

# (relaycast provider, model, why it is here)
MODELS = [
    ("openai", "gpt-4o-mini", "cached reads, web searches, priority tier from 2026-10-12"),
    ("openai", "gpt-5", "flex / priority / default service tiers"),
    ("openai", "o3", "a price change on 2025-06-10"),
    ("openai", "gpt-4o-mini-realtime-preview", "audio in and out"),
    ("anthropic", "claude-sonnet-4-5", "a 200k tier on every unit, 1-hour cache writes"),
    ("anthropic", "claude-opus-4-1", "1-hour cache writes"),
    ("google", "gemini-2.5-pro", "a 200k tier, web searches"),
    ("google", "gemini-2.5-flash", "audio input beside cached reads"),
    ("deepseek", "deepseek-chat", "peak and off-peak prices by time of day"),
    ("deepseek", "deepseek-v4-pro", "dates and times of day together"),
    ("or", "google/gemini-2.5-flash", "a cache-write price finer than a pico-dollar per token"),
    ("or", "qwen/qwen3-coder-flash", "two tiers"),
    ("perplexity", "sonar-deep-research", "reasoning priced apart"),
    ("perplexity", "sonar", "a per-request fee"),
    ("mistral", "mistral-large-latest", "a plain price"),
]
WHENS = [
    datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
    datetime(2025, 6, 10, 0, 0, tzinfo=UTC),
    datetime(2026, 8, 17, 3, 0, tzinfo=UTC),
    datetime(2026, 10, 13, 0, 29, 59, tzinfo=UTC),
    datetime(2026, 10, 13, 0, 30, tzinfo=UTC),
    datetime(2026, 11, 30, 16, 30, tzinfo=UTC),
    datetime(2026, 12, 1, 7, 15, tzinfo=UTC),
]
TIERS = [None, "default", "priority", "flex", "standard", "scale"]


def ns(when: datetime) -> int:
    return int(when.timestamp()) * 10**9


def genai_total(provider: str, model: str, u: Usage, when: datetime, tier: str | None) -> tuple[int, int]:
    """(total, input part) in pico-dollars as genai-prices computes them for the same counts."""
    usage = genai_prices.Usage(
        input_tokens=u.prompt_tokens,
        output_tokens=u.completion_tokens,
        cache_read_tokens=u.cached_tokens,
        cache_write_tokens=u.cache_write_tokens,
        cache_write_1h_tokens=u.cache_write_1h_tokens,
        input_audio_tokens=u.input_audio_tokens,
        output_audio_tokens=u.output_audio_tokens,
        cache_audio_read_tokens=0,  # relaycast's upstreams never report the audio part of cached reads
        output_reasoning_tokens=u.reasoning_tokens,
        web_searches=u.web_searches,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calc = genai_prices.calc_price(
            usage,
            model,
            provider_id=GENAI_ID.get(provider, provider),
            genai_request_timestamp=when,
            price_context={"service_tier": tier} if tier else None,
        )
    return pico_from_usd(calc.total_price), pico_from_usd(calc.input_price)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    prompt = draw(st.one_of(st.integers(0, 5000), st.integers(150_000, 300_000), st.sampled_from([200_000, 200_001])))
    cached = draw(st.integers(0, prompt))
    writes = draw(st.integers(0, prompt - cached))
    audio_in = draw(st.integers(0, prompt - cached - writes))
    completion = draw(st.integers(0, 20_000))
    reasoning = draw(st.integers(0, completion))
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        cache_write_tokens=writes,
        cache_write_1h_tokens=draw(st.integers(0, writes)),
        reasoning_tokens=reasoning,
        input_audio_tokens=audio_in,
        output_audio_tokens=draw(st.integers(0, completion - reasoning)),
        web_searches=draw(st.integers(0, 5)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(MODELS),
    usages(),
    st.sampled_from(WHENS),
    st.sampled_from(TIERS),
)
def test_integer_cost_equals_genai_prices(case: tuple[str, str, str], u: Usage, when: datetime, tier: str | None):
    provider, model, _ = case
    price = PRICER.price(provider, model, ns(when), tier)
    assert price is not None and price.source == "catalog"
    total, inp = genai_total(provider, model, u, when, tier)
    assert usage_cost(u, price) == total
    if price.request == 0:  # relaycast counts the per-request fee in the input part; genai-prices in neither
        assert input_cost(u, price) == inp


@pytest.mark.parametrize(("provider", "model", "why"), MODELS)
@pytest.mark.parametrize("when", WHENS)
@pytest.mark.parametrize("tier", TIERS)
def test_every_case_on_the_edges(provider: str, model: str, why: str, when: datetime, tier: str | None):
    """Prompts on each side of every tier start, all units at once."""
    price = PRICER.price(provider, model, ns(when), tier)
    assert price is not None
    for prompt in (0, 1, 31_999, 32_000, 32_001, 199_999, 200_000, 200_001, 272_001, 1_000_000):
        u = Usage(
            prompt_tokens=prompt,
            completion_tokens=7_777,
            cached_tokens=prompt // 3,
            cache_write_tokens=prompt // 4,
            cache_write_1h_tokens=prompt // 8,
            input_audio_tokens=prompt // 5,
            output_audio_tokens=1_000,
            reasoning_tokens=2_000,
            web_searches=3,
        )
        assert usage_cost(u, price) == genai_total(provider, model, u, when, tier)[0], (prompt, why)


def test_sonnet_tiers_and_one_hour_writes_by_hand():
    """Claude Sonnet 4.5 as Anthropic lists it: $3 in, $15 out, $0.30 cached reads, $3.75 5-minute writes, $6 1-hour
    writes per million; above 200k prompt tokens the whole request at $6 / $22.50 / $0.60 / $7.50 / $12."""
    p = PRICER.price("anthropic", "claude-sonnet-4-5", ns(WHENS[-1]))
    assert p is not None
    u = Usage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=4_000, cache_write_tokens=3_000,
              cache_write_1h_tokens=1_000)  # fmt: skip
    # 3000 plain, 4000 cached, 2000 5m writes, 1000 1h writes, 1000 out
    expect = 3_000 * 3_000_000 + 4_000 * 300_000 + 2_000 * 3_750_000 + 1_000 * 6_000_000 + 1_000 * 15_000_000
    assert usage_cost(u, p) == expect
    big = Usage(prompt_tokens=200_001, completion_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=1_000)
    assert usage_cost(big, p) == 199_001 * 6_000_000 + 1_000 * 12_000_000 + 1_000 * 22_500_000
    assert unlisted(u, p) is None


def test_service_tier_priced_by_its_variant_from_its_start_date():
    """gpt-4o-mini's priority tier is listed from 2026-10-12: priced at its rates from then, and before it priced
    at the standard rates and marked as not exact."""
    after, why_after = PRICER.quote("openai", "gpt-4o-mini", ns(datetime(2026, 10, 12, tzinfo=UTC)), "priority")
    before, why_before = PRICER.quote("openai", "gpt-4o-mini", ns(datetime(2026, 10, 11, 23, tzinfo=UTC)), "priority")
    assert after is not None and before is not None
    assert (after.input, after.output) == (250_000, 1_000_000) and why_after is None
    assert (before.input, before.output) == (150_000, 600_000)
    assert why_before is not None and "priority" in why_before
    standard, why = PRICER.quote("openai", "gpt-4o-mini", ns(WHENS[-1]), "default")
    assert standard is not None and standard.input == 150_000 and why is None


def test_time_of_day_prices_switch_at_the_listed_minute():
    """deepseek-chat: $0.27 / $1.10 from 00:30 to 16:30 UTC, $0.135 / $0.55 outside."""
    day = datetime(2026, 11, 2, tzinfo=UTC)
    at = {hm: PRICER.price("deepseek", "deepseek-chat", ns(day.replace(hour=hm[0], minute=hm[1]))) for hm in
          [(0, 29), (0, 30), (16, 29), (16, 30), (23, 59)]}  # fmt: skip
    assert {hm: p.input for hm, p in at.items() if p} == {
        (0, 29): 135_000,
        (0, 30): 270_000,
        (16, 29): 270_000,
        (16, 30): 135_000,
        (23, 59): 135_000,
    }


def test_a_price_finer_than_a_pico_dollar_is_exact_and_rounded_once():
    """OpenRouter lists Gemini 2.5 Flash's cache writes at $0.0833333333333333 per million (a third of $0.25)."""
    p = PRICER.price("or", "google/gemini-2.5-flash", ns(WHENS[-1]))
    assert p is not None and p.fine is not None and p.fine.scale > 1
    assert p.cache_write == 83_333  # rounded, for routing and budgets
    u = Usage(prompt_tokens=1_000_000, cache_write_tokens=1_000_000)
    assert usage_cost(u, p) == 83_333_333_333  # $0.0833333333333333, to the pico-dollar (not 1M x 83_333)
    assert usage_cost(u, p) == genai_total("or", "google/gemini-2.5-flash", u, WHENS[-1], None)[0]


def test_units_the_price_does_not_list_are_named():
    p = PRICER.price("mistral", "mistral-large-latest", ns(WHENS[-1]))
    assert p is not None
    assert unlisted(Usage(prompt_tokens=10, web_searches=1), p) == "web searches have no listed price: not counted"
    assert "1-hour" in (unlisted(Usage(prompt_tokens=10, cache_write_tokens=5, cache_write_1h_tokens=5), p) or "")
    assert "audio" in (unlisted(Usage(prompt_tokens=10, input_audio_tokens=5), p) or "")
    assert unlisted(Usage(prompt_tokens=10, completion_tokens=5, cached_tokens=5), p) is None
