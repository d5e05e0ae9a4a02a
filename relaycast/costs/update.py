"""`relaycast prices update`: fetch genai-prices' data, check it parses, store it where the gateway loads it at start
(`catalog.cache_path`), and say what changed against the data in use before.

The gateway itself never fetches: it reads the stored file when it starts (`Catalog.load`).
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genai_prices.update_prices import DEFAULT_UPDATE_URL

from relaycast.costs.catalog import Catalog, parse_providers

MAX_BYTES = 64 * 1024 * 1024  # genai-prices' data is a few MB
TIMEOUT_S = 30.0

__all__ = ["DEFAULT_UPDATE_URL", "Changes", "diff", "fetch", "store"]


@dataclass(frozen=True, slots=True)
class Changes:
    """Models ("provider/model id") added, whose prices changed, and removed."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def fetch(url: str, timeout: float = TIMEOUT_S) -> tuple[Any, Catalog]:
    """The data at `url` as fetched (for the file) and as a catalog; ValueError or OSError when it cannot be had."""
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    req = urllib.request.Request(url, headers={"accept": "application/json", "user-agent": "relaycast-prices"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # http(s) only, checked above
        body = resp.read(MAX_BYTES + 1)
    if len(body) > MAX_BYTES:
        raise ValueError(f"the data at {url} is larger than {MAX_BYTES} bytes")
    try:
        raw = json.loads(body)
    except ValueError:
        raise ValueError(f"the data at {url} is not JSON") from None
    return raw, Catalog(parse_providers(raw), f"genai-prices data from {url}", "fetched")


def diff(old: Catalog, new: Catalog) -> Changes:
    """What `new` lists that `old` does not, what both list at different prices (any date, tier or variant), and what
    only `old` lists."""
    before, after = old.models(), new.models()
    changed = [
        k
        for k in before.keys() & after.keys()
        if (before[k].prices, before[k].price_variants) != (after[k].prices, after[k].price_variants)
    ]
    return Changes(
        added=tuple(sorted(after.keys() - before.keys())),
        changed=tuple(sorted(changed)),
        removed=tuple(sorted(before.keys() - after.keys())),
    )


def store(raw: Any, url: str, path: Path) -> None:
    """Write the fetched data to `path` whole or not at all (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps(Catalog.cache_document(raw, url), separators=(",", ":")).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".genai-prices-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
