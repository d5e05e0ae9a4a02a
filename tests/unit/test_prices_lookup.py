"""Which catalog entry prices a model on each of relaycast's provider presets, the lookup rules kept from before the
catalog was genai-prices (vendor prefixes, `@` and `:` suffixes, `:free`, self-hosted presets unpriced), and the
date and service tier an attempt is priced at."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from relaycast.costs.catalog import Catalog
from relaycast.costs.compute import Coster
from relaycast.costs.genai import MAX_RESOLVED
from relaycast.costs.price import FREE, ModelPrice
from relaycast.costs.pricer import MAX_MEMO, Pricer
from relaycast.providers.presets import PRESETS
from relaycast.records import Attempt, Usage

CATALOG = Catalog.packaged()
# Every preset, plus kinds relaycast has no preset for but genai-prices lists (Google's Gemini API, xAI).
KINDS = {**{k: k for k in PRESETS}, "gemini": "gemini", "xai": "xai"}
NOV = int(datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp()) * 10**9


@pytest.mark.parametrize(
    ("provider", "model", "catalog_key", "input_usd_per_m"),
    [
        ("openai", "gpt-4o-mini", "openai/gpt-4o-mini", "0.15"),
        ("openai", "gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini", "0.15"),
        ("anthropic", "claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5", "3"),
        ("groq", "llama-3.3-70b-versatile", "groq/llama-3.3-70b-versatile", "0.59"),
        ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo", "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
         "0.88"),
        ("deepseek", "deepseek-reasoner", "deepseek/deepseek-reasoner", "0.55"),  # 12:00 UTC: peak hours
        ("mistral", "mistral-large-latest", "mistral/mistral-large", "2"),
        ("fireworks", "accounts/fireworks/models/deepseek-v3p2", "fireworks/deepseek-v3p2", None),
        ("openrouter", "anthropic/claude-3.5-haiku", "openrouter/anthropic/claude-3.5-haiku", "0.8"),
        ("openrouter", "x-ai/grok-3@fast", "x-ai/grok-3", None),  # not in OpenRouter's list: the vendor's
        ("gemini", "gemini-2.5-pro", "google/gemini-2.5-pro", "1.25"),
        ("xai", "grok-3", "x-ai/grok-3", None),
        ("openai_compatible", "claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku-latest", "0.8"),
        ("openai_compatible", "gpt-4o@latency_ms=5", "openai/gpt-4o", "2.5"),
    ],
)  # fmt: skip
def test_each_preset_finds_its_models_in_the_catalog(provider, model, catalog_key, input_usd_per_m):
    pricer = Pricer(CATALOG, KINDS)
    entry = pricer.entry(provider, model)
    assert entry is not None and not isinstance(entry, ModelPrice), (provider, model)
    assert entry.key == catalog_key
    if input_usd_per_m is not None:
        price = pricer.price(provider, model, NOV)
        assert price is not None and price.input * 10**6 == Decimal(input_usd_per_m) * 10**12


def test_self_hosted_presets_are_unpriced_and_free_models_cost_nothing():
    pricer = Pricer(CATALOG, KINDS)
    assert pricer.price("vllm", "gpt-4o-mini") is None and pricer.price("ollama", "llama3:8b") is None
    assert pricer.price("openrouter", "meta-llama/llama-3-8b-instruct:free") is FREE
    assert pricer.price("openai_compatible", "my-private-finetune") is None


def test_config_and_route_prices_win_over_the_catalog():
    config = ModelPrice.parse({"input": 9}, "config", "t")
    route = ModelPrice.parse({"input": 8}, "route", "t")
    pricer = Pricer(CATALOG, KINDS, {"openai/gpt-4o-mini": config}, {"openai/gpt-4o": route})
    assert pricer.price("openai", "gpt-4o-mini") is config
    assert pricer.price("openai", "gpt-4o") is route
    assert pricer.price("openai", "gpt-4.1") is not None and pricer.price("openai", "gpt-4.1").source == "catalog"
    # The catalog matches names by prefix: the config's price still wins for every form of the name.
    claude = ModelPrice.parse({"input": 7}, "config", "t")
    pricer = Pricer(
        CATALOG, KINDS, {"claude-sonnet-4-5": claude, "openrouter/meta-llama/llama-3-8b-instruct:free": config}
    )
    assert pricer.price("anthropic", "claude-sonnet-4-5@fast") is claude
    assert pricer.price("anthropic", "claude-sonnet-4-5:thinking") is claude
    assert pricer.price("openrouter", "meta-llama/llama-3-8b-instruct:free") is config, "a config price beats :free"
    assert pricer.price("openai", "gpt-4o:free") is not FREE, ":free is OpenRouter's, not any provider's"


def test_names_a_client_cycles_never_evict_the_popular_ones():
    pricer = Pricer(CATALOG, KINDS)
    popular = pricer.entry("openai", "gpt-4o-mini")
    for i in range(MAX_MEMO * 2):
        pricer.entry("openai_compatible", f"unknown-{i}")
        if i % 100 == 0:
            assert pricer.entry("openai", "gpt-4o-mini") is popular
    assert ("openai", "gpt-4o-mini") in pricer._memo and len(pricer._memo) <= MAX_MEMO


def attempt(provider: str, model: str, u: Usage) -> Attempt:
    return Attempt(f"{provider}/{model}", provider, model, 0, 1, usage=u)


def test_an_attempt_is_priced_at_the_date_it_ran_and_its_reported_tier():
    """o3 cost $10 / $40 per million before 2025-06-10 and $2 / $8 since; gpt-5's flex tier is listed at half."""
    coster = Coster(Pricer(CATALOG, KINDS))
    u = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    old = int(datetime(2025, 6, 9, 23, 59, tzinfo=UTC).timestamp()) * 10**9
    (before,) = coster.chat([attempt("openai", "o3", u)], [], None, when_ns=old)
    (after,) = coster.chat([attempt("openai", "o3", u)], [], None, when_ns=old + 60 * 10**9)
    assert (before.cost_pusd, after.cost_pusd) == (50 * 10**12, 10 * 10**12)
    flex = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, service_tier="flex")
    (a,) = coster.chat([attempt("openai", "gpt-5", flex)], [], None, when_ns=NOV)
    assert a.cost_source == "computed" and a.cost_pusd == 5_625_000_000_000  # 0.625 + 5
    # A tier genai-prices does not list for the model: standard rates, marked estimated, with the reason.
    scale = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, service_tier="scale")
    (b,) = coster.chat([attempt("openai", "gpt-5", scale)], [], None, when_ns=NOV)
    assert b.cost_source == "estimated" and b.cost_pusd == 11_250_000_000_000
    assert "'scale' has no listed price" in (coster.why_estimated(b, NOV) or "")


def test_usage_a_catalog_price_does_not_cover_is_estimated():
    coster = Coster(Pricer(CATALOG, KINDS))
    search = Usage(prompt_tokens=10, completion_tokens=10, web_searches=1)
    (listed,) = coster.chat([attempt("openai", "gpt-4o-mini", search)], [], None, when_ns=NOV)
    assert listed.cost_source == "computed" and listed.cost_pusd == 10 * 150_000 + 10 * 600_000 + 10_000_000_000
    (unlisted,) = coster.chat([attempt("groq", "llama-3.3-70b-versatile", search)], [], None, when_ns=NOV)
    assert unlisted.cost_source == "estimated" and "web searches" in (coster.why_estimated(unlisted, NOV) or "")
    assert unlisted.cost_note == coster.why_estimated(unlisted, NOV), "the record says why, as prices show does"
    assert listed.cost_note is None
    (nothing,) = coster.chat([attempt("openai_compatible", "my-private-finetune", search)], [], None, when_ns=NOV)
    assert nothing.cost_source == "unpriced" and "no price for 'my-private-finetune'" in (nothing.cost_note or "")


def test_memos_are_bounded():
    pricer = Pricer(CATALOG, KINDS)
    for i in range(MAX_MEMO + 5):
        pricer.price("openai_compatible", f"unknown-{i}")
    assert len(pricer._memo) <= MAX_MEMO
    listing = pricer.entry("openai", "gpt-4o-mini")
    assert listing is not None and not isinstance(listing, ModelPrice)
    for day in range(MAX_RESOLVED + 5):
        listing.at(day * 86_400 * 10**9, None)
    assert len(listing._resolved) <= MAX_RESOLVED


def test_prices_show_names_a_config_price_and_an_unpriced_model(tmp_path, capsys):
    from relaycast.cli.main import main

    cfg = tmp_path / "relaycast.yaml"
    cfg.write_text(
        "providers: [{name: oai, kind: openai, api_key: k}, {name: local, kind: vllm, base_url: 'http://127.0.0.1:9/v1'}]\n"
        "prices: {oai/my-finetune: {input: 0.3, output: 1.2, web_search: 0.02}}\n"
    )
    assert main(["prices", "show", "my-finetune", "--config", str(cfg), "--json"]) == 0
    shown = {d["provider"]: d for d in json.loads(capsys.readouterr().out)}
    assert shown["oai"]["source"] == "config" and shown["local"]["source"] == "unpriced"
    assert shown["oai"]["usd_per_million_tokens"]["input"] == "0.3" and shown["oai"]["usd_per_web_search"] == "0.02"
    assert main(["prices", "show", "gpt-4o-mini", "--config", str(cfg), "-p", "local"]) == 1
    assert "unpriced" in capsys.readouterr().out


def test_a_budget_reserves_at_the_dearest_rates_a_model_may_be_billed_at():
    """The time of day (DeepSeek's peak), the service tier the request asks for (priority), audio rates and
    long-context tiers: the ceiling is at least every price the model is billed at from today on."""
    pricer = Pricer(CATALOG, KINDS)
    now = int(datetime.now(UTC).timestamp()) * 10**9
    for provider, model, tiers in (
        ("deepseek", "deepseek-chat", (None,)),
        ("openai", "gpt-4o-mini", (None, "priority", "flex")),
        ("anthropic", "claude-sonnet-4-5", (None, "priority")),
        ("openai", "gpt-realtime", (None,)),
    ):
        for hour in range(24):
            for tier in tiers:
                ceiling = pricer.ceiling(provider, model, tier)
                assert ceiling is not None
                p = pricer.quote(provider, model, now + hour * 3600 * 10**9, tier)[0]
                assert p is not None
                for q in (p, *(t for _, t in p.tiers)):
                    assert q.input <= ceiling.input and q.output <= ceiling.output, (provider, model, hour, tier)
                    assert (q.cache_write_1h or 0) <= (ceiling.cache_write_1h or 0)
                    assert (q.input_audio or 0) <= (ceiling.input_audio or 0)
    peak = pricer.ceiling("deepseek", "deepseek-chat")
    assert peak is not None and peak.input > min(
        pricer.quote("deepseek", "deepseek-chat", now + h * 3600 * 10**9, None)[0].input for h in range(24)
    ), "DeepSeek's off-peak discount is not what a budget reserves"
    standard, priority = pricer.ceiling("openai", "gpt-4o-mini"), pricer.ceiling("openai", "gpt-4o-mini", "priority")
    assert standard is not None and priority is not None and standard.input < priority.input
