"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright): log in with the admin key, see
the charts render with data from real requests sent through the gateway, open a request's waterfall.

Screenshots are saved under $RELAYCAST_ARTIFACTS (default: ./artifacts) as the run's artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest

from tests.browser import needs_chromium, shot
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess, standard_config
from tests.store_helpers import wait_stored

pytestmark = needs_chromium


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


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    shot(page, f"dashboard-{name}")


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


# --- drill-down, minute resolution, tables that fit ------------------------------------------------

LONG_USER = "a-rather-long-user-name-from-the-single-sign-on-provider@example-corporation.example"
LONG_FEATURE = "checkout-recommendations-experiment-with-a-very-long-feature-name-v2"


@pytest.fixture(scope="module")
def spread(dash) -> GatewayProcess:
    """Requests 150 and 90 seconds ago (two minutes at least), written into the gateway's store as the writer writes
    them (rows.build + write_batch), one of them with a long user and feature name."""
    from relaycast.records import Attempt, Attribution, RequestRecord, Usage
    from relaycast.redact import Redactor
    from relaycast.store import rows
    from relaycast.store.db import Connection
    from relaycast.store.settings import StoreConfig
    from relaycast.store.writer import write_batch

    gw, _ = dash
    now = time.time()

    def rec(rid: str, ago: float, user: str, feature: str) -> RequestRecord:
        at = Attempt(
            target="fakeai/gpt-4o-mini",
            provider="fakeai",
            model="gpt-4o-mini",
            started_ns=0,
            duration_ns=40_000_000,
            usage=Usage(prompt_tokens=100, completion_tokens=20),
            cost_pusd=27_000_000,
            cost_source="computed",
        )
        return RequestRecord(
            request_id=rid,
            endpoint="chat.completions",
            model_requested="fast",
            stream=False,
            started_unix_ns=int((now - ago) * 1e9),
            duration_ns=40_000_000,
            status_code=200,
            attribution=Attribution(user=user, feature=feature),
            attempts=(at,),
        )

    conn = Connection(StoreConfig(path=str(gw.config_path.parent / "relaycast.db")))
    try:
        write_batch(
            conn,
            rows.build(
                [rec("spread-1", 150, "erin", "search"), rec("spread-2", 90, LONG_USER, LONG_FEATURE)],
                Redactor(()),
                False,
            ),
        )
    finally:
        conn.close()
    return gw


def _login(browser, gw: GatewayProcess, width: int = 1400):  # type: ignore[no-untyped-def]
    page = browser.new_page(viewport={"width": width, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(gw.url + "/dashboard/login")
    page.fill("#login-key", ADMIN_KEY)
    page.click("#login-submit")
    page.wait_for_url(gw.url + "/dashboard*")
    page.wait_for_function("() => document.body.dataset.loaded === 'overview'", timeout=10_000)
    return page, problems


def _loaded(page, view: str) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(f"() => document.body.dataset.loaded === '{view}'", timeout=10_000)


def _cells(page, col: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.eval_on_selector_all(
        f"#requests-table tr[data-request-id] td[data-col='{col}']", "tds => tds.map(t => t.textContent)"
    )


def test_drill_down_opens_the_explorer_filtered(dash, spread, browser):
    gw, _ = dash
    page, problems = _login(browser, gw)
    for top, col, key in (("#top-users", "user", "alice"), ("#top-features", "feature", "search")):
        page.click(f"{top} a.drill[data-key='{key}']")
        page.wait_for_url(f"**#requests?{col}={key}*")
        _loaded(page, "requests")
        cells = _cells(page, col)
        assert cells and all(c == key for c in cells), (col, cells)
        assert page.input_value(f"#filter-{col}") == key  # the filter shows what the list is filtered by
        page.go_back()  # the back button returns to the overview
        _loaded(page, "overview")

    # A model: every row asked for it, or was served by it (the Model column shows both, and the filter matches both).
    page.click("#top-models a.drill[data-key='gpt-4o']")
    _loaded(page, "requests")
    shown = page.eval_on_selector_all(
        "#requests-table tr[data-request-id] td[data-col='model']",
        "tds => tds.map(t => [t.dataset.requested, t.dataset.target, t.dataset.model])",
    )
    assert shown and all("gpt-4o" in s for s in shown), shown

    # A provider in the errors table: its failed requests.
    page.goto(gw.url + "/dashboard#errors")
    _loaded(page, "errors")
    assert _points(page, "#errors-class-chart") > 0
    _shot(page, "errors-by-class")
    page.click("#errors-table a.drill:text-is('fakeai')")
    _loaded(page, "requests")
    assert "status=error" in page.url and "provider=fakeai" in page.url
    badges = page.eval_on_selector_all("#requests-table tr[data-request-id] .badge", "bs => bs.map(b => b.className)")
    assert badges and all("badge-err" in b for b in badges)

    # A latency-table row, and a link typed by hand: the same filtered explorer.
    page.goto(gw.url + "/dashboard#latency")
    _loaded(page, "latency")
    page.click("#latency-table a.drill:text-is('gpt-4o-mini')")
    _loaded(page, "requests")
    assert page.input_value("#filter-model") == "gpt-4o-mini"
    page.goto(gw.url + "/dashboard#requests?user=erin&since=1h")
    _loaded(page, "requests")
    assert _cells(page, "user") == ["erin"]
    assert not problems, problems
    page.close()


def test_fifteen_minutes_shows_minute_buckets(dash, spread, browser):
    gw, _ = dash
    page, problems = _login(browser, gw)
    page.select_option("#range", "15m")
    page.wait_for_function(
        "() => document.body.dataset.loaded === 'overview' && document.querySelector('#spend-when').dataset.bucket",
        timeout=10_000,
    )
    assert page.get_attribute("#spend-when", "data-bucket") == "minute"
    assert page.inner_text("#spend-when") == "Last 15 minutes · per minute"
    assert int(page.get_attribute("#spend-chart", "data-labels")) >= 15
    assert int(page.get_attribute("#spend-chart", "data-filled")) >= 2  # the traffic spans two minutes at least
    assert "client refusals" in page.inner_text("#kpi-error-rate")
    _shot(page, "overview-15m")
    page.select_option("#range", "24h")
    page.wait_for_function("() => document.querySelector('#spend-when').dataset.bucket === 'hour'", timeout=10_000)
    assert page.inner_text("#spend-when") == "Last 24 hours · per hour"
    # A chart bar opens the explorer on its bucket's window.
    page.select_option("#range", "15m")
    page.wait_for_function("() => document.querySelector('#spend-when').dataset.bucket === 'minute'", timeout=10_000)
    box = page.locator("#spend-chart").bounding_box()
    assert box
    hit = page.evaluate(
        """() => {
        const c = Chart.getChart(document.getElementById('spend-chart'));
        for (let d = 0; d < c.data.datasets.length; d++) {
          const meta = c.getDatasetMeta(d);
          for (let i = 0; i < meta.data.length; i++) {
            if (c.data.datasets[d].data[i] > 0) { const p = meta.data[i].getCenterPoint(); return [p.x, p.y]; }
          }
        }
        return null;
      }"""
    )
    assert hit
    page.mouse.click(box["x"] + hit[0], box["y"] + hit[1])
    _loaded(page, "requests")
    assert "until=" in page.url and page.is_visible("#filter-window")
    assert page.locator("#requests-table tr[data-request-id]").count() >= 1
    assert not problems, problems
    page.close()


@pytest.mark.parametrize("width", [1280, 1920])
def test_tables_fit_without_horizontal_scroll(dash, spread, browser, width):
    gw, _ = dash
    page, problems = _login(browser, gw, width)
    geometry = """(sel) => {
      const box = document.querySelector(sel);
      const right = box.getBoundingClientRect().right;
      return {
        over: [...box.querySelectorAll('th')].filter(th => th.getBoundingClientRect().right > right + 0.5)
          .map(th => th.textContent),
        scroll: box.scrollWidth, client: box.clientWidth,
      };
    }"""
    page.goto(gw.url + "/dashboard#requests?since=1h")
    _loaded(page, "requests")
    assert LONG_USER in _cells(page, "user")
    g = page.evaluate(geometry, "#requests-scroll")
    assert not g["over"] and g["scroll"] <= g["client"], g
    for col in ("user", "feature"):  # visible: inside the viewport, not scrolled away
        right = page.evaluate(
            f"() => Math.max(...[...document.querySelectorAll(\"#requests-table td[data-col='{col}']\")]"
            ".map(t => t.getBoundingClientRect().right))"
        )
        assert right <= width, (col, right)
    _shot(page, f"requests-{width}")
    page.goto(gw.url + "/dashboard#latency")
    _loaded(page, "latency")
    g = page.evaluate(geometry, "#latency-scroll")
    assert not g["over"] and g["scroll"] <= g["client"], g
    assert page.inner_text("#latency-table th:last-child") == "TTFT P99"  # the last column, whole
    assert page.eval_on_selector("#ttft-chart", "c => Chart.getChart(c).scales.y.ticks.length") == len(
        page.eval_on_selector_all("#latency-table tbody tr", "trs => trs")
    )  # every model labelled on the TTFT chart
    _shot(page, f"latency-{width}")
    assert not problems, problems
    page.close()
