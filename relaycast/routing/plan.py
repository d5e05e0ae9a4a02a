"""Turn a requested model (and OpenRouter's `models` fallbacks) into an ordered plan of targets. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from relaycast.config import Config
from relaycast.errors import ModelNotFound


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str

    @property
    def name(self) -> str:
        return f"{self.provider}/{self.model}"


class Planner:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._aliases = {
            name: tuple(Target(*t.split("/", 1)) for t in alias.targets) for name, alias in config.models.items()
        }
        # A bare model name listed by exactly one provider resolves to it (`gpt-4o-mini` -> `openai/gpt-4o-mini`).
        owners: dict[str, list[str]] = {}
        for p in config.providers.values():
            for m in p.models:
                owners.setdefault(m, []).append(p.name)
        self._bare = {m: Target(ps[0], m) for m, ps in owners.items() if len(ps) == 1}

    def resolve(self, model: str) -> tuple[Target, ...]:
        hit = self._aliases.get(model)
        if hit is not None:
            return hit
        provider, sep, name = model.partition("/")
        if sep and name and provider in self._config.providers:
            return (Target(provider, name),)
        bare = self._bare.get(model)
        if bare is not None:
            return (bare,)
        raise ModelNotFound(self._unknown(model), param="model")

    def plan(self, model: str, fallbacks: tuple[str, ...] = ()) -> tuple[Target, ...]:
        first = self.resolve(model)
        if not fallbacks:
            return first
        out = list(first)
        for fb in fallbacks:
            for t in self.resolve(fb):
                if t not in out:
                    out.append(t)
        return tuple(out)

    def _unknown(self, model: str) -> str:
        providers = ", ".join(self._config.providers)
        msg = f"The model '{model}' does not exist. Use 'provider/model' with a configured provider ({providers})"
        if self._aliases:
            msg += f" or an alias ({', '.join(self._aliases)})"
        return msg + "."
