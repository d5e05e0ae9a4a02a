"""Cost of attempts from their usage and prices: pure, integer pico-dollars, exact.

- The prompt is split as genai-prices splits it: cached reads, cache writes (the 1-hour part at its own rate) and
  audio tokens at their rates, the rest of the prompt at the input rate; the completion likewise into reasoning,
  audio and the rest. A rate the price does not list is its parent's (a cached read is an input token), as in
  genai-prices. A long-context tier prices the whole request when its prompt passes the tier's size.
- Reasoning tokens are part of the completion and counted once, at the reasoning price (the output price unless
  the model prices reasoning differently). Web searches are priced per search.
- An upstream's own figure (OpenRouter's `usage.cost`) wins and is marked "reported".
- "estimated": an attempt that produced output but never reported usage (a cut stream; only its visible text can
  be counted, hidden reasoning cannot: budgets charge such a request at least what its reservation assumed,
  `limits.admission`); usage the price does not cover (1-hour cache writes, audio or web searches with no listed
  rate: `unlisted`); a service tier with no listed price (`pricer`).
- A failed attempt that produced nothing is not billed ("none"); a model with no price is "unpriced" (None, never 0).
- Each priced attempt also knows its input part (`cost_input_pusd`: the prompt's tokens and the per-request fee;
  the output part is the rest, web searches included), so destinations that show input and output cost apart add up
  to the total. A reported figure is split as the catalog's prices would split it (no split without a price).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from relaycast.costs.estimate import TokenEstimator
from relaycast.costs.money import pico_from_usd
from relaycast.costs.price import ModelPrice
from relaycast.costs.pricer import Pricer
from relaycast.records import Attempt, Usage

COMPUTED, REPORTED, ESTIMATED, UNPRICED, NONE = "computed", "reported", "estimated", "unpriced", "none"
NO_USAGE = "no usage reported: counted from the prompt and the visible text (hidden reasoning cannot be)"


def _round(x: int, scale: int) -> int:
    """x / scale rounded half to even, as `money.pico_from_usd` rounds a decimal amount."""
    if scale == 1:
        return x
    q, r = divmod(x, scale)
    if 2 * r > scale or (2 * r == scale and q & 1):
        q += 1
    return q


def _parts(u: Usage, p: ModelPrice) -> tuple[int, int, int]:
    """(input part, output part, scale): the usage priced at the rates of its prompt's tier, each part times
    `scale` (1 unless a list price is finer than a pico-dollar per token)."""
    q = p.at_prompt(u.prompt_tokens) if p.tiers else p
    r = q.fine or q
    prompt = u.prompt_tokens
    cached = min(u.cached_tokens, prompt)
    writes = min(u.cache_write_tokens, prompt - cached)
    reasoning = min(u.reasoning_tokens, u.completion_tokens)
    if not (u.cache_write_1h_tokens or u.input_audio_tokens or u.output_audio_tokens or u.web_searches):
        # The common case: no unit beyond cached reads, cache writes and reasoning.
        inp = (prompt - cached - writes) * r.input + cached * r.cached_input + writes * r.cache_write + r.request
        return inp, (u.completion_tokens - reasoning) * r.output + reasoning * r.reasoning, r.scale
    writes_1h = min(u.cache_write_1h_tokens, writes)
    audio_in = min(u.input_audio_tokens, prompt - cached - writes)
    plain_in = prompt - cached - writes - audio_in
    audio_out = min(u.output_audio_tokens, u.completion_tokens - reasoning)
    plain_out = u.completion_tokens - reasoning - audio_out
    inp = (
        plain_in * r.input
        + cached * r.cached_input
        + (writes - writes_1h) * r.cache_write
        + writes_1h * (r.cache_write if r.cache_write_1h is None else r.cache_write_1h)
        + audio_in * (r.input if r.input_audio is None else r.input_audio)
        + r.request
    )
    out = (
        plain_out * r.output
        + reasoning * r.reasoning
        + audio_out * (r.output if r.output_audio is None else r.output_audio)
        + u.web_searches * (r.web_search or 0)
    )
    return inp, out, r.scale


def input_cost(u: Usage, p: ModelPrice) -> int:
    """The part of `usage_cost` the prompt makes: plain, cached, cache-write and audio input, and the per-request
    fee (web searches and completion tokens are the output part)."""
    inp, _, scale = _parts(u, p)
    return _round(inp, scale)


def usage_cost(u: Usage, p: ModelPrice) -> int:
    inp, out, scale = _parts(u, p)
    return _round(inp + out, scale)


def unlisted(u: Usage, p: ModelPrice) -> str | None:
    """Why `usage_cost` is not exact for this usage: it has units the price does not list, or None."""
    if not (u.cache_write_1h_tokens or u.input_audio_tokens or u.output_audio_tokens or u.web_searches):
        return None
    q = p.at_prompt(u.prompt_tokens)
    if u.cache_write_1h_tokens and q.cache_write_1h is None:
        return "1-hour cache writes have no listed price: priced as cache writes"
    if u.input_audio_tokens and q.input_audio is None:
        return "audio input tokens have no listed price: priced as input tokens"
    if u.output_audio_tokens and q.output_audio is None:
        return "audio output tokens have no listed price: priced as output tokens"
    if u.web_searches and q.web_search is None:
        return "web searches have no listed price: not counted"
    return None


class Coster:
    """Prices the attempts of a finished request (called after the response was sent).

    `when_ns` is when the request ran (`RequestRecord.started_unix_ns`; default: now): catalog prices are the ones
    in force then. Each attempt is priced at the service tier its upstream reported (`Usage.service_tier`)."""

    def __init__(self, pricer: Pricer, estimator: TokenEstimator | None = None) -> None:
        self.pricer = pricer
        self.estimator = estimator or TokenEstimator()

    def chat(
        self,
        attempts: Sequence[Attempt],
        messages: Sequence[dict[str, Any]],
        output_text: str | None,
        when_ns: int | None = None,
    ) -> tuple[Attempt, ...]:
        last = len(attempts) - 1
        out: list[Attempt] = []
        prompt: int | None = None  # counted once, and only for an attempt that needs an estimate
        when = time.time_ns() if when_ns is None else when_ns
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
            out.append(self._priced(a, usage, estimated, when))
        return tuple(out)

    def embeddings(self, attempts: Sequence[Attempt], inp: Any, when_ns: int | None = None) -> tuple[Attempt, ...]:
        out = []
        when = time.time_ns() if when_ns is None else when_ns
        for a in attempts:
            usage, estimated = a.usage, False
            if usage is None and a.ok:
                usage, estimated = Usage(prompt_tokens=self.estimator.embedding_input(inp)), True
            out.append(self._priced(a, usage, estimated, when))
        return tuple(out)

    def _priced(self, a: Attempt, usage: Usage | None, estimated: bool, when_ns: int) -> Attempt:
        if usage is None:
            return a  # not billed: cost_source "none", cost 0
        price, why = self.pricer.quote(a.provider, a.model, when_ns, usage.service_tier)
        if usage.reported_cost_usd is not None and not estimated:
            try:
                reported = pico_from_usd(usage.reported_cost_usd)
            except ValueError:
                pass  # a malformed figure: price it ourselves
            else:
                # The upstream's figure, split between input and output as the catalog's prices would split it.
                listed = usage_cost(usage, price) if price is not None else 0
                part = reported * input_cost(usage, price) // listed if price is not None and listed > 0 else None
                return msgspec.structs.replace(a, cost_pusd=reported, cost_source=REPORTED, cost_input_pusd=part)
        if price is None:
            missing = f"no price for {a.model!r} on provider {a.provider!r}"[:300]
            return msgspec.structs.replace(a, usage=usage, cost_pusd=None, cost_source=UNPRICED, cost_note=missing)
        note: str | None = NO_USAGE if estimated else why or unlisted(usage, price)
        inp, out, scale = _parts(usage, price)
        return msgspec.structs.replace(
            a,
            usage=usage,
            cost_pusd=_round(inp + out, scale),
            cost_source=ESTIMATED if note is not None else COMPUTED,
            cost_input_pusd=_round(inp, scale),
            cost_note=note,
        )

    def why_estimated(self, a: Attempt, when_ns: int) -> str | None:
        """Why a priced attempt's cost is an estimate for its usage and price (None when it is exact or not priced
        here), as `cost_note` says on the record: for `relaycast prices`, which has no record."""
        if a.usage is None:
            return None
        price, why = self.pricer.quote(a.provider, a.model, when_ns, a.usage.service_tier)
        if price is None:
            return None
        return why or unlisted(a.usage, price)
