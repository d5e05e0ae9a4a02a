"""The pure routing policy, the health statistics it reads, and the planner's path for a route of one target. Property
tests where a rule must always hold."""

from __future__ import annotations

import collections
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from relaycast.costs.catalog import ModelPrice
from relaycast.costs.pricer import build_pricer
from relaycast.errors import NoRoute
from relaycast.log import EventLog
from relaycast.providers.settings import ProviderConfig
from relaycast.redact import Redactor
from relaycast.routing import plan
from relaycast.routing.health import HealthBoard, TargetHealth
from relaycast.routing.plan import Planner
from relaycast.routing.policy import Candidate, order
from relaycast.routing.settings import Route, RoutingSettings
from relaycast.routing.target import Target
from relaycast.schema import ProviderPrefs

PROVIDERS = ["openai", "anthropic", "groq", "mistral"]
STATES = ["ok", "cooling", "open", "half_open", "probing"]


def usd(prompt: float, completion: float) -> ModelPrice:
    """A route price in USD per million tokens."""
    return ModelPrice.parse({"input": prompt, "output": completion}, "route", "test")


candidate = st.builds(
    Candidate,
    target=st.builds(Target, st.sampled_from(PROVIDERS), st.sampled_from(["m1", "m2", "m3"])),
    weight=st.floats(0.1, 10),
    # pico-dollars per token: up to $20 and $60 per million tokens
    price=st.one_of(
        st.none(),
        st.builds(
            lambda i, o: ModelPrice(i, o, i, i, o, source="route"),
            st.integers(0, 20 * 10**6),
            st.integers(0, 60 * 10**6),
        ),
    ),
    state=st.sampled_from(STATES),
    demoted=st.booleans(),
    p99_ms=st.one_of(st.none(), st.floats(1, 10_000)),
)
prefs = st.builds(
    ProviderPrefs,
    order=st.lists(st.sampled_from(PROVIDERS), max_size=2).map(tuple),
    allow_fallbacks=st.booleans(),
    only=st.lists(st.sampled_from(PROVIDERS), max_size=2).map(tuple),
    ignore=st.lists(st.sampled_from(PROVIDERS), max_size=2).map(tuple),
    sort=st.sampled_from([None, "price", "latency", "throughput"]),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(candidate, max_size=8, unique_by=lambda c: c.target),
    st.sampled_from(["priority", "weighted", "lowest_latency", "lowest_cost"]),
    prefs,
    st.integers(0, 2**32),
)
def test_the_policy_never_picks_an_open_circuit_a_busy_probe_or_an_excluded_provider(cands, strategy, p, seed) -> None:
    out = order(cands, strategy, p, random.Random(seed), probe_share=0.5)
    by_target = {c.target: c for c in cands}
    assert len(out) == len(set(out))
    for t in out:
        c = by_target[t]
        assert c.state not in ("open", "probing")
        if p.only:
            assert t.provider in p.only
        assert t.provider not in p.ignore
    if not p.allow_fallbacks:
        assert len(out) <= 1
    if any(
        c.state in ("ok", "half_open")
        for c in cands
        if (not p.only or c.target.provider in p.only) and c.target.provider not in p.ignore
    ):
        assert all(by_target[t].state != "cooling" for t in out), "a rate-limited target only as a last resort"


@settings(max_examples=200, deadline=None)
@given(st.lists(candidate, min_size=1, max_size=6, unique_by=lambda c: c.target), st.integers(0, 2**32))
def test_healthy_targets_come_before_demoted_ones_without_probes(cands, seed) -> None:
    out = order(cands, "priority", ProviderPrefs(), random.Random(seed), probe_share=0.0)
    demoted_seen = False
    for t in out:
        c = next(c for c in cands if c.target == t)
        if c.demoted:
            demoted_seen = True
        else:
            assert not demoted_seen, "a healthy target after a demoted one"


def test_weights_converge_to_their_shares() -> None:
    cands = [Candidate(Target("a", "m"), weight=1), Candidate(Target("b", "m"), weight=3)]
    rng = random.Random(1)
    first = collections.Counter(order(cands, "weighted", ProviderPrefs(), rng)[0].provider for _ in range(20_000))
    assert abs(first["b"] / 20_000 - 0.75) < 0.02


def test_provider_order_sort_and_price_caps() -> None:
    cands = [
        Candidate(Target("openai", "m"), price=usd(5, 15), p99_ms=900),
        Candidate(Target("groq", "m"), price=usd(0.1, 0.1), p99_ms=200),
        Candidate(Target("anthropic", "m"), price=usd(3, 15), p99_ms=400),
    ]
    rng = random.Random(0)
    names = lambda prefs, strategy="priority": [t.provider for t in order(cands, strategy, prefs, rng)]  # noqa: E731
    assert names(ProviderPrefs()) == ["openai", "groq", "anthropic"]
    assert names(ProviderPrefs(sort="price")) == ["groq", "anthropic", "openai"]
    assert names(ProviderPrefs(sort="latency")) == ["groq", "anthropic", "openai"]
    assert names(ProviderPrefs(order=("anthropic",))) == ["anthropic", "openai", "groq"]
    assert names(ProviderPrefs(max_prompt_price=4)) == ["groq", "anthropic"]
    assert names(ProviderPrefs(only=("OpenAI", "groq"), allow_fallbacks=False)) == ["openai"]
    assert names(ProviderPrefs(), "lowest_cost") == ["groq", "anthropic", "openai"]


def test_an_unknown_price_sorts_last_and_never_passes_a_cap() -> None:
    cands = [
        Candidate(Target("local", "m")),
        Candidate(Target("openai", "m"), price=usd(0.15, 0.6)),
        Candidate(Target("groq", "m"), price=usd(0.05, 0.08)),
    ]
    rng = random.Random(0)
    names = lambda prefs, strategy="priority": [t.provider for t in order(cands, strategy, prefs, rng)]  # noqa: E731
    assert names(ProviderPrefs(), "lowest_cost") == ["groq", "openai", "local"]
    assert names(ProviderPrefs(sort="price")) == ["groq", "openai", "local"]
    assert names(ProviderPrefs(max_prompt_price=0.15, max_completion_price=0.6)) == ["openai", "groq"]
    assert names(ProviderPrefs(max_prompt_price=0.149999)) == ["groq"], "caps compare exactly"
    assert names(ProviderPrefs(max_completion_price=0)) == []


def test_a_demoted_target_gets_about_the_probe_share_of_first_places() -> None:
    cands = [Candidate(Target("slow", "m"), demoted=True), Candidate(Target("fast", "m"))]
    rng = random.Random(3)
    firsts = collections.Counter(
        order(cands, "priority", ProviderPrefs(), rng, probe_share=0.1)[0].provider for _ in range(10_000)
    )
    assert abs(firsts["slow"] / 10_000 - 0.1) < 0.015


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _board(clock: Clock, **over) -> HealthBoard:  # type: ignore[no-untyped-def]
    red = Redactor()
    return HealthBoard(RoutingSettings(window_s=60, min_requests=5, **over), EventLog(red), clock)


def test_samples_leave_the_window_as_time_passes() -> None:
    clock = Clock()
    h = TargetHealth("t", RoutingSettings(window_s=60), clock)
    for _ in range(10):
        h.observe(500, None, None, 0)
    assert h.snapshot(max_age_s=0).p99_ms >= 500
    clock.t += 30
    h.observe(10, None, None, 0)
    assert h.snapshot(max_age_s=0).requests == 11
    clock.t += 45
    snap = h.snapshot(max_age_s=0)
    assert snap.requests == 1 and snap.p99_ms < 20


def test_the_circuit_opens_after_consecutive_failures_then_half_opens_for_one_probe() -> None:
    clock = Clock()
    b = _board(clock, circuit_failures=3, circuit_cooldown_s=10)
    for _ in range(3):
        assert b.admit("t")
        b.observe("t", 5, None, "upstream_5xx")
    assert b.state("t") == "open" and not b.admit("t")
    clock.t += 11
    assert b.state("t") == "half_open"
    assert b.admit("t") and not b.admit("t"), "one probe at a time"
    b.observe("t", 5, None, "connection")
    assert b.state("t") == "open"
    clock.t += 11
    assert b.admit("t")
    b.observe("t", 5, None, None)
    assert b.state("t") == "ok" and b.target("t").circuit == "closed"
    assert b.transitions[("t", "closed->open")] == 1 and b.transitions[("t", "half_open->closed")] == 1


def test_refusals_do_not_count_against_a_target() -> None:
    b = _board(Clock(), circuit_failures=2)
    for cls in ("content_policy", "context_length", "bad_request", "content_policy"):
        b.observe("t", 5, None, cls)
    assert b.state("t") == "ok"


def test_a_rate_limit_cools_the_target_for_retry_after_and_quota_for_longer() -> None:
    clock = Clock()
    b = _board(clock, quota_cooldown_s=300)
    b.observe("a", 5, None, "rate_limit", retry_after=7)
    b.observe("q", 5, None, "rate_limit", quota=True)
    assert b.state("a") == "cooling" and b.state("q") == "cooling"
    clock.t += 8
    assert b.state("a") == "ok" and b.state("q") == "cooling"


def test_a_target_over_its_sla_is_demoted_and_promoted_when_it_recovers() -> None:
    clock = Clock()
    b = _board(clock)
    for _ in range(5):
        b.observe("t", 800, None, None)
    assert b.is_demoted("fast", "t", 500, None)
    assert "p99" in b.demoted[("fast", "t")]
    clock.t += 61
    for _ in range(5):
        b.observe("t", 50, None, None)
    clock.t += 1
    assert not b.is_demoted("fast", "t", 500, None)
    assert b.transitions[("t", "ok->demoted")] == 1 and b.transitions[("t", "demoted->ok")] == 1


def _put_in(b: HealthBoard, clock: Clock, name: str, state: str, slow: bool) -> None:
    """Bring `name` to `state` the way traffic would; `slow` puts its p99 over a 500 ms SLA."""
    for _ in range(5):
        b.observe(name, 800 if slow else 50, None, None)
    if state in ("open", "half_open", "probing"):
        for _ in range(3):
            b.observe(name, 5, None, "upstream_5xx")
        if state != "open":
            clock.t += 11
            if state == "probing":
                assert b.admit(name)
    elif state == "cooling":
        b.observe(name, 5, None, "rate_limit", retry_after=30)
    assert b.state(name) == state


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(STATES), st.booleans(), prefs, st.booleans())
def test_a_route_of_one_target_is_planned_as_the_policy_orders_it(state, slow, p, direct) -> None:  # type: ignore[no-untyped-def]
    """The planner takes a one-target route without ranking candidates: it must still decide what `order` decides,
    in every health state, with every preference, and keep the demotion's bookkeeping."""
    clock = Clock()
    b = _board(clock, circuit_failures=3, circuit_cooldown_s=10)
    providers = {"openai": ProviderConfig("openai", "openai", "openai_compatible", "http://127.0.0.1:9/v1")}
    routes = {} if direct else {"fast": Route(name="fast", targets=("openai/m1",), sla_p99_ms=500)}
    planner = Planner(routes, providers, b, build_pricer(providers, routes, {}), random.Random(1))
    model = "openai/m1" if direct else "fast"
    _put_in(b, clock, "openai/m1", state, slow)
    try:
        got = list(planner.plan(model, prefs=p).targets)
    except NoRoute:
        got = []
    assert (("fast", "openai/m1") in b.demoted) == (not direct and slow), "planning notes the demotion"
    route = planner.route(model)
    cand = Candidate(
        Target("openai", "m1"),
        kind="openai",
        state=b.state("openai/m1"),
        demoted=b.is_demoted(route.name, "openai/m1", route.sla_p99_ms, None),
    )
    assert got == order([cand], "priority", p, random.Random(1))


def test_the_planners_tables_of_names_a_client_chose_stay_bounded() -> None:
    providers = {"openai": ProviderConfig("openai", "openai", "openai_compatible", "http://127.0.0.1:9/v1")}
    b = _board(Clock())
    planner = plan.Planner({}, providers, b, build_pricer(providers, {}, {}))
    for i in range(plan.MAX_CACHED + 50):
        assert [t.model for t in planner.plan(f"openai/m{i}").targets] == [f"m{i}"]
    assert len(planner._direct) == plan.MAX_CACHED and len(planner._parsed) == plan.MAX_CACHED
    assert planner.plan("openai/m1").targets == (Target("openai", "m1"),)
