"""Exact cost: the catalog, cached / cache-write / reasoning pricing, reported and estimated costs, unpriced models.

Expected figures are worked out here with `Decimal` from list prices written in this file, independently of the
integer arithmetic in relaycast.costs (test_costs_genai compares it with genai-prices' own arithmetic).
"""

from __future__ import annotations

import time
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaycast import config as config_mod
from relaycast.costs.catalog import Catalog, ModelPrice
from relaycast.costs.compute import Coster, usage_cost
from relaycast.costs.estimate import TokenEstimator, heuristic_tokens
from relaycast.costs.money import PICO_PER_USD, format_usd, pico_from_usd, usd_decimal
from relaycast.costs.pricer import Pricer, build_pricer
from relaycast.records import Attempt, Attribution, RequestRecord, Usage

CATALOG = Catalog.packaged()
KINDS = {"openai": "openai", "claude": "anthropic", "fakeai": "openai_compatible", "or": "openrouter", "local": "vllm"}
# List prices (USD per million tokens) as the providers publish them and genai-prices lists them; the expectations
# below are worked out from these numbers, not from relaycast's integer rates.
LIST = {
    "openai/gpt-4o-mini": {"input": "0.15", "cached_input": "0.075", "output": "0.60"},
    "anthropic/claude-3-5-haiku-latest": {
        "input": "0.80",
        "cached_input": "0.08",
        "cache_write": "1.00",
        "output": "4",
    },
}


def expected_usd(
    key: str, prompt: int, completion: int, cached: int = 0, write: int = 0, reasoning: int = 0
) -> Decimal:
    p = {k: Decimal(v) for k, v in LIST[key].items()}
    inp, out = p.get("input", Decimal(0)), p.get("output", Decimal(0))
    m = Decimal(1_000_000)
    return (
        (prompt - cached - write) * inp
        + cached * p.get("cached_input", inp)
        + write * p.get("cache_write", inp)
        + (completion - reasoning) * out
        + reasoning * p.get("reasoning", out)
    ) / m + p.get("request", Decimal(0))


def attempt(provider: str, model: str, usage: Usage | None = None, **kw) -> Attempt:
    return Attempt(
        target=f"{provider}/{model}", provider=provider, model=model, started_ns=0, duration_ns=1, usage=usage, **kw
    )


def test_catalog_is_genai_prices_and_says_which():
    assert CATALOG.as_of == f"genai-prices {genai_prices.__version__}" and "bundled" in CATALOG.origin
    for key, spec in LIST.items():
        provider, model = key.split("/")
        price = CATALOG.find(provider, model)
        assert price is not None
        resolved, why = price.at(time.time_ns(), None)
        assert resolved is not None and why is None
        assert Decimal(spec["input"]) * 10**6 == resolved.input and Decimal(spec["output"]) * 10**6 == resolved.output


def test_cached_tokens_are_priced_as_cached_reads_and_reasoning_counted_once():
    pricer = Pricer(CATALOG, KINDS)
    u = Usage(prompt_tokens=1000, completion_tokens=200, cached_tokens=400, reasoning_tokens=50)
    cost = usage_cost(u, pricer.price("openai", "gpt-4o-mini"))
    assert Decimal(format_usd(cost)) == expected_usd("openai/gpt-4o-mini", 1000, 200, cached=400, reasoning=50)
    assert format_usd(cost) == "0.00024"  # 600*0.15 + 400*0.075 + 200*0.60, per million
    # Reasoning tokens are inside completion_tokens: adding them again would have cost 50*0.60 more.
    no_cache = usage_cost(Usage(prompt_tokens=1000, completion_tokens=200), pricer.price("openai", "gpt-4o-mini"))
    assert no_cache - cost == 400 * (150_000 - 75_000)


def test_cache_writes_are_priced_as_writes():
    pricer = Pricer(CATALOG, KINDS)
    u = Usage(prompt_tokens=3000, completion_tokens=100, cached_tokens=1000, cache_write_tokens=1500)
    cost = usage_cost(u, pricer.price("claude", "claude-3-5-haiku-latest"))
    want = expected_usd("anthropic/claude-3-5-haiku-latest", 3000, 100, cached=1000, write=1500)
    assert Decimal(format_usd(cost)) == want == Decimal("0.00238")  # 500*0.8 + 1000*0.08 + 1500*1.0 + 100*4, per 1M


def test_reasoning_priced_differently_and_request_fees():
    over = {
        "fakeai/thinker": ModelPrice.parse(
            {"input": 0.15, "output": 0.60, "reasoning": 3.5, "request": 0.001}, "config", "t"
        )
    }
    pricer = Pricer(CATALOG, KINDS, overrides=over)
    cost = usage_cost(
        Usage(prompt_tokens=100, completion_tokens=1000, reasoning_tokens=800), pricer.price("fakeai", "thinker")
    )
    assert Decimal(format_usd(cost)) == (
        100 * Decimal("0.15") + 200 * Decimal("0.60") + 800 * Decimal("3.5")
    ) / 10**6 + Decimal("0.001")


def test_lookup_order_config_then_catalog_and_unknown_is_unpriced():
    over = {"fakeai/gpt-4o-mini": ModelPrice.parse({"input": 1, "output": 2}, "config", "t")}
    pricer = Pricer(CATALOG, KINDS, overrides=over)
    assert pricer.price("fakeai", "gpt-4o-mini").source == "config"
    assert pricer.price("openai", "gpt-4o-mini").input == 150_000  # catalog, by kind
    assert pricer.price("openai", "gpt-4o-mini-2024-07-18").input == 150_000  # an alias
    assert pricer.price("or", "anthropic/claude-3.5-haiku").input == 800_000  # OpenRouter's name
    assert pricer.price("fakeai", "gpt-4o@latency_ms=5").input == 2_500_000  # the fake's behaviour suffix
    assert pricer.price("or", "meta-llama/llama-3-8b:free").input == 0
    assert pricer.price("local", "gpt-4o") is None  # self-hosted: no list price
    assert pricer.price("fakeai", "my-private-finetune") is None


def test_reported_cost_wins_and_is_marked():
    coster = Coster(Pricer(CATALOG, KINDS))
    u = Usage(prompt_tokens=1000, completion_tokens=1000, reported_cost_usd="0.0123456789")
    (a,) = coster.chat([attempt("or", "openai/gpt-4o-mini", u)], [], "x")
    assert a.cost_source == "reported" and format_usd(a.cost_pusd) == "0.0123456789"


def test_the_pricer_of_a_config_prices_route_targets_under_the_config_prices():
    cfg = config_mod.parse(
        """
providers: [{name: fakeai, kind: openai_compatible, base_url: "http://127.0.0.1:9/v1"}]
models:
  - name: r
    targets: [{target: fakeai/gpt-4o, price: {input: 0.01}}, {target: fakeai/gpt-4o-mini, price: {output: 7}}]
prices: {fakeai/gpt-4o-mini: {input: 1, output: 2}}
""",
        env={},
    )
    pricer = build_pricer(cfg.providers, cfg.models, cfg.prices)
    routed = pricer.price("fakeai", "gpt-4o")
    assert routed is not None and (routed.source, routed.input, routed.output) == ("route", 10_000, 0)
    configured = pricer.price("fakeai", "gpt-4o-mini")
    assert configured is not None and (configured.source, configured.output) == ("config", 2_000_000)
    listed = pricer.price("fakeai", "gpt-4.1")
    assert listed is not None and (listed.source, listed.input) == ("catalog", 2_000_000)


def test_unpriced_is_never_zero():
    coster = Coster(Pricer(CATALOG, KINDS))
    (a,) = coster.chat(
        [attempt("fakeai", "my-private-finetune", Usage(prompt_tokens=10, completion_tokens=5))], [], "ok"
    )
    assert a.cost_source == "unpriced" and a.cost_pusd is None
    rec = RequestRecord(
        request_id="r",
        endpoint="chat.completions",
        model_requested="m",
        stream=False,
        started_unix_ns=0,
        duration_ns=1,
        status_code=200,
        attribution=Attribution(),
        attempts=(a,),
    )
    assert rec.cost == (None, "unpriced")


def test_cut_stream_without_usage_is_estimated_and_failed_attempts_are_not_billed():
    coster = Coster(Pricer(CATALOG, KINDS), TokenEstimator(heuristic_tokens))
    messages = [{"role": "user", "content": "Write a haiku about the sea, please."}]
    failed = attempt("openai", "gpt-4o", error_class="upstream_5xx")
    cut = attempt("openai", "gpt-4o-mini", ttft_ns=10, error_class="stream_cut")
    a1, a2 = coster.chat([failed, cut], messages, "Waves fold into foam")
    assert a1.cost_source == "none" and a1.cost_pusd is None
    assert a2.cost_source == "estimated" and a2.usage is not None
    prompt = 3 + 3 + heuristic_tokens(messages[0]["content"])
    assert a2.usage.prompt_tokens == prompt and a2.usage.completion_tokens == heuristic_tokens("Waves fold into foam")
    assert Decimal(format_usd(a2.cost_pusd)) == expected_usd("openai/gpt-4o-mini", prompt, a2.usage.completion_tokens)


def test_config_prices_are_validated():
    with pytest.raises(config_mod.ConfigError, match="more than six decimals"):
        config_mod.parse("providers: [{name: a, kind: openai, api_key: k}]\nprices: {x: {input: 0.0000001}}", env={})
    with pytest.raises(config_mod.ConfigError, match="unknown price field"):
        config_mod.parse("providers: [{name: a, kind: openai, api_key: k}]\nprices: {x: {inptu: 1}}", env={})
    c = config_mod.parse(
        "providers: [{name: a, kind: openai, api_key: k}]\nprices: {a/x: {input: 0.15, output: 0.6}}", env={}
    )
    assert c.prices["a/x"].input == 150_000 and c.prices["a/x"].cached_input == 150_000


def test_money_text_round_trips_exactly():
    assert pico_from_usd("0.00000105") == 1_050_000 and format_usd(1_050_000) == "0.00000105"
    assert format_usd(None) is None and format_usd(0) == "0"
    assert format_usd(2 * 10**12) == "2" and format_usd(10**13) == "10" and format_usd(-500_000_000_000) == "-0.5"


@given(st.one_of(st.integers(-(10**15), 10**15), st.integers(-(10**26), 10**26), st.sampled_from([10**12, 10**13])))
def test_money_text_is_the_exact_decimal_of_the_pico_dollars(pico: int) -> None:
    text = format_usd(pico)
    assert text is not None and Decimal(text) * PICO_PER_USD == pico
    assert text == f"{usd_decimal(pico):f}"  # the same digits as the Decimal route: no exponent, no trailing zeros
    with pytest.raises(ValueError):
        pico_from_usd("0.0000000000001", exact=True)


tokens = st.integers(min_value=0, max_value=2_000_000)


@given(p=tokens, c=tokens, cached=tokens, write=tokens, reasoning=tokens, extra=st.integers(0, 10_000))
def test_cost_never_falls_when_tokens_grow(p, c, cached, write, reasoning, extra):
    price = Pricer(CATALOG, KINDS).price("claude", "claude-3-5-haiku-latest")
    assert price is not None
    u = Usage(
        prompt_tokens=p, completion_tokens=c, cached_tokens=cached, cache_write_tokens=write, reasoning_tokens=reasoning
    )
    more_in = Usage(
        prompt_tokens=p + extra,
        completion_tokens=c,
        cached_tokens=cached,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
    )
    more_out = Usage(
        prompt_tokens=p,
        completion_tokens=c + extra,
        cached_tokens=cached,
        cache_write_tokens=write,
        reasoning_tokens=reasoning,
    )
    base = usage_cost(u, price)
    assert base >= 0 and usage_cost(more_in, price) >= base and usage_cost(more_out, price) >= base


def test_each_priced_attempt_knows_its_input_part_and_the_parts_add_up() -> None:
    coster = Coster(Pricer(CATALOG, KINDS))
    u = Usage(prompt_tokens=1000, completion_tokens=500, cached_tokens=400, reasoning_tokens=100)
    (a,) = coster.chat([attempt("openai", "gpt-4o-mini", u)], [], "x")
    p = Pricer(CATALOG, KINDS).price("openai", "gpt-4o-mini")
    assert p is not None and a.cost_source == "computed"
    assert a.cost_input_pusd == 600 * p.input + 400 * p.cached_input + p.request
    assert a.cost_pusd == a.cost_input_pusd + 400 * p.output + 100 * p.reasoning
    # A reported figure is split as the catalog's prices would split it; the parts still add up to it exactly.
    r = Usage(prompt_tokens=1000, completion_tokens=500, reported_cost_usd="0.001")
    (b,) = coster.chat([attempt("or", "openai/gpt-4o-mini", r)], [], "x")
    listed = Pricer(CATALOG, KINDS).price("or", "openai/gpt-4o-mini")
    assert listed is not None and b.cost_source == "reported" and b.cost_pusd == 10**9
    assert b.cost_input_pusd == 10**9 * (1000 * listed.input) // (1000 * listed.input + 500 * listed.output)
    # Without a price there is no split to make.
    (c,) = coster.chat([attempt("fakeai", "my-private-finetune", r)], [], "x")
    assert c.cost_source == "reported" and c.cost_input_pusd is None
