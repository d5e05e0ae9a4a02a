"""`relaycast prices show MODEL` (what a model costs and where the price comes from) and `relaycast prices update`
(fetch genai-prices' current data for the gateway to load at its next start, and say what changed)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # genai-prices takes a few hundred ms to import: only `relaycast prices` pays for it
    from relaycast.costs.genai import Listing
    from relaycast.costs.price import ModelPrice
    from relaycast.costs.pricer import Pricer

LIST_AT_MOST = 40  # names printed per kind of change


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="prices_command", metavar="ACTION", required=True)
    s = sub.add_parser(
        "show",
        help="what a model costs (per unit, tiers, service tiers, dates) and where the price comes from",
        description="What a model costs and where its price comes from: the config's `prices:`, a route's `price:`, "
        "or the catalog (genai-prices, bundled or fetched by `relaycast prices update`).",
    )
    s.add_argument("model", help="the model name, as requests name it (e.g. gpt-4o-mini, anthropic/claude-3.5-haiku)")
    s.add_argument(
        "--provider",
        "-p",
        help="a provider of the config (with --config), else a provider kind or genai-prices provider id "
        "(openai, anthropic, google, openrouter, ...); default: every configured provider, or as genai-prices infers",
    )
    s.add_argument("--config", "-c", help="path to relaycast.yaml: its providers, `prices:` and routes' `price:`s")
    s.add_argument("--date", help="price in force at this UTC date or time (YYYY-MM-DD[THH:MM]; default: now)")
    s.add_argument("--tier", help="the service tier an upstream reports (priority, flex, ...; default: standard)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument(
        "--prices-file", type=Path, help="fetched data to use (default: $RELAYCAST_PRICES_FILE or the cache)"
    )
    u = sub.add_parser(
        "update",
        help="fetch genai-prices' current data for the gateway to load at start, and say what changed",
        description="Fetch genai-prices' current data, check it, and store it where the gateway loads it when it "
        "starts (a running gateway keeps the prices it started with). Prints the models added, changed and removed.",
    )
    u.add_argument("--url", help="the data's URL (default: genai-prices' own)")
    u.add_argument("--prices-file", type=Path, help="where to store it (default: $RELAYCAST_PRICES_FILE or the cache)")
    u.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the data (default 30)")


def run(args: argparse.Namespace) -> int:
    if args.prices_command == "update":
        return _update(args)
    return _show(args)


def _update(args: argparse.Namespace) -> int:
    from relaycast.costs.catalog import Catalog, cache_path
    from relaycast.costs.update import DEFAULT_UPDATE_URL, diff, fetch, store

    url: str = args.url or DEFAULT_UPDATE_URL
    path: Path = args.prices_file or cache_path()
    old = Catalog.load(path)
    try:
        raw, new = fetch(url, args.timeout)
    except (OSError, ValueError) as e:
        print(f"relaycast: could not update prices from {url}: {e}", file=sys.stderr)
        return 1
    changes = diff(old, new)
    try:
        store(raw, url, path)
    except OSError as e:
        print(f"relaycast: could not write {path}: {e}", file=sys.stderr)
        return 1
    n = sum(len(p.models) for p in new.providers)
    print(f"prices updated from {url}: {len(new.providers)} providers, {n} models, stored in {path}")
    print(f"compared with {old.origin}:")
    print(f"  {len(changes.added)} added, {len(changes.changed)} changed, {len(changes.removed)} removed")
    for label, names in (("added", changes.added), ("changed", changes.changed), ("removed", changes.removed)):
        for name in names[:LIST_AT_MOST]:
            print(f"  {label}: {name}")
        if len(names) > LIST_AT_MOST:
            print(f"  ... and {len(names) - LIST_AT_MOST} more {label}")
    print("a running gateway keeps its prices until it restarts")
    return 0


def _when(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    at = datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _show(args: argparse.Namespace) -> int:
    import orjson

    from relaycast.costs.catalog import Catalog
    from relaycast.costs.pricer import Pricer, build_pricer

    try:
        when = _when(args.date)
    except ValueError:
        print(f"relaycast: --date {args.date!r} is not YYYY-MM-DD or YYYY-MM-DDTHH:MM", file=sys.stderr)
        return 2
    catalog = Catalog.load(args.prices_file)
    if args.config:
        from relaycast import config as config_mod

        cfg = config_mod.load_or_say(args.config)
        if cfg is None:
            return 2
        if args.provider and args.provider not in cfg.providers:
            print(f"relaycast: no provider {args.provider!r} in {args.config}", file=sys.stderr)
            return 2
        pricer = build_pricer(cfg.providers, cfg.models, cfg.prices, catalog)
        providers = [args.provider] if args.provider else list(cfg.providers)
    else:
        pricer = Pricer(catalog, {args.provider: args.provider} if args.provider else {})
        providers = [args.provider or ""]
    when_ns = int(when.timestamp() * 10**6) * 1000
    shown = [describe(pricer, p, args.model, when_ns, args.tier) for p in providers]
    if args.json:
        sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for d in shown:
            print(render(d))
    return 0 if any(d["source"] != "unpriced" for d in shown) else 1


def describe(pricer: Pricer, provider: str, model: str, when_ns: int, tier: str | None) -> dict[str, Any]:
    """What `provider` charges for `model` at `when_ns` and service tier `tier`, and where the price comes from."""
    from relaycast.costs.genai import Listing, at_ns, unsupported_units
    from relaycast.costs.price import FREE

    entry = pricer.entry(provider, model)
    out: dict[str, Any] = {"provider": provider or None, "model": model, "at": at_ns(when_ns).isoformat()}
    if entry is None:
        out["source"] = "unpriced"
        out["note"] = "no price in the config, on a route or in the catalog: its cost is recorded as unknown"
        return out
    price, why = pricer.quote(provider, model, when_ns, tier)
    out["tier"] = tier or "standard"
    if isinstance(entry, Listing):
        out["source"] = "catalog"
        out["catalog_model"] = entry.key
        out["catalog"] = entry.origin
        out.update(_history(entry))
        skipped = unsupported_units(entry.model.get_prices(at_ns(when_ns)))
        if skipped:
            out["not_counted"] = skipped
    else:
        out["source"] = "free (:free)" if entry is FREE else entry.source
    if why:
        out["estimated"] = why
    if price is None:
        out["note"] = "listed, but not per token: relaycast cannot count what it charges for"
        return out
    out["usd_per_million_tokens"] = _rates(price)
    if price.request:
        out["usd_per_request"] = _usd(price, "request", per_million=False)
    if price.web_search is not None:
        out["usd_per_web_search"] = _usd(price, "web_search", per_million=False)
    if price.tiers:
        out["above_prompt_tokens"] = {str(above): _rates(t) for above, t in price.tiers}
    return out


TOKEN_LABELS = (
    ("input", "input"),
    ("cached_input", "cached input"),
    ("cache_write", "cache write"),
    ("cache_write_1h", "cache write 1h"),
    ("input_audio", "audio input"),
    ("output", "output"),
    ("reasoning", "reasoning"),
    ("output_audio", "audio output"),
)


def _usd(p: ModelPrice, field: str, *, per_million: bool = True) -> str:
    from relaycast.costs.money import PICO_PER_USD

    exact = p.fine or p
    rate = getattr(exact, field)
    d = Decimal(rate) * (10**6 if per_million else 1) / exact.scale / PICO_PER_USD
    return f"{d.normalize():f}"


def _rates(p: ModelPrice) -> dict[str, str]:
    return {label: _usd(p, f) for f, label in TOKEN_LABELS if getattr(p, f) is not None}


def _history(entry: Listing) -> dict[str, Any]:
    m = entry.model
    out: dict[str, Any] = {}
    if isinstance(m.prices, list):
        # genai-prices: the last conditional price in force wins; the first applies when none is.
        out["price_history"] = [f"{_constraint(c.constraint, 'otherwise')}: {c.prices}" for c in m.prices]
    if m.price_variants:
        variants = []
        for pv in m.price_variants:
            when = ", ".join(f"{k}={v}" for k, v in pv.when.items())
            variants.append(
                f"{when} ({_constraint(pv.constraint, 'always')}): {str(pv.prices) or 'the standard price'}"
            )
        out["variants"] = variants if entry.home else [*variants, "(not applied: listed under a fallback provider)"]
    return out


def _constraint(c: Any, unconstrained: str) -> str:
    if c is None:
        return unconstrained
    if hasattr(c, "start_date"):
        return f"from {c.start_date.isoformat()}"
    return f"daily {c.start_time.strftime('%H:%M')}-{c.end_time.strftime('%H:%M')} UTC"


def render(d: dict[str, Any]) -> str:
    lines = [f"{d['model']}" + (f" on provider {d['provider']}" if d.get("provider") else "")]
    lines.append(f"  source: {d['source']}" + (f" ({d['catalog_model']} in {d['catalog']})" if "catalog" in d else ""))
    if d.get("note"):
        lines.append(f"  {d['note']}")
    if "usd_per_million_tokens" in d:
        lines.append(f"  at {d['at']}, {d['tier']} tier, USD per million tokens:")
        lines.append("    " + ", ".join(f"{k} {v}" for k, v in d["usd_per_million_tokens"].items()))
        if "usd_per_request" in d:
            lines.append(f"    per request {d['usd_per_request']}")
        if "usd_per_web_search" in d:
            lines.append(f"    per web search {d['usd_per_web_search']}")
        for above, rates in d.get("above_prompt_tokens", {}).items():
            lines.append(f"  prompts above {above} tokens, the whole request:")
            lines.append("    " + ", ".join(f"{k} {v}" for k, v in rates.items()))
    if d.get("estimated"):
        lines.append(f"  estimated: {d['estimated']}")
    for title, key in (("price history", "price_history"), ("price variants", "variants")):
        if d.get(key):
            lines.append(f"  {title}:")
            lines.extend(f"    {x}" for x in d[key])
    if d.get("not_counted"):
        lines.append(
            f"  listed but never reported by relaycast's upstreams (count as 0): {', '.join(d['not_counted'])}"
        )
    return "\n".join(lines)
