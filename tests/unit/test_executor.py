"""The executor: one request's attempts over a plan, under one deadline, doing what each error class calls for.

Providers are `FunctionProvider`s (tests/fakes.py): their calls run the functions each test gives. Backoff is
drawn from a seeded `random.Random`, so the wait before a retry is known in advance. Streams are in
test_executor_streams.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from relaycast import errors
from relaycast.providers.base import ChatResult
from relaycast.records import Usage
from relaycast.routing.executor import Run
from relaycast.routing.settings import RouteTimeouts
from relaycast.routing.target import Target
from tests.fakes import (
    MS,
    SEED,
    FunctionProvider,
    answers,
    cancel_after,
    classes,
    end_ns,
    executor,
    fails,
    fails_then_answers,
    plan,
    request,
)

# --- failover by error class ------------------------------------------------------------------


def test_rate_limit_fails_over_to_the_next_target_at_once_and_cools_the_target_down() -> None:
    a = FunctionProvider("a", chat=fails(errors.RateLimited("slow down", retry_after=30)))
    b = FunctionProvider("b", chat=answers("from b"))
    ex = executor(a, b)

    async def main() -> tuple[ChatResult, Target, Run]:
        run = ex.run(plan("a/m", "b/m", retries=2), time.monotonic_ns())
        result, target = await run.complete(request())
        return result, target, run

    result, target, run = asyncio.run(main())
    assert (result.output_text, target.name) == ("from b", "b/m")
    assert classes(run) == [("a/m", "rate_limit"), ("b/m", None)]
    first, second = run.attempts
    assert second.started_ns - end_ns(first) < 20 * MS  # no backoff before the next target
    assert a.calls == [("chat", "m")]  # a rate limit is not retried on the same target, whatever the budget
    assert ex.board.state("a/m") == "cooling"
    assert ex.board.target("a/m").cooldown_until - time.monotonic() > 25  # for the Retry-After it gave


def test_a_rate_limited_target_is_not_retried_in_the_same_request_the_retry_budget_goes_to_others() -> None:
    a = FunctionProvider("a", chat=fails(errors.RateLimited("slow down")))
    b = FunctionProvider("b", chat=fails_then_answers(errors.Upstream5xx("boom"), "from b, retried"))

    async def main() -> tuple[ChatResult, Run]:
        run = executor(a, b).run(plan("a/m", "b/m", retries=1), time.monotonic_ns())
        result, _ = await run.complete(request())
        return result, run

    result, run = asyncio.run(main())
    assert result.output_text == "from b, retried"
    assert classes(run) == [("a/m", "rate_limit"), ("b/m", "upstream_5xx"), ("b/m", None)]


def test_upstream_5xx_fails_over_then_retries_the_target_after_a_seeded_backoff_within_the_retry_budget() -> None:
    a = FunctionProvider("a", chat=fails(errors.Upstream5xx("boom")))
    b = FunctionProvider("b", chat=fails(errors.Upstream5xx("boom")))
    backoff_s = 0.1 * (0.5 + random.Random(SEED).random() / 2)  # the first retry's backoff, from the seed

    async def main() -> Run:
        run = executor(a, b).run(plan("a/m", "b/m", retries=1), time.monotonic_ns())
        with pytest.raises(errors.AllAttemptsFailed) as e:
            await run.complete(request())
        assert [err.error_class for err in e.value.errors] == ["upstream_5xx"] * 3
        return run

    run = asyncio.run(main())
    assert classes(run) == [("a/m", "upstream_5xx"), ("b/m", "upstream_5xx"), ("a/m", "upstream_5xx")]
    first_a, _, retry_a = run.attempts
    waited = retry_a.started_ns - end_ns(first_a)
    assert backoff_s * 1e9 - 2 * MS <= waited <= backoff_s * 1e9 + 40 * MS
    assert len(a.calls) == 2 and len(b.calls) == 1  # one retry in the budget, and it went to the first failure


def test_upstream_5xx_on_the_only_target_is_retried_and_its_second_answer_is_returned() -> None:
    a = FunctionProvider("a", chat=fails_then_answers(errors.Upstream5xx("boom"), "second time lucky"))

    async def main() -> tuple[ChatResult, Run]:
        run = executor(a).run(plan("a/m", retries=1), time.monotonic_ns())
        result, _ = await run.complete(request())
        return result, run

    result, run = asyncio.run(main())
    assert result.output_text == "second time lucky"
    assert classes(run) == [("a/m", "upstream_5xx"), ("a/m", None)]


def test_without_a_retry_budget_a_failing_target_is_tried_once() -> None:
    a = FunctionProvider("a", chat=fails(errors.Upstream5xx("boom")))

    async def main() -> Run:
        run = executor(a).run(plan("a/m"), time.monotonic_ns())
        with pytest.raises(errors.AllAttemptsFailed):
            await run.complete(request())
        return run

    assert classes(asyncio.run(main())) == [("a/m", "upstream_5xx")]


@pytest.mark.parametrize(
    "err",
    [
        errors.UpstreamAuth("upstream rejected the gateway's credentials", upstream_status=401),
        errors.UpstreamBadRequest("'temperature' must be a number", upstream_status=400),
        errors.UpstreamNotFound("no such model", upstream_status=404),
    ],
    ids=["auth", "bad_request", "not_found"],
)
def test_auth_bad_request_and_not_found_are_neither_retried_nor_failed_over(err: errors.ProviderError) -> None:
    a = FunctionProvider("a", chat=fails(err))
    b = FunctionProvider("b", chat=answers("from b"))

    async def main() -> Run:
        run = executor(a, b).run(plan("a/m", "b/m", retries=3), time.monotonic_ns())
        with pytest.raises(errors.AllAttemptsFailed) as e:
            await run.complete(request())
        assert e.value.final is err and e.value.status_code == err.status_code
        return run

    run = asyncio.run(main())
    assert classes(run) == [("a/m", err.error_class)]
    assert b.calls == []


@pytest.mark.parametrize(
    ("err", "fallback"),
    [
        (errors.ContentPolicy("flagged", upstream_status=400), "content_policy_fallback"),
        (errors.ContextLength("too long", upstream_status=400), "context_length_fallback"),
    ],
    ids=["content_policy", "context_length"],
)
def test_content_policy_and_context_length_go_to_the_routes_fallback_for_that_class(
    err: errors.ProviderError, fallback: str
) -> None:
    a = FunctionProvider("a", chat=fails(err))
    b = FunctionProvider("b", chat=answers("from b"))
    c = FunctionProvider("c", chat=answers("from the fallback"))

    async def main() -> tuple[ChatResult, Run]:
        run = executor(a, b, c).run(plan("a/m", "b/m", **{fallback: ("c/big",)}), time.monotonic_ns())
        result, _ = await run.complete(request())
        return result, run

    result, run = asyncio.run(main())
    assert result.output_text == "from the fallback"
    assert classes(run) == [("a/m", err.error_class), ("c/big", None)]
    assert b.calls == []  # the plan's next target is skipped: the fallback is the answer to this class


@pytest.mark.parametrize(
    "err", [errors.ContentPolicy("flagged"), errors.ContextLength("too long")], ids=["content_policy", "context_length"]
)
def test_content_policy_and_context_length_stand_when_the_route_has_no_fallback(err: errors.ProviderError) -> None:
    a = FunctionProvider("a", chat=fails(err))
    b = FunctionProvider("b", chat=answers("from b"))

    async def main() -> Run:
        run = executor(a, b).run(plan("a/m", "b/m", retries=2), time.monotonic_ns())
        with pytest.raises(errors.AllAttemptsFailed) as e:
            await run.complete(request())
        assert e.value.error_class == err.error_class
        return run

    assert classes(asyncio.run(main())) == [("a/m", err.error_class)]
    assert b.calls == []


def test_embeddings_fail_over_from_a_target_that_cannot_embed_without_marking_it_unhealthy() -> None:
    async def embed(body: dict[str, Any], model: str) -> tuple[bytes, Usage | None]:
        return b'{"data": []}', Usage(prompt_tokens=3)

    a = FunctionProvider("a")  # no embeddings: NotSupported
    b = FunctionProvider("b", embeddings=embed)
    ex = executor(a, b)

    async def main() -> tuple[bytes, Target, Run]:
        run = ex.run(plan("a/chat-model", "b/embedder"), time.monotonic_ns())
        raw, target = await run.embed({"input": "x"})
        return raw, target, run

    raw, target, run = asyncio.run(main())
    assert (raw, target.name) == (b'{"data": []}', "b/embedder")
    assert classes(run) == [("a/chat-model", "not_supported"), ("b/embedder", None)]
    assert run.attempts[1].usage == Usage(prompt_tokens=3)
    assert ex.board.target("a/chat-model").snapshot(max_age_s=0).requests == 0


# --- the deadline -----------------------------------------------------------------------------


def test_the_deadline_bounds_all_attempts_together_and_cuts_the_last_one() -> None:
    a = FunctionProvider("a", chat=fails(errors.Upstream5xx("boom"), after_s=0.1))
    b = FunctionProvider("b", chat=answers("too late", after_s=1.0))

    async def main() -> tuple[Run, float]:
        t0 = time.monotonic_ns()
        run = executor(a, b).run(plan("a/m", "b/m", timeouts=RouteTimeouts(total_s=0.15)), t0)
        with pytest.raises(errors.AllAttemptsFailed) as e:
            await run.complete(request())
        assert isinstance(e.value.final, errors.Timeout) and e.value.final.phase == "total"
        return run, (time.monotonic_ns() - t0) / 1e9

    run, elapsed = asyncio.run(main())
    assert classes(run) == [("a/m", "upstream_5xx"), ("b/m", "timeout")]
    assert 0.14 <= elapsed < 0.25
    assert end_ns(run.attempts[-1]) < 200 * MS


def test_the_deadline_counts_from_the_requests_arrival_not_from_the_run() -> None:
    a = FunctionProvider("a", chat=answers("too late", after_s=1.0))

    async def main() -> Run:
        arrived = time.monotonic_ns() - 100 * MS  # the request spent 100 ms in the gateway before its run
        run = executor(a).run(plan("a/m", timeouts=RouteTimeouts(total_s=0.15)), arrived)
        with pytest.raises(errors.AllAttemptsFailed):
            await run.complete(request())
        return run

    (attempt,) = asyncio.run(main()).attempts
    assert attempt.error_class == "timeout"
    assert attempt.started_ns >= 100 * MS
    assert 40 * MS <= attempt.duration_ns < 90 * MS  # the 50 ms the deadline left, not the route's 150


def test_a_retry_whose_backoff_would_end_after_the_deadline_is_not_attempted() -> None:
    a = FunctionProvider("a", chat=fails(errors.Upstream5xx("boom")))

    async def main() -> Run:
        run = executor(a).run(plan("a/m", retries=3, timeouts=RouteTimeouts(total_s=0.02)), time.monotonic_ns())
        with pytest.raises(errors.AllAttemptsFailed):
            await run.complete(request())
        return run

    assert classes(asyncio.run(main())) == [("a/m", "upstream_5xx")]  # the backoff is at least 50 ms


# --- cancellation ---------------------------------------------------------------------------


def test_a_client_leaving_during_a_completion_is_recorded_as_client_cancelled() -> None:
    a = FunctionProvider("a", chat=answers("never read", after_s=1.0))
    ex = executor(a)

    async def main() -> Run:
        run = ex.run(plan("a/m"), time.monotonic_ns())
        await cancel_after(run.complete(request()), 0.02)
        return run

    assert classes(asyncio.run(main())) == [("a/m", "client_cancelled")]
    assert ex.board.target("a/m").snapshot(max_age_s=0).requests == 0  # says nothing about the target's health


# --- the attempt log ------------------------------------------------------------------------


def test_every_attempt_is_recorded_once_in_order_of_ending_with_its_error_class() -> None:
    providers = [
        FunctionProvider("a", chat=fails(errors.RateLimited("slow down"))),
        FunctionProvider("b", chat=fails(errors.Upstream5xx("boom", upstream_status=503))),
        FunctionProvider("c"),  # NotSupported
        FunctionProvider("d", chat=fails(errors.ConnectionFailed("refused"))),
        FunctionProvider("e", chat=fails(errors.Timeout("slow", phase="connect"))),
        FunctionProvider("f", chat=fails(errors.MalformedResponse("not JSON"))),
        FunctionProvider("g", chat=answers("at last")),
    ]

    async def main() -> Run:
        run = executor(*providers).run(plan(*(f"{p.config.name}/m" for p in providers)), time.monotonic_ns())
        await run.complete(request())
        return run

    run = asyncio.run(main())
    assert classes(run) == [
        ("a/m", "rate_limit"),
        ("b/m", "upstream_5xx"),
        ("c/m", "not_supported"),
        ("d/m", "connection"),
        ("e/m", "timeout"),
        ("f/m", "malformed"),
        ("g/m", None),
    ]
    assert run.attempts[1].upstream_status == 503 and run.attempts[1].error_message == "boom"
    for before, after in zip(run.attempts, run.attempts[1:], strict=False):
        assert after.started_ns >= end_ns(before)
    assert all(len(p.calls) == 1 for p in providers)
