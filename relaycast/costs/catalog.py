"""The price catalog: genai-prices' data (Pydantic's `genai-prices`: providers' prices with long-context tiers, cache
reads and writes, service tiers and price history), from the installed package or from the file
`relaycast prices update` fetched (`costs.update`).

Which data is used: the fetched file (`RELAYCAST_PRICES_FILE`, default `$XDG_CACHE_HOME/relaycast/genai-prices.json`)
when it exists, parses and was fetched with the genai-prices version installed; otherwise the data the package
ships. Nothing here touches the network. `ModelPrice` (the one price type) lives in `costs.price`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import types as gp
from genai_prices.data_snapshot import find_provider_by_id

from relaycast.costs.genai import Listing
from relaycast.costs.price import FREE, PER_MILLION, ModelPrice

__all__ = ["FREE", "PER_MILLION", "Catalog", "ModelPrice", "cache_path"]

CACHE_FORMAT = 1


def cache_path(env: Mapping[str, str] | None = None) -> Path:
    """Where `relaycast prices update` stores fetched data and the gateway looks for it."""
    env = os.environ if env is None else env
    if env.get("RELAYCAST_PRICES_FILE"):
        return Path(env["RELAYCAST_PRICES_FILE"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "relaycast" / "genai-prices.json"


def parse_providers(raw: Any) -> list[gp.Provider]:
    """genai-prices' JSON data (a list of providers, its `data.json` format) as its provider objects; ValueError
    when it is not that."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("expected a non-empty list of providers")
    try:
        return gp._providers_from_raw(raw)  # private: the parser UpdatePrices.fetch uses; pinned version
    except Exception as e:  # noqa: BLE001 - pydantic's ValidationError and whatever a bad file raises
        raise ValueError(f"not genai-prices data: {str(e)[:300]}") from None


class Catalog:
    """genai-prices' providers, and where they came from (`origin`, `as_of`)."""

    def __init__(self, providers: Sequence[gp.Provider], origin: str, as_of: str) -> None:
        self.providers = list(providers)
        self.by_id = {p.id: p for p in self.providers}
        self.origin = origin  # "genai-prices 0.2.3 (bundled data)" | "genai-prices data fetched from URL at TIME"
        self.as_of = as_of  # what `/admin/store` shows as `prices_as_of`
        self.notice: str | None = None  # why a prices file was not used, for the gateway to say at start

    @classmethod
    def packaged(cls) -> Catalog:
        """The data the installed genai-prices ships."""
        from genai_prices.data import providers

        version = genai_prices.__version__
        return cls(providers, f"genai-prices {version} (bundled data)", f"genai-prices {version}")

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """The fetched data at `path` (default `cache_path()`) if usable, else the bundled data."""
        where = path or cache_path()
        cached, why = cls.cached_or_why(where)
        if cached is not None:
            return cached
        out = cls.packaged()
        if why is not None:
            out.notice = f"prices file {where} not used ({why}): pricing with {out.origin}"
        return out

    @classmethod
    def cached(cls, path: Path) -> Catalog | None:
        """The data `relaycast prices update` stored at `path`; None when there is none, it does not parse, or an
        other genai-prices version fetched it (the installed package's data may be newer, and its format differ)."""
        return cls.cached_or_why(path)[0]

    @classmethod
    def cached_or_why(cls, path: Path) -> tuple[Catalog | None, str | None]:
        """`cached`, and why a file that is there was not used (None when there is no file)."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as e:
            return None, f"unreadable: {type(e).__name__}"
        try:
            doc = json.loads(raw)
        except Exception:  # noqa: BLE001 - ValueError, RecursionError on absurd nesting: never stops a start
            return None, "not JSON"
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
            return None, "not a file relaycast prices update wrote"
        if doc.get("genai_prices_version") != genai_prices.__version__:
            return None, (
                f"fetched with genai-prices {str(doc.get('genai_prices_version'))[:40]}, installed "
                f"{genai_prices.__version__}: run relaycast prices update again"
            )
        try:
            providers = parse_providers(doc.get("data"))
        except Exception as e:  # noqa: BLE001 - a bad file is reported, never fatal
            return None, f"not genai-prices data: {str(e)[:200]}"
        fetched = str(doc.get("fetched_at", ""))
        return cls(
            providers,
            f"genai-prices data fetched from {doc.get('url', '?')} at {fetched} ({path})",
            f"genai-prices data fetched {fetched}",
        ), None

    @staticmethod
    def cache_document(raw: Any, url: str, now: datetime | None = None) -> dict[str, Any]:
        """What `relaycast prices update` writes: the fetched data as it came, with where and when from."""
        return {
            "format": CACHE_FORMAT,
            "url": url,
            "fetched_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "genai_prices_version": genai_prices.__version__,
            "data": raw,
        }

    def find(self, provider_id: str, model: str) -> Listing | None:
        """`model` as genai-prices finds it for provider `provider_id` (its id, or a name genai-prices matches to one:
        `gemini`, `xai`, `mistralai`), with its model match rules, dated-name forms and fallback providers; or None."""
        provider = self.by_id.get(provider_id) or find_provider_by_id(self.providers, provider_id)
        if provider is None or not model:
            return None
        m = provider.find_model(model, all_providers=self.providers)
        if m is None:
            return None
        return Listing(provider.id, m, any(m is x for x in provider.models), self.origin)

    def infer(self, model: str) -> Listing | None:
        """`model` with no known provider: as genai-prices infers one, the first provider whose model pattern matches
        the name (`gpt-` is OpenAI's, `claude` Anthropic's, `gemini` Google's, ...)."""
        ref = model.lower()
        for p in self.providers:
            if p.model_match is not None and p.model_match.is_match(ref):
                return self.find(p.id, model)
        return None

    def models(self) -> dict[str, gp.ModelInfo]:
        """Every listed model by "provider/model id"."""
        return {f"{p.id}/{m.id}": m for p in self.providers for m in p.models}
