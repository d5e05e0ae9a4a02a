"""The dashboard's on-call pages in headless Chromium (Debian's `chromium`, driven by Playwright) against a real
gateway: Routes (the standard test config's failover and cooling targets, with their transitions), Monitors (a
rule that fires through the page's "Evaluate now"), Keys (created, rotated, revoked and deleted through the page;
the secret shown once). Each page passes axe-core with no serious or critical violations and fits 1280 and 1920
pixels without horizontal scrolling; screenshots are saved under $RELAYCAST_ARTIFACTS (default: ./artifacts)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.browser import ARTIFACTS, login, needs_chromium
from tests.conftest import UPSTREAM_KEY, GatewayProcess, standard_config
from tests.servers import npm_file
from tests.store_helpers import wait_stored

MONITORS = """
monitors:
  interval_s: 3600
  rules:
    - {name: fakeai-errors, kind: error_rate, provider: fakeai, threshold_pct: 10, window: 5m, min_requests: 3}
"""

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def gw(fake) -> Iterator[GatewayProcess]:
    g = GatewayProcess(standard_config(fake.url, MONITORS), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    client = openai.OpenAI(base_url=g.base_url, api_key="unused", max_retries=0)
    ids = []
    for model in ["fast"] * 4 + ["resilient"] * 2:  # 503s then a failover; a 429 that cools a target down
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
        ids.append(raw.headers["x-relaycast-request-id"])
    wait_stored(g.url, ids)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def page(gw, browser) -> Iterator[object]:
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    login(pg, gw.url)
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    pg.close()


def _open(page, view: str) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("v => { delete document.body.dataset.loaded; location.hash = v; }", view)
    page.wait_for_function(f"() => document.body.dataset.loaded === '{view}'", timeout=10_000)


def _check_page(page, view: str) -> None:  # type: ignore[no-untyped-def]
    """axe-core: no serious or critical violations in the view's section; no horizontal scrolling at 1280 and 1920
    pixels."""
    axe = npm_file("axe-core", "axe.min.js").read_text()
    page.evaluate(axe)
    found = page.evaluate(
        "async (sel) => (await axe.run({include: [[sel]]}, {runOnly: ['wcag2a', 'wcag2aa']})).violations"
        ".filter(v => v.impact === 'serious' || v.impact === 'critical')"
        ".map(v => v.id + ': ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))",
        f"#view-{view}",
    )
    assert not found, f"{view}: {found}"
    for width in (1280, 1920):
        page.set_viewport_size({"width": width, "height": 900})
        wide = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert wide <= 0, f"{view} at {width} px scrolls sideways by {wide} px"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"ops-{view}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
    assert not page.errors, page.errors


def test_routes_page_shows_targets_states_and_transitions(gw, page):
    _open(page, "routes")
    fast = page.locator("[data-route='fast']")
    assert "fakeai/gpt-4o-mini@error=503" in fast.inner_text()
    assert "upstream_5xx" in fast.inner_text()
    assert "Numbers cover the last 1 min (routing.window_s)" in page.inner_text("#routes-window")
    assert "down/gpt-4o-mini" in page.locator("[data-route='resilient']").inner_text()
    transitions = page.locator("table[aria-label='Target transitions']").inner_text()
    assert "fakeai/gpt-4o-mini@error=429;retry_after=3" in transitions  # its cool-down: over by now, or not
    assert "rate limited: cooling for 3 s" in transitions
    _check_page(page, "routes")


def test_monitors_page_evaluates_and_shows_the_incident(gw, page):
    _open(page, "monitors")
    assert "no data yet" in page.inner_text("table[aria-label='Monitor rules']")
    page.evaluate("() => { delete document.body.dataset.loaded; }")
    page.click("#monitors-evaluate")
    page.wait_for_function("() => document.body.dataset.loaded === 'monitors'", timeout=10_000)
    assert "1 notification" in page.inner_text("#monitors-status")
    rules = page.inner_text("table[aria-label='Monitor rules']")
    assert "ALERT" in rules and "provider=fakeai" in rules
    incidents = page.inner_text("table[aria-label='Incidents']")
    assert "fakeai-errors" in incidents and "open" in incidents and "upstream_5xx" in incidents
    _check_page(page, "monitors")


def _chat(gw: GatewayProcess, key: str) -> int:
    client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
    try:
        client.chat.completions.create(model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    except openai.AuthenticationError:
        return 401
    return 200


def _secret(page) -> str:  # type: ignore[no-untyped-def]
    page.wait_for_selector("#ops-secret-dialog[open]")
    assert "you will not see it again" in page.inner_text("#ops-secret-dialog")
    secret = page.inner_text("#ops-secret")
    assert secret.startswith("rk-")
    page.click("#ops-secret-close")
    page.wait_for_selector("#ops-secret-dialog", state="detached")
    assert secret not in page.content()  # nothing of it stays in the page
    return secret


def _confirm(page, label: str) -> None:  # type: ignore[no-untyped-def]
    page.evaluate("() => { delete document.body.dataset.loaded; }")
    page.click(f"button[aria-label='{label}']")
    page.wait_for_selector("dialog.ops-dialog[open]")
    page.locator("dialog.ops-dialog[open] button.ops-danger").click()
    page.wait_for_function("() => document.body.dataset.loaded === 'keys'", timeout=10_000)


def test_keys_page_creates_rotates_revokes_and_deletes(gw, page):
    _open(page, "keys")
    assert "The gateway is open" in page.inner_text("#keys-access")
    page.fill("#key-name", "team-web")
    page.fill("#key-owner", "web@example.com")
    page.fill("#key-rpm", "60")
    page.fill("#key-budget_day_usd", "5")
    page.evaluate("() => { delete document.body.dataset.loaded; }")
    page.click("#key-create-submit")
    first = _secret(page)
    listed = page.inner_text("table[aria-label='Virtual keys']")
    assert "team-web" in listed and "60 rpm" in listed and "$5.00/day" in listed and first[:8] in listed
    assert "1 live key" in page.inner_text("#keys-access")
    assert _chat(gw, first) == 200
    _check_page(page, "keys")

    # Rotate: confirmed, a new secret shown once; the old one stops working.
    page.click("button[aria-label='Rotate team-web']")
    page.locator("dialog.ops-dialog[open] button.ops-danger").click()
    second = _secret(page)
    assert second != first and _chat(gw, first) == 401 and _chat(gw, second) == 200

    # Cancelling a revoke changes nothing.
    page.click("button[aria-label='Revoke team-web']")
    page.locator("dialog.ops-dialog[open] button", has_text="Cancel").click()
    assert _chat(gw, second) == 200

    _confirm(page, "Revoke team-web")
    assert "No live keys remain: requests without a key are refused" in page.inner_text("#keys-status")
    assert "revoked" in page.inner_text("table[aria-label='Virtual keys']") and _chat(gw, second) == 401

    _confirm(page, "Delete team-web")
    assert "Deleted team-web" in page.inner_text("#keys-status")
    assert "No virtual keys yet" in page.inner_text("table[aria-label='Virtual keys']")
    assert "Requests need a key" in page.inner_text("#keys-access")
