"""Routing by price end to end: the openai SDK against `relaycast serve` and the fake upstream on loopback.

The router prices targets as the cost of a request is priced: the packaged catalog, the config's `prices:` and a
route target's `price:`. The fake upstream's models are listed in the catalog under their bare names (through the
`fakeai` provider, an OpenAI-compatible server with no vendor list of its own):

    fakeai/gpt-4o-mini                $0.15 in / $0.60 out per million tokens
    claude/claude-3-5-haiku-latest    $0.80 / $4.00
    fakeai/gpt-4o                     $2.50 / $10.00
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config

MSGS: Any = [{"role": "user", "content": "hello"}]

# No `price:` on these routes: every price comes from the catalog. `fakeai/gpt-4o@tokens=8` is a target of its own
# (a route's price applies to its target text wherever that target is used), priced by its route at $0.01 / $0.01.
ROUTES = """
  - name: priority-mix
    targets: [fakeai/gpt-4o, claude/claude-3-5-haiku-latest, fakeai/gpt-4o-mini]
  - name: cheapest
    strategy: lowest_cost
    targets: [fakeai/gpt-4o, claude/claude-3-5-haiku-latest, fakeai/gpt-4o-mini]
  - name: cheapest-failing
    strategy: lowest_cost
    targets: [fakeai/gpt-4o, claude/claude-3-5-haiku-latest, fakeai/gpt-4o-mini@error=503]
  - name: route-priced
    strategy: lowest_cost
    targets: [fakeai/gpt-4o-mini, {target: fakeai/gpt-4o@tokens=8, price: {input: 0.01, output: 0.01}}]
"""


@pytest.fixture(scope="module")
def client(fake: Fake) -> Iterator[openai.OpenAI]:
    gw = GatewayProcess(standard_config(fake.url, ROUTES), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        yield openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=20)
    finally:
        gw.stop()


def served(client: openai.OpenAI, model: str, provider: dict[str, Any] | None = None) -> tuple[str, int]:
    """The target that answered, and how many attempts it took."""
    extra = {"provider": provider} if provider is not None else None
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MSGS, extra_body=extra)
    assert raw.parse().choices[0].message.content
    return raw.headers["x-relaycast-target"], int(raw.headers["x-relaycast-attempts"])


def refused(client: openai.OpenAI, model: str, provider: dict[str, Any]) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=model, messages=MSGS, extra_body={"provider": provider})
    return e.value


def test_max_price_admits_a_catalog_priced_model_at_or_under_the_cap(client: openai.OpenAI) -> None:
    assert served(client, "fakeai/gpt-4o-mini", {"max_price": {"prompt": 0.15, "completion": 0.6}}) == (
        "fakeai/gpt-4o-mini",
        1,
    ), "a cap equal to the list price admits it"
    assert served(client, "priority-mix", {"max_price": {"prompt": 1}}) == ("claude/claude-3-5-haiku-latest", 1)
    assert served(client, "priority-mix", {"max_price": {"completion": 1}}) == ("fakeai/gpt-4o-mini", 1)


def test_max_price_refuses_a_model_over_the_cap_in_openai_error_format_without_calling_it(
    client: openai.OpenAI, fake: Fake
) -> None:
    before = len(fake.requests())
    e = refused(client, "fakeai/gpt-4o", {"max_price": {"prompt": 1}})
    assert e.status_code == 503
    assert isinstance(e.body, dict)
    assert e.body["code"] == "no_route" and e.body["type"] == "server_error"
    assert "provider preferences" in e.body["message"]
    e = refused(client, "fakeai/gpt-4o-mini", {"max_price": {"prompt": 0.149999}})
    assert e.status_code == 503 and isinstance(e.body, dict) and e.body["code"] == "no_route"
    assert len(fake.requests()) == before, "no upstream was asked"


def test_max_price_refuses_a_model_with_no_known_price(client: openai.OpenAI) -> None:
    e = refused(client, "fakeai/my-private-model", {"max_price": {"prompt": 1000, "completion": 1000}})
    assert e.status_code == 503 and isinstance(e.body, dict) and e.body["code"] == "no_route"


def test_sort_by_price_picks_the_cheapest_target_by_catalog_price(client: openai.OpenAI) -> None:
    assert served(client, "priority-mix") == ("fakeai/gpt-4o", 1), "without sort: the route's order"
    assert served(client, "priority-mix", {"sort": "price"}) == ("fakeai/gpt-4o-mini", 1)


def test_lowest_cost_orders_by_catalog_prices_when_the_route_gives_none(client: openai.OpenAI) -> None:
    assert served(client, "cheapest") == ("fakeai/gpt-4o-mini", 1)
    # The cheapest fails: the next cheapest (not the next in the list) serves.
    assert served(client, "cheapest-failing") == ("claude/claude-3-5-haiku-latest", 2)


def test_a_route_price_overrides_the_catalog(client: openai.OpenAI) -> None:
    # The catalog prices gpt-4o far above gpt-4o-mini; the route prices its gpt-4o target far below.
    assert served(client, "route-priced") == ("fakeai/gpt-4o@tokens=8", 1)
    assert served(client, "route-priced", {"max_price": {"prompt": 0.05}}) == ("fakeai/gpt-4o@tokens=8", 1)
