"""The limiters and admission on their own, each test written as the attack: a concurrent burst on a budget, a flood
of client-chosen user names, a request larger than a minute's tokens, a huge prompt, an unpriced model, a cut
stream with hidden reasoning, a client that names someone else. Redis tests use the one on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import secrets
import time

import pytest

from relaycast.config_reader import ConfigError, Reader
from relaycast.costs.catalog import Catalog
from relaycast.costs.compute import ESTIMATED
from relaycast.costs.estimate import (
    FULL_COUNT_CHARS,
    MEMO_MAX_CHARS,
    TOKENIZER_MAX_CHARS,
    TokenEstimator,
    heuristic_tokens,
)
from relaycast.costs.pricer import Pricer
from relaycast.errors import (
    BudgetExceeded,
    Forbidden,
    InvalidRequest,
    LimiterUnavailable,
    LimitExceeded,
    RequestTooLarge,
)
from relaycast.keys.policy import KeyPolicy, Limits
from relaycast.limits.admission import Admission
from relaycast.limits.base import Check
from relaycast.limits.memory import MemoryLimiter
from relaycast.limits.redis_limiter import RedisLimiter
from relaycast.limits.settings import LimitsConfig, parse_limits
from relaycast.log import EventLog
from relaycast.records import Attempt, Attribution, RequestRecord, Usage
from relaycast.redact import Redactor
from relaycast.routing.plan import Plan
from relaycast.routing.settings import Route
from relaycast.routing.target import Target

REDIS = "redis://127.0.0.1:6379/9"
NANO = 10**9  # nano-dollars per dollar
PRICER = Pricer(Catalog.packaged(), {"openai": "openai", "local": "vllm"})
MINI = Target("openai", "gpt-4o-mini")  # $0.15 in, $0.60 out per 1M tokens: 600 pico-dollars per output token


def aio(fn):
    """Run an async test on its own event loop."""

    @functools.wraps(fn)
    def run(*args, **kw):
        return asyncio.run(fn(*args, **kw))

    return run


def budget(usd: float, name: str = "k") -> tuple[Check, ...]:
    return (Check("key", name, Limits(budget_day_usd=usd)),)


async def slow_spend(scope: str, name: str, period: str) -> int:
    await asyncio.sleep(0.01)  # the store is read on a thread: other requests run meanwhile
    return 0


def plan(*targets: Target) -> Plan:
    return Plan(Route(name="r", targets=tuple(t.name for t in targets)), targets)


def admission(limiter, cfg: LimitsConfig | None = None) -> Admission:
    return Admission(cfg or LimitsConfig(), limiter, PRICER, time.time, lambda aw: None)


# --- the in-memory limiter ---------------------------------------------------------------------------


@aio
async def test_the_windows_never_admit_more_than_the_limit_in_any_minute_and_free_a_slot_at_most_0_1_s_late():
    """Requests a few milliseconds apart for three minutes: no 60 s window ever holds more than the rpm limit
    (requests sharing a slot leave together, with the last of them), and a request is refused only while the window
    padded by 0.1 s is full."""
    lim, rpm = MemoryLimiter(), 50
    checks = (Check("key", "k", Limits(rpm=rpm)),)
    admitted: list[float] = []
    rng = random.Random(7)
    now = 1000.0
    while now < 1180.0:
        try:
            res = await lim.admit(checks, 1, 0, now)
        except LimitExceeded as e:
            # refused: the window is full now, and frees within its Retry-After (at most 0.1 s later than exact)
            assert sum(1 for t in admitted if t > now - 60.1) >= rpm
            assert 0 < e.retry_after_s <= 60.1
        else:
            lim.settle(res, 1, 0)
            admitted.append(now)
        now += rng.choice((0.0, 0.001, 0.004, 0.03))  # a few ms apart, some at the same instant
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[: i + 1] if u > t - 60.0) <= rpm, t
    assert len(admitted) >= 2 * rpm  # the windows did free: more than one minute's worth went through


@aio
async def test_a_key_at_thousands_of_requests_a_second_keeps_a_few_hundred_slots_not_one_per_request():
    lim = MemoryLimiter()
    checks = (Check("key", "k", Limits(rpm=10**9, tpm=10**12)),)
    now = 0.0
    held = []
    for _ in range(120_000):  # two minutes at 1,000 requests a second
        held.append(await lim.admit(checks, 64, 0, now))
        if len(held) > 50:
            r = held.pop(0)
            lim.settle(r, 20, 0)  # the real count replaces the estimate in a slot other requests share
        now += 0.001
    scope = lim._scopes[("key", "k")]
    assert scope.requests is not None and scope.tokens is not None
    assert len(scope.requests) <= 602 and len(scope.tokens) <= 602
    assert 60_000 <= scope.request_count <= 60_100  # the last minute's requests, give or take one slot
    # the window's tokens: the settled requests at their real 20, the 50 in flight at their estimate of 64
    in_window = scope.request_count
    assert scope.token_sum == (in_window - 50) * 20 + 50 * 64
    for r in held:
        lim.settle(r, 20, 0)
    assert scope.token_sum == in_window * 20


@aio
async def test_a_concurrent_burst_passes_a_budget_that_allows_one_only_once():
    lim = MemoryLimiter(slow_spend)
    checks = (Check("key", "k", Limits(budget_day_usd=1.0, budget_month_usd=5.0)),)

    async def one():
        try:
            return await lim.admit(checks, 10, int(0.6 * NANO), time.time())
        except LimitExceeded:
            return None

    got = await asyncio.gather(*(one() for _ in range(20)))
    assert sum(r is not None for r in got) == 1
    assert lim.rejected["budget_day"] == 19


@aio
async def test_fifty_thousand_user_names_stay_within_the_cap_and_in_flight_reservations_are_kept():
    lim = MemoryLimiter(max_scopes=1000)
    keep = await lim.admit(budget(1.0, "victim"), 10, int(0.9 * NANO), time.time())  # in flight throughout
    gc.collect()
    gc.disable()  # what is dropped must be freed at once, not left for the collector
    before = len(gc.get_objects())
    try:
        for i in range(50_000):
            c = (Check("user", f"u{i}", Limits(rpm=5, tpm=1000, budget_day_usd=1.0)),)
            lim.settle(await lim.admit(c, 10, 100, time.time()), 10, 100)
        grown = len(gc.get_objects()) - before
    finally:
        gc.enable()
    st = lim.status()
    assert st["scopes"] <= 1000 and st["evicted"] >= 49_000 and grown < 20_000
    with pytest.raises(BudgetExceeded):  # the victim's reservation survived the flood
        await lim.admit(budget(1.0, "victim"), 10, int(0.2 * NANO), time.time())
    lim.settle(keep, 10, int(0.9 * NANO))


@aio
async def test_making_room_for_a_new_scope_never_evicts_another_scope_of_the_same_request():
    """A feature near its budget, least recently used, and a request from a new user of that feature: creating
    the user's scope must not evict the feature's and rebuild it at $0 (its spend comes from the store once)."""
    spent = {("feature", "F"): int(0.99 * NANO)}

    async def from_store(scope: str, name: str, period: str) -> int:
        return spent.get((scope, name), 0)

    lim = MemoryLimiter(from_store, max_scopes=3)
    feature = Check("feature", "F", Limits(budget_day_usd=1.0))
    lim.settle(await lim.admit((feature,), 1, 0, time.time()), 1, 0)  # F is known, with its $0.99
    for name in ("a", "b"):  # two newer scopes: F is now the least recently used
        lim.settle(await lim.admit((Check("user", name, Limits(rpm=100)),), 1, 0, time.time()), 1, 0)
    with pytest.raises(BudgetExceeded):
        await lim.admit((Check("user", "new", Limits(rpm=100)), feature), 1, int(0.5 * NANO), time.time())


@pytest.mark.parametrize("backend", ["memory", "redis"])
@aio
async def test_one_request_larger_than_tokens_per_minute_is_refused_without_retry_after(backend):
    lim = (
        MemoryLimiter() if backend == "memory" else RedisLimiter(LimitsConfig(redis_url=REDIS), EventLog(Redactor(())))
    )
    checks = (Check("key", f"tpm-{secrets.token_hex(4)}", Limits(tpm=1000)),)
    try:
        with pytest.raises(RequestTooLarge) as e:  # the first request of the window, alone larger than the limit
            await lim.admit(checks, 1001, 0, time.time())
        assert "Limit 1000, Requested 1001" in e.value.message and e.value.body()["error"]["type"] == "tokens"
        assert all(h[0] != b"retry-after" for h in e.value.headers())
        res = await lim.admit(checks, 1000, 0, time.time())  # exactly the limit fits
        with pytest.raises(LimitExceeded) as e2:
            await lim.admit(checks, 1, 0, time.time())
        assert not isinstance(e2.value, RequestTooLarge) and any(h[0] == b"retry-after" for h in e2.value.headers())
        lim.settle(res, 1000, 0)
        assert lim.rejected["tpm_request_too_large"] == 1 and lim.rejected["tpm"] == 1
    finally:
        await lim.close()


# --- Redis -------------------------------------------------------------------------------------------


@aio
async def test_a_concurrent_burst_on_redis_passes_a_budget_once():
    lim = RedisLimiter(LimitsConfig(redis_url=REDIS), EventLog(Redactor(())), slow_spend)
    checks = budget(1.0, f"burst-{secrets.token_hex(4)}")

    async def one():
        try:
            return await lim.admit(checks, 10, int(0.3 * NANO), time.time())
        except LimitExceeded:
            return None

    try:
        got = await asyncio.gather(*(one() for _ in range(20)))
        assert sum(r is not None for r in got) == 3
    finally:
        await lim.close()


@aio
async def test_redis_down_budgets_fail_closed_and_other_limits_are_kept_in_this_replica():
    down = "redis://127.0.0.1:1/0"
    lim = RedisLimiter(LimitsConfig(redis_url=down, redis_timeout_s=0.1), EventLog(Redactor(())))
    try:
        with pytest.raises(LimiterUnavailable, match="budgets fail closed"):
            await lim.admit(budget(5.0), 10, 100, time.time())
        rpm = (Check("key", "k", Limits(rpm=2)),)
        for _ in range(2):
            lim.settle(await lim.admit(rpm, 10, 0, time.time()), 10, 0)
        with pytest.raises(LimitExceeded, match="2 requests per minute"):  # not "no limit" while Redis is down
            await lim.admit(rpm, 10, 0, time.time())
        assert lim.status()["admitted_while_redis_down"] == 2
    finally:
        await lim.close()
    cfg = LimitsConfig(redis_url=down, redis_timeout_s=0.1, budgets_on_redis_error="open")
    lim = RedisLimiter(cfg, EventLog(Redactor(())))
    try:
        res = await lim.admit(budget(1.0), 10, int(0.8 * NANO), time.time())
        with pytest.raises(BudgetExceeded):  # kept in this replica
            await lim.admit(budget(1.0), 10, int(0.8 * NANO), time.time())
        lim.settle(res, 10, int(0.1 * NANO))
        lim.settle(await lim.admit(budget(1.0), 10, int(0.8 * NANO), time.time()), 10, 0)
    finally:
        await lim.close()


# --- admission ---------------------------------------------------------------------------------------


@aio
async def test_reservation_is_n_times_the_output_cap_at_the_dearest_price_and_the_cap_is_set_upstream():
    lim = MemoryLimiter()
    adm = admission(lim, LimitsConfig(default_max_tokens=1000))
    key = KeyPolicy(name="k", limits=Limits(budget_day_usd=1.0, tpm=100_000))
    body: dict = {"n": 3}
    res = await adm.admit(key, Attribution(), plan(MINI, Target("openai", "gpt-4o")), body, lambda: 100)
    assert body["max_tokens"] == 1000  # the upstream cannot produce more than was reserved
    assert res is not None and res.est_tokens == 100 + 3 * 1000
    # gpt-4o (the fallback) is dearer: $2.50 in, $10 out per 1M, so 100 * 2500 + 3000 * 10000 pico-dollars.
    assert res.est_nano == (100 * 2_500_000 + 3000 * 10_000_000) // 1000
    given: dict = {"max_completion_tokens": 50}
    res2 = await adm.admit(key, Attribution(), plan(MINI), given, lambda: 10)
    assert "max_tokens" not in given and res2 is not None and res2.est_tokens == 60


@aio
async def test_the_cap_the_gateway_sets_fits_a_small_tokens_per_minute_limit():
    """A key with tpm 2,000 and requests that name no max_tokens: the default cap (4,096) would make every one of
    them "too large"; the cap set is what the limit leaves after the prompt."""
    adm = admission(MemoryLimiter(), LimitsConfig(default_max_tokens=4096))
    key = KeyPolicy(name="small", limits=Limits(tpm=2000))
    body: dict = {"n": 2}
    res = await adm.admit(key, Attribution(), plan(MINI), body, lambda: 400)
    assert body["max_tokens"] == 800 and res is not None and res.est_tokens == 400 + 2 * 800


@aio
async def test_a_budget_refuses_an_unpriced_model_and_says_how_to_price_it():
    adm = admission(MemoryLimiter())
    body: dict = {}
    with pytest.raises(Forbidden) as e:
        await adm.admit(
            KeyPolicy(name="k", limits=Limits(budget_month_usd=5)),
            Attribution(),
            plan(MINI, Target("local", "my-llama")),
            body,
            lambda: 1,
        )
    msg = e.value.message
    assert e.value.status_code == 403 and "'my-llama'" in msg and "prices:" in msg and "price:" in msg
    # Without a budget the model is served (nothing to count).
    assert await adm.admit(
        KeyPolicy(name="k", limits=Limits(rpm=5)), Attribution(), plan(Target("local", "my-llama")), {}, lambda: 1
    )


@aio
async def test_a_cut_stream_is_charged_at_least_its_reservation():
    lim = MemoryLimiter()
    adm = admission(lim)
    key = KeyPolicy(name=f"cut-{secrets.token_hex(4)}", limits=Limits(budget_day_usd=0.01))
    res = await adm.admit(key, Attribution(), plan(MINI), {"max_tokens": 10_000}, lambda: 10)
    assert res is not None and res.est_nano > 0.005 * NANO
    # The stream was cut before its usage: only the visible text was counted (its hidden reasoning was not).
    cut = Attempt(
        "openai/gpt-4o-mini",
        "openai",
        "gpt-4o-mini",
        0,
        1,
        ttft_ns=1,
        error_class="stream_cut",
        usage=Usage(prompt_tokens=10, completion_tokens=3),
        cost_pusd=3000,
        cost_source=ESTIMATED,
    )
    rec = RequestRecord("r", "chat.completions", "m", True, 0, 1, 200, Attribution(), attempts=(cut,))
    adm.settle(res, rec)
    with pytest.raises(BudgetExceeded):  # a second such request would pass the budget
        await adm.admit(key, Attribution(), plan(MINI), {"max_tokens": 10_000}, lambda: 10)


@aio
async def test_a_pinned_key_ignores_the_client_user_and_a_required_user_is_enforced():
    pinned = KeyPolicy(name="k", user="alice", feature="search", pin=True, tags=(("team", "a"),))
    a = pinned.attribute(Attribution(user="mallory", feature="free", tags=(("team", "b"),)))
    assert (a.key_name, a.user, a.feature, a.tags) == ("k", "alice", "search", (("team", "b"),))
    loose = KeyPolicy(name="k", user="alice")
    assert loose.attribute(Attribution(user="bob")).user == "bob" and loose.attribute(Attribution()).user == "alice"
    adm = admission(MemoryLimiter(), LimitsConfig(require_user=True, per_user=Limits(rpm=5)))
    with pytest.raises(InvalidRequest, match="requires a user"):
        await adm.admit(None, Attribution(), plan(MINI), {}, lambda: 1)
    assert await adm.admit(None, Attribution(user="u"), plan(MINI), {}, lambda: 1)


def test_limits_settings_fail_modes_and_defaults():
    r = Reader({})
    cfg = parse_limits(r, {}, {})
    assert (cfg.on_redis_error, cfg.budgets_on_redis_error, cfg.default_max_tokens) == ("open", "closed", 4096)
    assert parse_limits(r, {"budgets_on_redis_error": "open", "require_user": True}, {}).require_user
    with pytest.raises(ConfigError, match="budgets_on_redis_error"):
        parse_limits(r, {"on_redis_error": "closed", "budgets_on_redis_error": "open"}, {})


# --- the token estimate ------------------------------------------------------------------------------


def test_a_huge_prompt_is_estimated_in_bounded_time_without_counting_low():
    words = "The quick brown fox jumps over 13 lazy dogs. " * 100_000  # 4.5 MB of letters, digits, punctuation
    marks = "!?;{}" * 900_000  # 4.5 MB of one-token characters
    text = words + marks
    est = TokenEstimator()
    t = time.monotonic()
    for _ in range(5):
        n = est.prompt([{"role": "user", "content": text}, {"role": "user", "content": text}])
    elapsed = (time.monotonic() - t) / 5
    whole = sum(heuristic_tokens(text[i : i + 100_000]) for i in range(0, len(text), 100_000))  # counted whole
    assert elapsed < 0.25 and n >= 2 * whole * 0.9
    # A slow tokenizer never sees more than its share, however the prompt is split.
    seen: list[int] = []
    counting = TokenEstimator(lambda s: seen.append(len(s)) or len(s) // 4)
    counting.prompt([{"role": "user", "content": "x" * 10_000}] * 200)
    assert counting.count("y" * (TOKENIZER_MAX_CHARS + 1)) > 0
    assert sum(seen) <= TOKENIZER_MAX_CHARS


def test_a_conversation_s_earlier_messages_are_not_counted_again():
    seen: list[str] = []
    est = TokenEstimator(lambda s: seen.append(s) or len(s) // 4)
    system = {"role": "system", "content": "You are terse. " * 50}
    turns = [system, {"role": "user", "content": "First question, please."}]
    first = est.prompt(turns)
    assert first == 3 + 3 * 2 + len(system["content"]) // 4 + len("First question, please.") // 4
    # The next turn sends everything again (new string objects, as a new request's JSON makes them), plus two more.
    turns = [dict(m, content=m["content"][:-1] + m["content"][-1]) for m in turns]
    turns += [{"role": "assistant", "content": "An answer."}, {"role": "user", "content": "And another?"}]
    seen.clear()
    second = est.prompt(turns)
    assert seen == ["An answer.", "And another?"]  # only the new messages were counted
    assert second == first + 3 * 2 + len("An answer.") // 4 + len("And another?") // 4
    # A text of the same length as one remembered is counted afresh.
    seen.clear()
    assert est.prompt([{"role": "user", "content": "An answes."}]) == 3 + 3 + 2 and seen == ["An answes."]


def test_the_token_memo_is_bounded_and_new_text_past_its_share_is_counted_together():
    est = TokenEstimator(heuristic_tokens, memo_texts=3)
    texts = [f"message number {i} " * 10 for i in range(10)]
    assert est.prompt([{"role": "user", "content": t} for t in texts]) == 3 + 3 * 10 + sum(map(heuristic_tokens, texts))
    assert len(est._memo) == 3  # the oldest were forgotten
    huge = "many words here " * (MEMO_MAX_CHARS // 16 + 1)  # sampled every time: hashing it would cost more
    assert est.prompt([{"role": "user", "content": huge}]) >= 3 + 3 + heuristic_tokens(huge) * 0.9
    assert len(est._memo) == 3 and (hash(huge), len(huge)) not in est._memo
    # Without a tokenizer, new text is counted text by text (and remembered) up to FULL_COUNT_CHARS; the rest
    # together, sampled within what is left of that, and not remembered.
    heuristic = TokenEstimator(None)
    if heuristic.method != "heuristic":
        pytest.skip("tiktoken's file is cached here: the tokenizer counts instead")
    # What is left of the share may be less than a text past it: one shorter than the windows is counted whole.
    first, second = "lorem ipsum " * 5_000, "dolor sit amet 42; " * 300  # 60,000 and 5,700 characters
    exact = 3 + 3 * 2 + heuristic_tokens(first) + heuristic_tokens(second)
    assert heuristic.prompt([{"role": "user", "content": first}, {"role": "user", "content": second}]) == exact
    heuristic = TokenEstimator(None)
    big = [("word " * 2_000)[:-1] + str(i) for i in range(40)]  # 40 texts of 10,000 characters
    n = heuristic.prompt([{"role": "user", "content": t} for t in big])
    assert len(heuristic._memo) == FULL_COUNT_CHARS // 10_000
    assert n >= 3 + 3 * 40 + sum(map(heuristic_tokens, big)) * 0.9
