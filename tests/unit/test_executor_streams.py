"""The executor's streams: failover only before the first token (within the TTFT budget), hedging, the deadline
over the relay, and cancellation, each attempt recorded once.

Providers are `FunctionProvider`s (tests/fakes.py) whose streams yield the tokens each test gives.
"""

from __future__ import annotations

import asyncio
import time

from relaycast import errors
from relaycast.records import Attempt, Usage
from relaycast.routing.executor import OpenStream, Run
from relaycast.routing.settings import RouteTimeouts
from tests.fakes import MS, Client, FunctionProvider, cancel_after, classes, executor, plan, request, tokens


def test_a_stream_that_outlives_the_deadline_is_ended_with_a_total_timeout() -> None:
    a = FunctionProvider("a", stream=tokens("Hel", "lo", stall_s=1.0))
    client = Client()

    async def main() -> tuple[errors.RelaycastError | None, Run]:
        run = executor(a).run(plan("a/m", timeouts=RouteTimeouts(total_s=0.1)), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        return await opened.relay(client.send), run

    err, run = asyncio.run(main())
    assert isinstance(err, errors.Timeout) and err.phase == "total"
    assert client.text == "Hello"
    assert classes(run) == [("a/m", "timeout")]
    assert a.streams[0].closed


# --- streams: failover only before the first token ---------------------------------------------


def test_a_stream_without_a_first_token_within_the_ttft_budget_fails_over_to_the_next_target() -> None:
    a = FunctionProvider("a", stream=tokens("late", first_after_s=1.0))
    b = FunctionProvider("b", stream=tokens("Hi", " there"))
    client = Client()

    async def main() -> tuple[OpenStream, tuple[Attempt, ...], errors.RelaycastError | None, Run]:
        run = executor(a, b).run(plan("a/m", "b/m", timeouts=RouteTimeouts(ttft_s=0.05)), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        before_relay = run.attempts
        return opened, before_relay, await opened.relay(client.send), run

    opened, before_relay, err, run = asyncio.run(main())
    assert opened.target.name == "b/m" and err is None
    assert [(a.target, a.error_class) for a in before_relay] == [("a/m", "timeout")]
    assert 40 * MS <= before_relay[0].duration_ns < 200 * MS
    assert classes(run) == [("a/m", "timeout"), ("b/m", None)]
    assert client.text == "Hi there"
    assert b"chatcmpl-a/m" not in b"".join(client.parts)  # what a sent before its first token was held, then dropped
    assert a.streams[0].closed
    served = run.attempts[1]
    assert served.ttft_ns is not None and served.finish_reason == "stop"
    assert served.usage == Usage(prompt_tokens=10, completion_tokens=2)


def test_a_stream_error_before_the_first_token_fails_over() -> None:
    a = FunctionProvider("a", stream=tokens(then_fail=errors.Overloaded("Overloaded", upstream_status=529)))
    b = FunctionProvider("b", stream=tokens("ok"))
    client = Client()

    async def main() -> Run:
        run = executor(a, b).run(plan("a/m", "b/m"), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        assert await opened.relay(client.send) is None
        return run

    assert classes(asyncio.run(main())) == [("a/m", "rate_limit"), ("b/m", None)]
    assert client.text == "ok"


def test_after_the_first_token_a_mid_stream_error_is_returned_to_the_caller_not_failed_over() -> None:
    cut = errors.StreamCut("upstream closed the connection mid-response")
    a = FunctionProvider("a", stream=tokens("Hel", "lo", then_fail=cut))
    b = FunctionProvider("b", stream=tokens("never"))
    client = Client()

    async def main() -> tuple[errors.RelaycastError | None, Run]:
        run = executor(a, b).run(plan("a/m", "b/m", retries=2), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        return await opened.relay(client.send), run

    err, run = asyncio.run(main())
    assert err is cut
    assert client.text == "Hello"
    assert b.calls == []
    assert classes(run) == [("a/m", "stream_cut")]
    assert run.attempts[0].ttft_ns is not None
    assert a.streams[0].closed


# --- hedging --------------------------------------------------------------------------------


def test_hedging_races_a_second_target_when_the_first_has_no_token_by_hedge_after_and_records_the_loser() -> None:
    a = FunctionProvider("a", stream=tokens("slow", first_after_s=0.5))
    b = FunctionProvider("b", stream=tokens("fast"))
    client = Client()

    async def main() -> tuple[str, tuple[Attempt, ...], Run, float]:
        t0 = time.monotonic_ns()
        run = executor(a, b).run(plan("a/m", "b/m", hedge_after_s=0.03), t0)
        opened = await run.open_stream(request(stream=True))
        waited = (time.monotonic_ns() - t0) / 1e9
        at_open = run.attempts
        assert await opened.relay(client.send) is None
        return opened.target.name, at_open, run, waited

    winner, at_open, run, waited = asyncio.run(main())
    assert winner == "b/m" and client.text == "fast"
    assert 0.03 <= waited < 0.3  # the hedge started after 30 ms and did not wait for the slow target
    assert [(a.target, a.error_class) for a in at_open] == [("a/m", "hedge_lost")]
    assert classes(run) == [("a/m", "hedge_lost"), ("b/m", None)]
    assert a.streams[0].closed


def test_hedging_keeps_the_first_target_when_its_token_comes_before_the_hedges() -> None:
    a = FunctionProvider("a", stream=tokens("first", first_after_s=0.06))
    b = FunctionProvider("b", stream=tokens("second", first_after_s=0.5))
    client = Client()

    async def main() -> tuple[str, Run]:
        run = executor(a, b).run(plan("a/m", "b/m", hedge_after_s=0.02), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        assert await opened.relay(client.send) is None
        return opened.target.name, run

    winner, run = asyncio.run(main())
    assert winner == "a/m" and client.text == "first"
    assert classes(run) == [("b/m", "hedge_lost"), ("a/m", None)]
    assert b.streams[0].closed


def test_no_hedge_starts_when_the_first_token_comes_before_hedge_after() -> None:
    a = FunctionProvider("a", stream=tokens("quick"))
    b = FunctionProvider("b", stream=tokens("unused"))

    async def main() -> Run:
        run = executor(a, b).run(plan("a/m", "b/m", hedge_after_s=0.2), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        assert await opened.relay(Client().send) is None
        return run

    assert classes(asyncio.run(main())) == [("a/m", None)]
    assert b.calls == []


# --- cancellation ---------------------------------------------------------------------------


def test_a_client_leaving_before_the_first_token_is_recorded_as_client_cancelled() -> None:
    a = FunctionProvider("a", stream=tokens("late", first_after_s=1.0))

    async def main() -> Run:
        run = executor(a).run(plan("a/m"), time.monotonic_ns())
        await cancel_after(run.open_stream(request(stream=True)), 0.02)
        return run

    assert classes(asyncio.run(main())) == [("a/m", "client_cancelled")]
    assert a.streams[0].closed


def test_a_client_leaving_mid_relay_is_recorded_as_client_cancelled_and_the_cancellation_propagates() -> None:
    a = FunctionProvider("a", stream=tokens("Hel", "lo", stall_s=1.0))
    client = Client()

    async def main() -> Run:
        run = executor(a).run(plan("a/m"), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        await cancel_after(opened.relay(client.send), 0.02)
        return run

    run = asyncio.run(main())
    assert classes(run) == [("a/m", "client_cancelled")]
    assert client.text == "Hello"
    assert run.attempts[0].ttft_ns is not None
    assert a.streams[0].closed


def test_a_client_leaving_during_a_hedge_records_both_racers_as_client_cancelled() -> None:
    a = FunctionProvider("a", stream=tokens("slow", first_after_s=1.0))
    b = FunctionProvider("b", stream=tokens("slow too", first_after_s=1.0))

    async def main() -> Run:
        run = executor(a, b).run(plan("a/m", "b/m", hedge_after_s=0.01), time.monotonic_ns())
        await cancel_after(run.open_stream(request(stream=True)), 0.05)
        return run

    run = asyncio.run(main())
    assert sorted(classes(run)) == [("a/m", "client_cancelled"), ("b/m", "client_cancelled")]
    assert a.streams[0].closed and b.streams[0].closed


# --- the attempt log ------------------------------------------------------------------------


def test_a_streamed_requests_attempts_are_recorded_once_each_including_the_serving_one() -> None:
    a = FunctionProvider("a", stream=tokens("late", first_after_s=1.0))
    b = FunctionProvider("b", stream=tokens(then_fail=errors.Upstream5xx("boom")))
    c = FunctionProvider("c", stream=tokens("served"))

    async def main() -> Run:
        run = executor(a, b, c).run(plan("a/m", "b/m", "c/m", timeouts=RouteTimeouts(ttft_s=0.03)), time.monotonic_ns())
        opened = await run.open_stream(request(stream=True))
        assert len(run.attempts) == 2  # the serving attempt is recorded when the stream ends, not before
        assert await opened.relay(Client().send) is None
        return run

    run = asyncio.run(main())
    assert classes(run) == [("a/m", "timeout"), ("b/m", "upstream_5xx"), ("c/m", None)]
