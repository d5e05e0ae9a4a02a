"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright): log in with the admin key, see
the charts render with data from real requests sent through the gateway, open a request's waterfall.

Screenshots are saved under $RELAYCAST_ARTIFACTS (default: ./artifacts) as the run's artifacts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import wait_stored

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("RELAYCAST_ARTIFACTS", "artifacts"))
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def dash(fake) -> Iterator[tuple[GatewayProcess, list[str]]]:
    gw = GatewayProcess(standard_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    ids = []
    plan = [
        ("fast", False, "alice", "checkout"),
        ("fakeai/gpt-4o-mini@ttft_ms=30,tokens=30", True, "bob", "search"),
        ("claude/claude-3-5-haiku-latest@cached=20", False, "carol", "support"),
        ("fakeai/gpt-4o", True, "alice", "search"),
        ("resilient", False, "dave", "checkout"),
    ] * 3
    for i, (model, stream, user, feature) in enumerate(plan):
        rid = f"dash-{i}"
        kw = dict(
            model=model,
            messages=[{"role": "user", "content": f"question {i}"}],
            user=user,
            extra_headers={"x-request-id": rid, "X-Title": feature},
        )
        raw = client.chat.completions.with_raw_response.create(stream=stream, **kw)
        for _ in raw.parse() if stream else ():
            pass
        ids.append(raw.headers["x-relaycast-request-id"])  # the store's key; `rid` is kept as an attribute
    try:
        client.chat.completions.create(
            model="all-down", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": "dash-failed"}
        )
    except openai.APIError as e:
        ids.append(e.response.headers["x-relaycast-request-id"])
    wait_stored(gw.url, ids)
    yield gw, ids
    gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def _points(page, canvas: str) -> int:  # type: ignore[no-untyped-def]
    page.wait_for_function(f"() => Number(document.querySelector('{canvas}')?.dataset.points || 0) > 0", timeout=10_000)
    return int(page.eval_on_selector(canvas, "c => c.dataset.points"))


def test_login_charts_and_waterfall(dash, browser):
    gw, ids = dash
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    failed: list[str] = []
    page.on(
        "response",
        lambda r: (
            failed.append(f"{r.request.method} {r.url.removeprefix(gw.url)} {r.status}") if r.status >= 400 else None
        ),
    )
    requests_seen: list[str] = []
    page.on("request", lambda r: requests_seen.append(r.url))

    # Not logged in: the dashboard sends you to the login page; a wrong key is refused there.
    page.goto(gw.url + "/dashboard")
    assert page.url.endswith("/dashboard/login")
    page.fill("#login-key", "not-the-admin-key")
    page.click("#login-submit")
    assert page.is_visible("#login-error")
    page.fill("#login-key", ADMIN_KEY)
    page.click("#login-submit")
    page.wait_for_url(gw.url + "/dashboard*")
    assert ADMIN_KEY not in page.url

    # Overview: spend per hour by model, top models / users / features, from the requests sent above.
    page.wait_for_function("() => document.body.dataset.loaded === 'overview'", timeout=10_000)
    assert _points(page, "#spend-chart") > 0
    assert "gpt-4o-mini" in page.inner_text("#top-models")
    assert "alice" in page.inner_text("#top-users") and "checkout" in page.inner_text("#top-features")
    _shot(page, "overview")

    # Latency: percentiles over time, TTFT against total.
    page.goto(gw.url + "/dashboard#latency")
    page.wait_for_function("() => document.body.dataset.loaded === 'latency'", timeout=10_000)
    assert _points(page, "#latency-chart") > 0 and _points(page, "#ttft-chart") > 0
    assert "gpt-4o" in page.inner_text("#latency-table")
    _shot(page, "latency")

    # Errors: rates per provider by class.
    page.goto(gw.url + "/dashboard#errors")
    page.wait_for_function("() => document.body.dataset.loaded === 'errors'", timeout=10_000)
    assert _points(page, "#errors-chart") > 0
    errors_text = page.inner_text("#errors-table")
    assert "fakeai" in errors_text and "upstream_5xx" in errors_text

    # The explorer: open the failover request, see its waterfall of two attempts (the first failed).
    page.goto(gw.url + "/dashboard#requests")
    page.wait_for_function("() => document.body.dataset.loaded === 'requests'", timeout=10_000)
    assert page.locator("#requests-table tr[data-request-id]").count() >= len(ids)
    page.click(f"#requests-table tr[data-request-id='{ids[0]}']")
    page.wait_for_selector(f"#request-detail[data-request-id='{ids[0]}']")
    rows = page.locator("#waterfall .wf-row")
    assert rows.count() == 2
    assert "upstream_5xx" in rows.nth(0).inner_text() and "fakeai/gpt-4o-mini" in rows.nth(1).inner_text()
    _shot(page, "waterfall")

    # Everything came from the gateway itself (no CDN), nothing went wrong in the page, and no secret shows.
    assert all(u.startswith(gw.url) or u.startswith("data:") for u in requests_seen), [
        u for u in requests_seen if not u.startswith(gw.url)
    ]
    assert not problems, problems
    assert failed == ["POST /dashboard/login 401"], failed  # only the wrong key, on purpose
    html = page.content()
    assert UPSTREAM_KEY not in html and ADMIN_KEY not in html
    page.close()


def test_logged_out_pages_and_api_refuse(dash, browser):
    gw, _ = dash
    ctx = browser.new_context()
    page = ctx.new_page()
    resp = page.goto(gw.url + "/admin/analytics/spend")
    assert resp.status == 401
    page.goto(gw.url + "/dashboard/login")
    page.fill("#login-key", ADMIN_KEY)
    page.click("#login-submit")
    page.wait_for_url(gw.url + "/dashboard*")
    cookie = next(c for c in ctx.cookies() if c["name"] == "relaycast_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and ADMIN_KEY not in cookie["value"]
    assert page.goto(gw.url + "/admin/analytics/spend").status == 200  # the session works for the API
    page.goto(gw.url + "/dashboard")
    page.click("form[action='/dashboard/logout'] button")
    page.wait_for_url(gw.url + "/dashboard/login")
    assert page.goto(gw.url + "/admin/analytics/spend").status == 401
    ctx.close()
