"""The stored catalog file: genai-prices' whole bundled data written in its JSON format loads back equal; a file
another genai-prices version fetched, or a damaged one, is not used; `diff` finds exactly what changed."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
import pytest
from genai_prices import data
from genai_prices import types as gp

from relaycast.costs.catalog import Catalog, cache_path
from relaycast.costs.update import Changes, diff, store


def raw(o: Any) -> Any:
    """genai-prices' objects as its data.json has them."""
    if isinstance(o, gp.ModelPrice):
        return {k: raw(v) for k, v in o.__dict__.items() if v is not None and not k.startswith("_")}
    if isinstance(o, gp.ClauseOr):
        return {"or": [raw(x) for x in o.or_]}
    if isinstance(o, gp.ClauseAnd):
        return {"and": [raw(x) for x in o.and_]}
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return {
            f.name: raw(getattr(o, f.name))
            for f in dataclasses.fields(o)
            if f.init and not f.name.startswith("_") and getattr(o, f.name) is not None
        }
    if isinstance(o, list):
        return [raw(x) for x in o]
    if isinstance(o, dict):
        return {k: raw(v) for k, v in o.items()}
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    return o


@pytest.fixture(scope="module")
def bundled_raw() -> list[Any]:
    return raw(data.providers)


def test_the_whole_bundled_data_round_trips_through_the_stored_file(bundled_raw: list[Any], tmp_path: Path):
    path = tmp_path / "p.json"
    store(bundled_raw, "http://127.0.0.1:9/data.json", path)
    cached = Catalog.cached(path)
    assert cached is not None and cached.origin.startswith("genai-prices data fetched from http://127.0.0.1:9/")
    assert diff(Catalog.packaged(), cached) == Changes((), (), ())
    assert sum(len(p.models) for p in cached.providers) == sum(len(p.models) for p in data.providers)


def test_diff_finds_one_added_one_changed_one_removed(bundled_raw: list[Any]):
    changed = copy.deepcopy(bundled_raw)
    openai = next(p for p in changed if p["id"] == "openai")
    mini = next(m for m in openai["models"] if m["id"] == "gpt-4o-mini")
    mini["price_variants"][1]["prices"]["input_mtok"] = "0.26"  # the priority tier's input price
    openai["models"] = [m for m in openai["models"] if m["id"] != "gpt-4o"]
    openai["models"].append({"id": "gpt-9", "match": {"equals": "gpt-9"}, "prices": {"input_mtok": "9"}})
    new = Catalog(genai_prices.types._providers_from_raw(changed), "test", "test")
    d = diff(Catalog.packaged(), new)
    assert (d.added, d.changed, d.removed) == (("openai/gpt-9",), ("openai/gpt-4o-mini",), ("openai/gpt-4o",))


def test_a_file_from_another_version_or_damaged_is_not_used(bundled_raw: list[Any], tmp_path: Path):
    path = tmp_path / "p.json"
    store(bundled_raw[:2], "http://x/", path)
    assert Catalog.cached(path) is not None
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "genai_prices_version": "0.0.1"}))
    assert Catalog.cached(path) is None and Catalog.load(path).origin.endswith("(bundled data)")
    notice = Catalog.load(path).notice  # said at start (`prices_file_not_used`), never silent
    assert notice is not None and "genai-prices 0.0.1" in notice and "relaycast prices update" in notice
    for bad, why in (
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[" * 200_000, "not JSON"),  # nesting deep enough to raise RecursionError: never stops a start
        (json.dumps({**doc, "data": [{"id": 1}]}), "not genai-prices data"),
        (json.dumps([1, 2]), "not a file relaycast prices update wrote"),
    ):
        path.write_text(bad)
        assert Catalog.cached(path) is None
        loaded = Catalog.load(path)
        assert loaded.origin.endswith("(bundled data)") and loaded.notice is not None and why in loaded.notice
    assert Catalog.cached(tmp_path / "missing.json") is None
    assert Catalog.load(tmp_path / "missing.json").notice is None, "no file: nothing to say"


def test_where_the_file_is():
    assert cache_path({"RELAYCAST_PRICES_FILE": "/x/p.json"}) == Path("/x/p.json")
    assert cache_path({"XDG_CACHE_HOME": "/c"}) == Path("/c/relaycast/genai-prices.json")
    assert cache_path({}).parts[-3:] == (".cache", "relaycast", "genai-prices.json")
