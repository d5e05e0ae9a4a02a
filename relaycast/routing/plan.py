"""Turn a requested model (and OpenRouter's `models` fallbacks and `provider` preferences) into an ordered plan
of targets, using the routes of the config, the health board and the routing policy."""

from __future__ import annotations

import random
from dataclasses import dataclass

from relaycast.config import Config
from relaycast.errors import ModelNotFound, NoRoute
from relaycast.routing.health import HealthBoard
from relaycast.routing.policy import Candidate, order
from relaycast.routing.settings import Route
from relaycast.routing.target import Target
from relaycast.schema import ProviderPrefs

__all__ = ["Plan", "Planner", "Target"]


@dataclass(frozen=True, slots=True)
class Plan:
    route: Route  # the requested model's route (an implicit one-target route for `provider/model`)
    targets: tuple[Target, ...]  # in the order to try them


class Planner:
    def __init__(self, config: Config, board: HealthBoard, rng: random.Random | None = None) -> None:
        self._config = config
        self._board = board
        self._rng = rng or random.Random()
        self._kinds = {p.name: p.kind for p in config.providers.values()}
        # A bare model name listed by exactly one provider resolves to it (`gpt-4o-mini` -> `openai/gpt-4o-mini`).
        owners: dict[str, list[str]] = {}
        for p in config.providers.values():
            for m in p.models:
                owners.setdefault(m, []).append(p.name)
        self._bare = {m: ps[0] for m, ps in owners.items() if len(ps) == 1}
        self._parsed: dict[str, Target] = {}

    def route(self, model: str) -> Route:
        hit = self._config.models.get(model)
        if hit is not None:
            return hit
        provider, sep, name = model.partition("/")
        if sep and name and provider in self._config.providers:
            return Route(name=model, targets=(model,))
        owner = self._bare.get(model)
        if owner is not None:
            return Route(name=model, targets=(f"{owner}/{model}",))
        raise ModelNotFound(self._unknown(model), param="model")

    def plan(self, model: str, fallbacks: tuple[str, ...] = (), prefs: ProviderPrefs = ProviderPrefs()) -> Plan:
        route = self.route(model)
        out = self.ordered(route, prefs)
        for fb in fallbacks:
            for t in self.ordered(self.route(fb), prefs):
                if t not in out:
                    out.append(t)
        if not prefs.allow_fallbacks:
            out = out[:1]
        if not out:
            raise NoRoute(self._no_route(route, prefs))
        return Plan(route=route, targets=tuple(out))

    def ordered(self, route: Route, prefs: ProviderPrefs = ProviderPrefs()) -> list[Target]:
        board = self._board
        cands = []
        parsed = self._parsed
        configured = route.name in self._config.models  # only configured routes are cached: bounded
        for i, text in enumerate(route.targets):
            t = parsed.get(text)
            if t is None:
                t = Target.parse(text)
                if configured:
                    parsed[text] = t
            snap = board.target(t.name).snapshot()
            cands.append(
                Candidate(
                    target=t,
                    kind=self._kinds.get(t.provider, ""),
                    weight=route.weights[i] if route.weights else 1.0,
                    price=route.prices[i] if route.prices else None,
                    state=board.state(t.name),
                    demoted=board.is_demoted(route.name, t.name, route.sla_p99_ms, route.sla_ttft_p99_ms),
                    p50_ms=snap.p50_ms,
                    p99_ms=snap.p99_ms,
                    tokens_per_s=snap.tokens_per_s,
                )
            )
        return order(cands, route.strategy, prefs, self._rng, board.settings.probe_share)

    def _unknown(self, model: str) -> str:
        providers = ", ".join(self._config.providers)
        msg = f"The model '{model}' does not exist. Use 'provider/model' with a configured provider ({providers})"
        if self._config.models:
            msg += f" or an alias ({', '.join(self._config.models)})"
        return msg + "."

    def _no_route(self, route: Route, prefs: ProviderPrefs) -> str:
        states = ", ".join(f"{t}: {self._board.state(t)}" for t in route.targets)
        if prefs.only or prefs.ignore or prefs.max_prompt_price is not None or prefs.max_completion_price is not None:
            return f"No target of '{route.name}' matches the request's provider preferences ({states})."
        return f"No target of '{route.name}' is available right now ({states})."
