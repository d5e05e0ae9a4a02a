"""Cost of attempts from their usage and prices: pure, integer pico-dollars, exact.

- Cached input tokens are priced as cached reads and cache writes as writes; the rest of the prompt as input.
- Reasoning tokens are part of the completion and counted once, at the reasoning price (the output price unless
  the model prices reasoning differently).
- An upstream's own figure (OpenRouter's `usage.cost`) wins and is marked "reported".
- An attempt that produced output but never reported usage (a cut stream) is estimated and marked "estimated".
  Only its visible text can be counted (hidden reasoning cannot): budgets charge such a request at least what its
  reservation assumed (`limits.admission`).
- A failed attempt that produced nothing is not billed ("none"); a model with no price is "unpriced" (None, never 0).
- Each priced attempt also knows its input part (`cost_input_pusd`: the prompt's tokens and the per-request fee;
  the output part is the rest), so destinations that show input and output cost apart add up to the total. A
  reported figure is split as the catalog's prices would split it (no split without a price).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from relaycast.costs.catalog import ModelPrice
from relaycast.costs.estimate import TokenEstimator
from relaycast.costs.money import pico_from_usd
from relaycast.costs.pricer import Pricer
from relaycast.records import Attempt, Usage

COMPUTED, REPORTED, ESTIMATED, UNPRICED, NONE = "computed", "reported", "estimated", "unpriced", "none"


def input_cost(u: Usage, p: ModelPrice) -> int:
    """The part of `usage_cost` the prompt makes: plain, cached and cache-write input, and the per-request fee."""
    cached = min(u.cached_tokens, u.prompt_tokens)
    writes = min(u.cache_write_tokens, u.prompt_tokens - cached)
    plain_in = u.prompt_tokens - cached - writes
    return plain_in * p.input + cached * p.cached_input + writes * p.cache_write + p.request


def usage_cost(u: Usage, p: ModelPrice) -> int:
    cached = min(u.cached_tokens, u.prompt_tokens)
    writes = min(u.cache_write_tokens, u.prompt_tokens - cached)
    plain_in = u.prompt_tokens - cached - writes
    reasoning = min(u.reasoning_tokens, u.completion_tokens)
    plain_out = u.completion_tokens - reasoning
    return (
        plain_in * p.input
        + cached * p.cached_input
        + writes * p.cache_write
        + plain_out * p.output
        + reasoning * p.reasoning
        + p.request
    )


class Coster:
    """Prices the attempts of a finished request (called after the response was sent)."""

    def __init__(self, pricer: Pricer, estimator: TokenEstimator | None = None) -> None:
        self.pricer = pricer
        self.estimator = estimator or TokenEstimator()

    def chat(
        self, attempts: Sequence[Attempt], messages: Sequence[dict[str, Any]], output_text: str | None
    ) -> tuple[Attempt, ...]:
        last = len(attempts) - 1
        out: list[Attempt] = []
        prompt: int | None = None  # counted once, and only for an attempt that needs an estimate
        for i, a in enumerate(attempts):
            usage = a.usage
            estimated = False
            if usage is None and (a.ok or a.ttft_ns is not None):
                # It produced output (or succeeded) without a usage report: estimate what was billed.
                text = output_text if i == last else None
                if prompt is None:
                    prompt = self.estimator.prompt(messages)
                usage = Usage(prompt_tokens=prompt, completion_tokens=self.estimator.count(text) if text else 0)
                estimated = True
            out.append(self._priced(a, usage, estimated))
        return tuple(out)

    def embeddings(self, attempts: Sequence[Attempt], inp: Any) -> tuple[Attempt, ...]:
        out = []
        for a in attempts:
            usage, estimated = a.usage, False
            if usage is None and a.ok:
                usage, estimated = Usage(prompt_tokens=self.estimator.embedding_input(inp)), True
            out.append(self._priced(a, usage, estimated))
        return tuple(out)

    def _priced(self, a: Attempt, usage: Usage | None, estimated: bool) -> Attempt:
        if usage is None:
            return a  # not billed: cost_source "none", cost 0
        price = self.pricer.price(a.provider, a.model)
        if usage.reported_cost_usd is not None and not estimated:
            try:
                reported = pico_from_usd(usage.reported_cost_usd)
            except ValueError:
                pass  # a malformed figure: price it ourselves
            else:
                # The upstream's figure, split between input and output as the catalog's prices would split it.
                listed = usage_cost(usage, price) if price is not None else 0
                part = reported * input_cost(usage, price) // listed if price is not None and listed > 0 else None
                return replace(a, cost_pusd=reported, cost_source=REPORTED, cost_input_pusd=part)
        if price is None:
            return replace(a, usage=usage, cost_pusd=None, cost_source=UNPRICED)
        return replace(
            a,
            usage=usage,
            cost_pusd=usage_cost(usage, price),
            cost_source=ESTIMATED if estimated else COMPUTED,
            cost_input_pusd=input_cost(usage, price),
        )
