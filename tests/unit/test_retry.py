"""Retry rules (relaycast.retry): which statuses and errors are worth another try, how long to wait, and what a
server's Retry-After says, in seconds and HTTP-date form."""

from __future__ import annotations

import asyncio
import email.utils
import random
import socket
import time

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from relaycast.errors import RateLimited
from relaycast.retry import (
    OTLP_RETRYABLE_STATUS,
    RETRYABLE_STATUS,
    backoff,
    is_retryable,
    is_retryable_status,
    retry_after_seconds,
    retry_delay,
)
from relaycast.telemetry.exporters.base import ExportError, post

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=120.0),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_backoff_is_between_half_and_all_of_the_capped_doubling(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    step = min(cap, base * 2.0 ** min(attempt - 1, 60))
    d = backoff(attempt, base, cap, random.Random(seed))
    assert 0.5 * step <= d <= step <= cap


def test_backoff_doubles_per_attempt_until_the_cap() -> None:
    class Top(random.Random):
        def random(self) -> float:
            return 1.0  # the top of the jitter

    assert [backoff(n, 0.1, 2.0, Top()) for n in range(1, 8)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_backoff_is_jittered_so_callers_that_failed_together_do_not_retry_together() -> None:
    rng = random.Random(7)
    delays = {round(backoff(3, 0.2, 10.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 0.4 and max(delays) <= 0.8


def test_a_retry_waits_what_retry_after_asks_but_never_longer_than_the_limit() -> None:
    rng = random.Random(1)
    assert retry_delay(1, 0.2, 10.0, rng, retry_after=7.0) == 7.0
    assert retry_delay(1, 0.2, 10.0, rng, retry_after=3600.0) == 60.0
    assert retry_delay(1, 0.2, 10.0, rng, retry_after=3600.0, max_retry_after_s=5.0) == 5.0
    assert 0.1 <= retry_delay(1, 0.2, 10.0, rng) <= 0.2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 529, 599])
def test_408_429_and_5xx_are_retryable(status: int) -> None:
    assert is_retryable_status(status) and is_retryable(status)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 409, 413, 422])
def test_other_statuses_are_never_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_otlp_narrows_the_retryable_statuses_to_429_502_503_504() -> None:
    assert OTLP_RETRYABLE_STATUS == {429, 502, 503, 504} and OTLP_RETRYABLE_STATUS < RETRYABLE_STATUS
    assert not is_retryable_status(500, OTLP_RETRYABLE_STATUS) and not is_retryable_status(408, OTLP_RETRYABLE_STATUS)


def test_an_error_classified_where_its_wire_format_is_known_says_itself_whether_to_retry() -> None:
    assert is_retryable(ExportError("down", retryable=True))
    assert not is_retryable(ExportError("bad key", retryable=False, status=403))
    assert is_retryable(RateLimited("slow down"))


def test_timeouts_and_connection_failures_are_retryable_other_errors_are_not() -> None:
    assert is_retryable(TimeoutError()) and is_retryable(ConnectionResetError())
    assert is_retryable(aiohttp.ServerDisconnectedError())
    assert not is_retryable(ValueError("bad body"))
    assert not is_retryable(aiohttp.InvalidURL("nope"))


def test_a_refused_connection_from_a_real_socket_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused

        async def go() -> BaseException:
            async with aiohttp.ClientSession() as session:
                try:
                    await session.get(f"http://127.0.0.1:{port}/")
                except aiohttp.ClientError as e:
                    return e
            raise AssertionError("the connection was not refused")

        err = asyncio.run(go())
    assert isinstance(err, aiohttp.ClientConnectorError) and is_retryable(err)


def test_retry_after_in_seconds() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0


def test_retry_after_as_an_http_date_is_the_time_until_then() -> None:
    date = email.utils.formatdate(NOW + 120, usegmt=True)  # "Thu, 01 Jan 2026 00:02:00 GMT"
    assert retry_after_seconds({"retry-after": date}, now=lambda: NOW) == pytest.approx(120.0)
    unzoned = email.utils.formatdate(NOW + 30).replace("+0000", "-0000")
    assert retry_after_seconds({"retry-after": unzoned}, now=lambda: NOW) == pytest.approx(30.0)
    past = email.utils.formatdate(NOW - 600, usegmt=True)
    assert retry_after_seconds({"retry-after": past}, now=lambda: NOW) == 0.0


def test_retry_after_ms_wins_and_unreadable_values_are_none() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises_and_is_never_negative(value: str) -> None:
    got = retry_after_seconds({"retry-after": value}, now=lambda: NOW)
    assert got is None or got >= 0.0


def test_an_exporter_post_answered_503_with_an_http_date_is_retryable_after_that_date() -> None:
    async def go() -> ExportError:
        async def busy(request: web.Request) -> web.Response:
            when = email.utils.formatdate(time.time() + 40, usegmt=True)
            return web.Response(status=503, headers={"Retry-After": when})

        app = web.Application()
        app.router.add_post("/", busy)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(ExportError) as e:
                    await post(session, f"http://127.0.0.1:{port}/", b"{}", {}, 5.0, "sink")
                with pytest.raises(ExportError) as otlp:
                    await post(session, f"http://127.0.0.1:{port}/", b"{}", {}, 5.0, "sink", OTLP_RETRYABLE_STATUS)
                assert otlp.value.retryable
                return e.value
        finally:
            await runner.cleanup()

    err = asyncio.run(go())
    assert err.status == 503 and err.retryable and is_retryable(err)
    assert err.retry_after is not None and 38.0 <= err.retry_after <= 40.0
