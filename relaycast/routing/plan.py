"""Turn a requested model (and OpenRouter's `models` fallbacks and `provider` preferences) into an ordered plan
of targets, using the configured routes and providers, the health board, the pricer and the routing policy."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from relaycast.config_reader import closest
from relaycast.costs.pricer import Pricer
from relaycast.errors import ModelNotFound, NoRoute
from relaycast.routing.health import HealthBoard
from relaycast.routing.policy import Candidate, order, uses_price
from relaycast.routing.settings import Route
from relaycast.routing.target import Target
from relaycast.schema import NO_PREFS, ProviderPrefs

MAX_SUGGESTIONS = 300  # names compared for "did you mean" (about 1 ms at most)
MAX_GUESSED_NAME = 64  # a longer name gets no suggestion (difflib is quadratic in its length)
MAX_CACHED = 4096  # routes of names not configured (`provider/model`), and targets parsed, kept for the next request

USABLE = ("ok", "half_open", "cooling")  # the states in which `order` keeps a route's only target

if TYPE_CHECKING:
    from relaycast.providers.settings import ProviderConfig

__all__ = ["Plan", "Planner", "Target"]


@dataclass(frozen=True, slots=True)
class Plan:
    route: Route  # the requested model's route (an implicit one-target route for `provider/model`)
    targets: tuple[Target, ...]  # in the order to try them


class Planner:
    """Plans over the configured `routes` (aliases) and `providers`; targets are priced by `pricer`."""

    def __init__(
        self,
        routes: Mapping[str, Route],
        providers: Mapping[str, ProviderConfig],
        board: HealthBoard,
        pricer: Pricer,
        rng: random.Random | None = None,
    ) -> None:
        self._routes = routes
        self._providers = tuple(providers)
        self._board = board
        self._pricer = pricer
        self._rng = rng or random.Random()
        self._kinds = {p.name: p.kind for p in providers.values()}
        # A bare model name listed by exactly one provider resolves to it (`gpt-4o-mini` -> `openai/gpt-4o-mini`).
        owners: dict[str, list[str]] = {}
        for p in providers.values():
            for m in p.models:
                owners.setdefault(m, []).append(p.name)
        self._bare = {m: ps[0] for m, ps in owners.items() if len(ps) == 1}
        # Parsed targets and the implicit routes of names a request gave: a client chooses those names, so both
        # tables stop growing at MAX_CACHED (later names are parsed for each request); configured ones come first.
        self._parsed = {text: Target.parse(text) for r in routes.values() for text in r.targets}
        self._direct: dict[str, Route] = {}
        # The names a request may give, for "did you mean" when it gives none of them (bounded: difflib's work grows
        # with the square of a name's length, and a client chooses the name).
        known = (*routes, *(f"{p.name}/{m}" for p in providers.values() for m in p.models), *self._bare)
        self._known = tuple(dict.fromkeys(known))[:MAX_SUGGESTIONS]

    def route(self, model: str) -> Route:
        hit = self._routes.get(model) or self._direct.get(model)
        if hit is not None:
            return hit
        provider, sep, name = model.partition("/")
        if sep and name and provider in self._kinds:
            route = Route(name=model, targets=(model,))
        elif (owner := self._bare.get(model)) is not None:
            route = Route(name=model, targets=(f"{owner}/{model}",))
        else:
            raise ModelNotFound(self._unknown(model), param="model")
        if len(self._direct) < MAX_CACHED:
            self._direct[model] = route
        return route

    def plan(self, model: str, fallbacks: tuple[str, ...] = (), prefs: ProviderPrefs = NO_PREFS) -> Plan:
        route = self.route(model)
        out = self.ordered(route, prefs)
        if fallbacks:
            seen = set(out)
            for fb in fallbacks:
                for t in self.ordered(self.route(fb), prefs):
                    if t not in seen:
                        seen.add(t)
                        out.append(t)
        if not prefs.allow_fallbacks:
            out = out[:1]
        if not out:
            raise NoRoute(self._no_route(route, prefs))
        return Plan(route=route, targets=tuple(out))

    def ordered(self, route: Route, prefs: ProviderPrefs = NO_PREFS) -> list[Target]:
        if len(route.targets) == 1 and (prefs is NO_PREFS or not _filters(prefs)):
            return self._only(route)
        board = self._board
        cands = []
        priced = uses_price(route.strategy, prefs)
        for i, text in enumerate(route.targets):
            t = self._target(text)
            snap = board.target(t.name).snapshot()
            cands.append(
                Candidate(
                    target=t,
                    kind=self._kinds.get(t.provider, ""),
                    weight=route.weights[i] if route.weights else 1.0,
                    price=self._pricer.price(t.provider, t.model) if priced else None,
                    state=board.state(t.name),
                    demoted=board.is_demoted(route.name, t.name, route.sla_p99_ms, route.sla_ttft_p99_ms),
                    p50_ms=snap.p50_ms,
                    p99_ms=snap.p99_ms,
                    tokens_per_s=snap.tokens_per_s,
                )
            )
        return order(cands, route.strategy, prefs, self._rng, board.settings.probe_share)

    def _only(self, route: Route) -> list[Target]:
        """A route of one target, with no preference that could leave it out: what `order` makes of it, without
        ranking one candidate. Its health decides alone: usable unless its circuit is open (or probing)."""
        t = self._target(route.targets[0])
        name = t.name
        board = self._board
        usable = board.state(name) in USABLE
        board.is_demoted(route.name, name, route.sla_p99_ms, route.sla_ttft_p99_ms)  # its bookkeeping, as always
        return [t] if usable else []

    def _target(self, text: str) -> Target:
        t = self._parsed.get(text)
        if t is None:
            t = Target.parse(text)
            if len(self._parsed) < MAX_CACHED:
                self._parsed[text] = t
        return t

    def _unknown(self, model: str) -> str:
        providers = ", ".join(self._providers)
        guess = None
        if len(model) <= MAX_GUESSED_NAME:
            guess = closest(model, self._known)
            provider, sep, rest = model.partition("/")
            if guess is None and sep and rest:  # `opnai/gpt-4o`: a provider misspelt
                near = closest(provider, self._providers)
                guess = f"{near}/{rest}" if near else None
        msg = f"The model '{model}' does not exist.{f' Did you mean {guess!r}?' if guess else ''}"
        msg += f" Use 'provider/model' with a configured provider ({providers})"
        if self._routes:
            msg += f" or an alias ({', '.join(self._routes)})"
        return msg + "."

    def _no_route(self, route: Route, prefs: ProviderPrefs) -> str:
        states = ", ".join(f"{t}: {self._board.state(t)}" for t in route.targets)
        if _filters(prefs):
            return f"No target of '{route.name}' matches the request's provider preferences ({states})."
        return f"No target of '{route.name}' is available right now ({states})."


def _filters(prefs: ProviderPrefs) -> bool:
    """Whether the preferences may leave targets out (`only`, `ignore`, a price cap), not just reorder them."""
    return (
        bool(prefs.only or prefs.ignore) or prefs.max_prompt_price is not None or prefs.max_completion_price is not None
    )
