"""Per-target health: rolling latency and TTFT histograms, error rates by class, cool-downs, circuit breakers.

Statistics are kept cheaply: a rolling window of a few slots, each holding latency and TTFT counts in the
store's log-scale buckets (`relaycast.store.histogram`: 10% wide, so a percentile is within about 5% of the
exact one) and a few counters, so memory and cost stay flat with traffic. Percentiles are read from the buckets
and cached for a moment (a quarter of a second; a failure clears them at once), so routing reads them without
work per request. Everything here is in memory and O(1) per observation: no lock, no I/O on the request path.

Circuit: closed -> (N consecutive failures) -> open -> (cool-down) -> half_open: one probe at a time;
its success closes the circuit, its failure opens it again.

Which targets have state is decided by the config, never by clients: every target the config defines (routes'
targets and fallbacks, the models a provider lists) keeps its state for the life of the process. A client naming
`provider/any-model` on a configured provider reaches a target the config does not define; those pass-through
targets live apart, in a small least-recently-used table that evicts pass-through entries only (healthy ones
first) and counts each eviction, so no number of distinct model names can erase a configured target's circuit.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from relaycast.errors import CLIENT_REFUSALS, PROVIDER_FAILURES
from relaycast.log import EventLog
from relaycast.routing.settings import Route, RoutingSettings
from relaycast.store.histogram import bucket_of, percentiles

if TYPE_CHECKING:
    from relaycast.providers.settings import ProviderConfig

Clock = Callable[[], float]  # monotonic seconds

SLOTS = 6
MAX_PASS_THROUGH = 512  # targets the config does not define (clients name them): the least recently used go first
EVICT_SCAN = 8  # oldest pass-through entries looked at for a healthy one to evict before the oldest goes anyway
HISTORY = 50  # transitions kept per target (the most recent): when it was demoted, opened, recovered, and why

# Classes that say a target is unhealthy (the request itself was fine): the provider failures (relaycast.errors)
# but a rate limit (the target cools down instead) and a redirect (a configuration to fix, said once is enough).
HEALTH_FAILURES = PROVIDER_FAILURES - {"rate_limit", "redirect"}


@dataclass(slots=True)
class _Slot:
    epoch: int = -1
    latency: collections.Counter[int] = field(default_factory=collections.Counter)  # histogram bucket -> count
    ttft: collections.Counter[int] = field(default_factory=collections.Counter)
    ok: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    out_tokens: int = 0
    gen_s: float = 0.0

    def reset(self, epoch: int) -> None:
        self.epoch = epoch
        self.latency = collections.Counter()
        self.ttft = collections.Counter()
        self.ok = 0
        self.errors = collections.Counter()
        self.out_tokens = 0
        self.gen_s = 0.0


@dataclass(frozen=True, slots=True)
class Snapshot:
    requests: int
    ok: int
    errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    ttft_p99_ms: float | None
    tokens_per_s: float | None
    # The share of health failures: what demotion compares with `routing.error_rate` (every request reads it).
    error_rate: float = field(init=False)

    def __post_init__(self) -> None:
        failures = sum(n for c, n in self.errors.items() if c in HEALTH_FAILURES)
        object.__setattr__(self, "error_rate", failures / self.requests if self.requests else 0.0)

    @property
    def provider_failures(self) -> int:
        """Attempts the provider failed (rate limits included): the error rate shown."""
        return sum(n for c, n in self.errors.items() if c in PROVIDER_FAILURES)

    @property
    def client_refusals(self) -> int:
        """Attempts refused for the request's own fault (content policy, context length, a bad request...)."""
        return sum(n for c, n in self.errors.items() if c in CLIENT_REFUSALS)


def configured_targets(routes: Mapping[str, Route], providers: Mapping[str, ProviderConfig]) -> frozenset[str]:
    """The targets the config defines: every route's targets and fallbacks, and each provider's listed models."""
    names: set[str] = set()
    for r in routes.values():
        names.update(r.targets, r.content_policy_fallback, r.context_length_fallback)
    for p in providers.values():
        names.update(f"{p.name}/{m}" for m in p.models)
    return frozenset(names)


class TargetHealth:
    def __init__(self, name: str, settings: RoutingSettings, clock: Clock) -> None:
        self.name = name
        self._s = settings
        self._clock = clock
        self._slot_s = settings.window_s / SLOTS
        self._slots = [_Slot() for _ in range(SLOTS)]
        self._snap: Snapshot | None = None
        self._snap_at = -1.0
        self.consecutive_failures = 0
        self.circuit = "closed"
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.cooldown_until = 0.0
        self.cooldown_reason: str | None = None
        self.demoted_in: set[str] = set()  # routes: what to forget with the target
        self.transition_kinds: dict[str, None] = {}  # in the order they first happened
        # The last HISTORY transitions: {"at": unix seconds, "from", "to", "why", "route" (a demotion's) or None}.
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY)

    def calm(self, now: float) -> bool:
        """Nothing worth keeping but its statistics: circuit closed, not cooling, demoted nowhere."""
        return self.circuit == "closed" and self.cooldown_until <= now and not self.demoted_in

    def _slot(self, now: float) -> _Slot:
        epoch = int(now / self._slot_s)
        s = self._slots[epoch % SLOTS]
        if s.epoch != epoch:
            s.reset(epoch)
        return s

    def observe(self, duration_ms: float, ttft_ms: float | None, error_class: str | None, out_tokens: int) -> None:
        now = self._clock()
        s = self._slot(now)
        if error_class is None:
            s.ok += 1
            s.latency[bucket_of(duration_ms)] += 1
            if ttft_ms is not None:
                s.ttft[bucket_of(ttft_ms)] += 1
            gen_ms = duration_ms - (ttft_ms or 0.0)
            if out_tokens and gen_ms > 0:
                s.out_tokens += out_tokens
                s.gen_s += gen_ms / 1000
        else:
            s.errors[error_class] += 1
            if error_class == "timeout":
                s.latency[bucket_of(duration_ms)] += 1  # a timeout is a slow answer too
            self._snap = None  # a failure is seen by the next snapshot; successes, once it is `max_age_s` old

    def snapshot(self, max_age_s: float = 0.25) -> Snapshot:
        now = self._clock()
        if self._snap is not None and now - self._snap_at < max_age_s:
            return self._snap
        oldest = int(now / self._slot_s) - SLOTS + 1
        lat: collections.Counter[int] = collections.Counter()
        ttft: collections.Counter[int] = collections.Counter()
        ok = 0
        errs: collections.Counter[str] = collections.Counter()
        toks, gen = 0, 0.0
        for s in self._slots:
            if s.epoch < oldest:
                continue
            ok += s.ok
            errs.update(s.errors)
            toks += s.out_tokens
            gen += s.gen_s
            lat.update(s.latency)
            ttft.update(s.ttft)
        lat_q = percentiles(lat.items(), (50.0, 99.0))
        ttft_q = percentiles(ttft.items(), (99.0,))
        snap = Snapshot(
            requests=ok + sum(errs.values()),
            ok=ok,
            errors=dict(errs),
            p50_ms=lat_q[50.0],
            p99_ms=lat_q[99.0],
            ttft_p99_ms=ttft_q[99.0],
            tokens_per_s=toks / gen if gen > 0 else None,
        )
        self._snap, self._snap_at = snap, now
        return snap


class HealthBoard:
    """Every target's health, and the transitions between states, logged and counted.

    `configured` names the targets the config defines (`configured_targets`): they keep their state for good.
    Any other target is a pass-through one, kept in a bounded table (`MAX_PASS_THROUGH`)."""

    def __init__(
        self,
        settings: RoutingSettings,
        log: EventLog,
        clock: Clock = time.monotonic,
        *,
        configured: Iterable[str] = (),
        max_pass_through: int = MAX_PASS_THROUGH,
        wall_clock: Clock = time.time,
    ) -> None:
        self.settings = settings
        self._log = log
        self._clock = clock
        self._wall = wall_clock  # when a transition happened, as the admin API shows it
        self._configured = frozenset(configured)
        self._targets: dict[str, TargetHealth] = {}  # configured targets only: bounded by the config
        self._passing: collections.OrderedDict[str, TargetHealth] = collections.OrderedDict()  # LRU order
        self._max_passing = max(1, max_pass_through)
        self.evicted = 0  # pass-through targets forgotten to make room
        self.transitions: collections.Counter[tuple[str, str]] = collections.Counter()  # (target, "from->to")
        self.demoted: dict[tuple[str, str], str] = {}  # (route, target) -> reason
        # Set by the monitors: (route or "*", target or "provider:<name>") -> reason, while their alert is open.
        self.monitor_alerts: dict[tuple[str, str], str] = {}
        # From other replicas or workers (routing.replicas): circuits they opened (target -> until, monotonic), and
        # their demotions.
        self.shared_open: dict[str, float] = {}
        self.shared_demoted: dict[tuple[str, str], str] = {}
        self.demoted_source: dict[tuple[str, str], str] = {}  # local | monitor | shared: only local ones are published

    def target(self, name: str) -> TargetHealth:
        if name in self._configured:
            t = self._targets.get(name)
            if t is None:
                t = self._targets[name] = TargetHealth(name, self.settings, self._clock)
            return t
        passing = self._passing
        t = passing.get(name)
        if t is not None:
            passing.move_to_end(name)
            return t
        if len(passing) >= self._max_passing:
            self._evict_one()
        t = passing[name] = TargetHealth(name, self.settings, self._clock)
        return t

    def _peek(self, name: str) -> TargetHealth | None:
        """The target's state if it has any, without creating it or refreshing its place in the table."""
        return self._targets.get(name) or self._passing.get(name)

    def _evict_one(self) -> None:
        """Forget one pass-through target: the least recently used calm one among the oldest few, else the oldest."""
        now = self._clock()
        victim = None
        for i, (name, t) in enumerate(self._passing.items()):
            if i >= EVICT_SCAN:
                break
            if t.calm(now):
                victim = name
                break
        if victim is None:
            victim = next(iter(self._passing))
        t = self._passing.pop(victim)
        for route in t.demoted_in:
            self.demoted.pop((route, victim), None)
            self.demoted_source.pop((route, victim), None)
        for kind in t.transition_kinds:
            self.transitions.pop((victim, kind), None)
        self.evicted += 1

    def targets(self) -> dict[str, TargetHealth]:
        """Every target with state: the configured ones, then the pass-through ones (a copy)."""
        return {**self._targets, **self._passing}

    def pass_through_count(self) -> int:
        return len(self._passing)

    def _count(self, t: TargetHealth, kind: str, why: str, route: str | None = None) -> None:
        self.transitions[(t.name, kind)] += 1
        t.transition_kinds[kind] = None
        was, _, to = kind.partition("->")
        t.history.append({"at": round(self._wall(), 3), "from": was, "to": to, "why": why, "route": route})

    # --- states -------------------------------------------------------------------------------

    def state(self, name: str) -> str:
        """'ok', 'cooling' (rate limited), 'open', 'half_open' (a probe may go), or 'probing' (one is out)."""
        t = self._peek(name)
        now = self._clock()
        if t is None:
            return "open" if self.shared_open and self.shared_open.get(name, 0.0) > now else "ok"
        if t.circuit == "open":
            if now - t.opened_at < self.settings.circuit_cooldown_s:
                return "open"
            self._move(t, "half_open", f"cool-down of {self.settings.circuit_cooldown_s:g} s over: one probe may go")
        if t.circuit == "half_open":
            return "probing" if t.probe_in_flight else "half_open"
        if t.cooldown_until > now:
            return "cooling"
        if self.shared_open and self.shared_open.get(name, 0.0) > now:
            return "open"  # another gateway's circuit (replica or worker): avoided here too until its cool-down ends
        return "ok"

    def admit(self, name: str) -> bool:
        """May an attempt start on this target now? Takes the half-open probe slot when it is free."""
        st = self.state(name)
        if st in ("open", "probing"):
            return False
        if st == "half_open":
            self.target(name).probe_in_flight = True
        return True

    def is_demoted(self, route: str, name: str, sla_p99_ms: float | None, sla_ttft_p99_ms: float | None) -> bool:
        """Over its route's SLA or over the error-rate threshold, with enough requests in the window to say."""
        t = self.target(name)
        snap = t.snapshot()
        reason = self._monitor_reason(route, name) if self.monitor_alerts else None
        source = "monitor"
        if reason is None and self.shared_demoted:
            reason, source = self.shared_demoted.get((route, name)), "shared"
        if reason is None and snap.requests >= self.settings.min_requests:
            source = "local"
            if snap.error_rate > self.settings.error_rate:
                reason = f"error rate {snap.error_rate:.0%} over {self.settings.error_rate:.0%}"
            elif sla_p99_ms is not None and snap.p99_ms is not None and snap.p99_ms > sla_p99_ms:
                reason = f"p99 {snap.p99_ms:.0f} ms over the SLA of {sla_p99_ms:.0f} ms"
            elif sla_ttft_p99_ms is not None and snap.ttft_p99_ms is not None and snap.ttft_p99_ms > sla_ttft_p99_ms:
                reason = f"TTFT p99 {snap.ttft_p99_ms:.0f} ms over the SLA of {sla_ttft_p99_ms:.0f} ms"
        key = (route, name)
        was = key in self.demoted
        if reason:
            self.demoted_source[key] = source
        if reason and not was:
            self.demoted[key] = reason
            t.demoted_in.add(route)
            self._count(t, "ok->demoted", f"{reason} ({source})", route)
            self._log.warning("target_demoted", route=route, target=name, reason=reason)
        elif not reason and was:
            del self.demoted[key]
            self.demoted_source.pop(key, None)
            t.demoted_in.discard(route)
            self._count(t, "demoted->ok", "back within its SLA and error-rate threshold", route)
            self._log.info("target_promoted", route=route, target=name)
        return reason is not None

    def _monitor_reason(self, route: str, name: str) -> str | None:
        a = self.monitor_alerts
        provider = "provider:" + name.split("/", 1)[0]
        return a.get((route, name)) or a.get(("*", name)) or a.get((route, provider)) or a.get(("*", provider))

    # --- observations (after each attempt) ----------------------------------------------------

    def observe(
        self,
        name: str,
        duration_ms: float,
        ttft_ms: float | None,
        error_class: str | None,
        out_tokens: int = 0,
        retry_after: float | None = None,
        quota: bool = False,
    ) -> None:
        t = self.target(name)
        t.observe(duration_ms, ttft_ms, error_class, out_tokens)
        if error_class == "rate_limit":
            wait = self.settings.quota_cooldown_s if quota else (retry_after or self.settings.rate_limit_cooldown_s)
            t.cooldown_until = max(t.cooldown_until, self._clock() + wait)
            t.cooldown_reason = "quota exhausted" if quota else "rate limited"
            self._count(t, "ok->cooling", f"{t.cooldown_reason}: cooling for {wait:g} s")
            self._log.warning("target_cooling", target=name, seconds=round(wait, 1), reason=t.cooldown_reason)
        if error_class in HEALTH_FAILURES:
            t.consecutive_failures += 1
            if t.circuit == "half_open" or (
                t.circuit == "closed" and t.consecutive_failures >= self.settings.circuit_failures
            ):
                t.opened_at = self._clock()
                why = (
                    f"the probe failed ({error_class})"
                    if t.circuit == "half_open"
                    else f"{t.consecutive_failures} consecutive failures (last: {error_class})"
                )
                self._move(t, "open", why)
        elif error_class is None:
            t.consecutive_failures = 0
            if t.circuit == "half_open":
                self._move(t, "closed", "the probe succeeded")
        t.probe_in_flight = False  # the attempt (a probe or not) is over

    def release(self, name: str) -> None:
        """An attempt ended without a verdict on the target (the client left): free the probe slot."""
        t = self._peek(name)
        if t is not None:
            t.probe_in_flight = False

    def _move(self, t: TargetHealth, to: str, why: str) -> None:
        if t.circuit == to:
            return
        self._count(t, f"{t.circuit}->{to}", why)
        self._log.warning("circuit_" + to, target=t.name, consecutive_failures=t.consecutive_failures)
        t.circuit = to
        if to != "half_open":
            t.probe_in_flight = False

    # --- the admin view -----------------------------------------------------------------------

    def shared_status(self) -> dict[str, Any]:
        """What this gateway adopted from the others (`routing.replicas`): the circuits they opened, with the
        seconds left of their cool-down, and their demotions."""
        now = self._clock()
        return {
            "open": {n: round(until - now, 1) for n, until in sorted(self.shared_open.items()) if until > now},
            "demoted": [{"route": r, "target": t, "why": why} for (r, t), why in sorted(self.shared_demoted.items())],
        }

    def status(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, t in sorted(self.targets().items()):
            snap = t.snapshot(max_age_s=0)
            out[name] = {
                "state": self.state(name),
                "circuit": t.circuit,
                "consecutive_failures": t.consecutive_failures,
                "cooling_for_s": round(max(0.0, t.cooldown_until - self._clock()), 1),
                "cooldown_reason": t.cooldown_reason if t.cooldown_until > self._clock() else None,
                "window": {
                    "window_s": self.settings.window_s,
                    "requests": snap.requests,
                    "ok": snap.ok,
                    "errors": snap.errors,
                    "provider_failures": snap.provider_failures,
                    "client_refusals": snap.client_refusals,
                    # provider failures / requests: agrees with `errors` as `relaycast routes status` shows them
                    "error_rate": round(snap.provider_failures / snap.requests, 4) if snap.requests else None,
                    "refusal_rate": round(snap.client_refusals / snap.requests, 4) if snap.requests else None,
                    "health_error_rate": round(snap.error_rate, 4),  # what demotion compares with routing.error_rate
                    "p50_ms": snap.p50_ms,
                    "p99_ms": snap.p99_ms,
                    "ttft_p99_ms": snap.ttft_p99_ms,
                    "tokens_per_s": snap.tokens_per_s,
                },
                "demoted_in": {r: self.demoted[(r, name)] for r in sorted(t.demoted_in) if (r, name) in self.demoted},
                "transitions": {k: self.transitions[(name, k)] for k in t.transition_kinds},
                "history": list(t.history),  # the last HISTORY transitions, oldest first
            }
        return out
