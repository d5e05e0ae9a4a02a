"""Every dashboard page, at 1280 and 1920 px wide, in headless Chromium (Debian's `chromium`, driven by Playwright),
against one real gateway with real traffic: keys created through the admin API, monitors with rules, a file
broadcast destination, several models, users and features, failures and a failover.

For each view and width: the page loads its data with no page error, no console error and no failed call; a
full-page screenshot is kept under $RELAYCAST_ARTIFACTS (default: ./artifacts) as `page-<view>-<width>.png`; the
element geometry shows nothing clipped (no table cell past its scroll container's visible box, no container or page
that scrolls sideways, no element past the viewport, no cell text cut off without a title holding it in full); and
axe-core (npm, installed by tests/install-servers, injected into the page) finds no serious or critical violation.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.browser import ARTIFACTS, login, needs_chromium
from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, GatewayProcess, standard_config
from tests.servers import npm_file
from tests.store_helpers import wait_stored

VIEWS = ["overview", "latency", "errors", "requests", "routes", "monitors", "keys", "settings"]
WIDTHS = {1280: 800, 1920: 1080}  # width: height of the viewport
LONG_USER = "a-user-with-a-rather-long-identifier.0123456789@customers.example.com"
LONG_FEATURE = "checkout-recommendations-experiment-with-a-long-name"

pytestmark = needs_chromium


def _admin(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None),
        method=method,
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def site(fake, tmp_path_factory) -> Iterator[tuple[GatewayProcess, str]]:
    """The gateway, with its traffic stored and its monitors evaluated; and the failover request's id."""
    traces = tmp_path_factory.mktemp("pages") / "traces.jsonl"
    extra = f"""
broadcast:
  destinations:
    - {{name: local-file, kind: file, path: '{traces}'}}
monitors:
  interval_s: 3600
  rules:
    - {{name: fakeai-errors, kind: error_rate, provider: fakeai, threshold_pct: 5, window: 5m, min_requests: 5}}
    - {{name: fast-p99, kind: latency_sla, route: fast, metric: p99, window: 5m, threshold_ms: 2000, min_requests: 5}}
    - {{name: daily-spend, kind: budget, feature: checkout, period: day, limit_usd: 0.000001}}
    - {{name: spend-spike, kind: spend_spike, window: 1h, baseline_windows: 6, threshold_pct: 200, min_usd: 1}}
"""
    gw = GatewayProcess(standard_config(fake.url, extra), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    try:
        secrets = {}
        for spec in (
            {"name": "web-app", "owner": "team-web", "rpm": 600, "budget_day_usd": 25},
            {"name": "batch-jobs", "owner": "data", "models": ["fakeai/*", "fast", "refusing"], "tpm": 200000},
            {"name": "support-bot", "owner": "support", "feature": "support", "budget_month_usd": 100},
            {"name": "old-key", "owner": "team-web"},
        ):
            secrets[spec["name"]] = _admin(gw.url, "POST", "/admin/keys", spec)["secret"]
        _admin(gw.url, "POST", "/admin/keys/old-key/revoke")

        ids: list[str] = []
        plan = [
            ("fast", False, "alice", "checkout", "web-app"),
            ("fakeai/gpt-4o-mini@ttft_ms=30,tokens=30", True, "bob", "search", "batch-jobs"),
            ("claude/claude-3-5-haiku-latest@cached=20", False, "carol", "support", "support-bot"),
            ("fakeai/gpt-4o", True, LONG_USER, LONG_FEATURE, "web-app"),
            ("resilient", False, "dave", "checkout", "web-app"),
            ("refusing", False, "erin", "search", "batch-jobs"),  # a content-policy refusal: the client's
            ("all-down", False, "frank", "checkout", "web-app"),  # every target fails: provider failures
            ("no-such-model", False, "frank", "search", "web-app"),  # the client's mistake
        ] * 3
        for i, (model, stream, user, feature, key) in enumerate(plan):
            client = openai.OpenAI(base_url=gw.base_url, api_key=secrets[key], max_retries=0)
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": f"question {i}"}],
                    user=user,
                    stream=stream,
                    extra_headers={"X-Title": feature},
                )
                for _ in raw.parse() if stream else ():
                    pass
                ids.append(raw.headers["x-relaycast-request-id"])
            except openai.APIStatusError as e:
                assert model in ("refusing", "all-down", "no-such-model"), e
                ids.append(e.response.headers["x-relaycast-request-id"])
        wait_stored(gw.url, ids)
        _admin(gw.url, "POST", "/admin/monitors/evaluate")
        yield gw, ids[0]  # the first `fast` request: failed over from a 503
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def axe_js() -> Path:
    return npm_file("axe-core", "axe.min.js")


# Element geometry of the view's roots (its section, and the request drawer when open): a list of problems.
GEOMETRY_JS = r"""
(rootSelectors) => {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  const px = (n) => Math.round(n * 10) / 10;
  const short = (s, n = 60) => (s.length > n ? s.slice(0, n - 1) + "…" : s);
  const text = (e) => (e.textContent || "").replace(/\s+/g, " ").trim();
  const visible = (e) => e.checkVisibility({ visibilityProperty: true, opacityProperty: false });
  const name = (e) => {
    let s = e.tagName.toLowerCase();
    if (e.id) return `${s}#${e.id}`;
    if (e.classList.length) s += "." + [...e.classList].join(".");
    const owner = e.parentElement && e.parentElement.closest("[id]");
    return owner ? `#${owner.id} ${s}` : s;
  };
  const columnOf = (cell) => {
    const table = cell.closest("table");
    const head = table && ((table.tHead && table.tHead.rows[0]) || [...table.rows].find((r) => r.querySelector("th")));
    const th = head && head.cells[cell.cellIndex];
    return th ? text(th) || `column ${cell.cellIndex + 1}` : `column ${cell.cellIndex + 1}`;
  };
  const scrollBox = (e) => {  // the nearest ancestor that clips horizontally, else the viewport
    for (let a = e.parentElement; a && a !== document.documentElement; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if (ox !== "visible") {
        const r = a.getBoundingClientRect();
        const left = r.left + a.clientLeft;
        return { el: a, left, right: left + a.clientWidth };
      }
    }
    return { el: null, left: 0, right: vw };
  };

  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1) {
    problems.push(`the page scrolls horizontally: scrollWidth ${page.scrollWidth} > clientWidth ${page.clientWidth}`);
  }
  const roots = rootSelectors.map((s) => document.querySelector(s)).filter((e) => e && visible(e));
  const reported = new Set();
  const underReported = (e) => { for (let a = e.parentElement; a; a = a.parentElement) if (reported.has(a)) return true; return false; };
  for (const root of roots) {
    for (const e of [root, ...root.querySelectorAll("*")]) {
      if (!visible(e)) continue;
      const r = e.getBoundingClientRect();
      const cs = getComputedStyle(e);
      if ((r.width > 0 || r.height > 0) && (r.right > vw + 1 || r.left < -1) && !underReported(e)) {
        reported.add(e);
        problems.push(`${name(e)} goes past the ${vw}px viewport: left ${px(r.left)}, right ${px(r.right)} ("${short(text(e))}")`);
      }
      if ((cs.overflowX === "auto" || cs.overflowX === "scroll") && e.scrollWidth > e.clientWidth + 1) {
        problems.push(`${name(e)} scrolls horizontally: scrollWidth ${e.scrollWidth} > clientWidth ${e.clientWidth}`);
      }
      // Text cut off: an ellipsis anywhere, or a cell (or something in one) that hides its overflow.
      const inCell = e.closest("td, th");
      const clips = cs.textOverflow === "ellipsis" || (inCell && (cs.overflowX === "hidden" || cs.overflowX === "clip"));
      if (clips && text(e) && e.scrollWidth > e.clientWidth + 1) {
        const full = text(e);
        const titled = [e, inCell].some((x) => x && x.title && x.title.replace(/\s+/g, " ").trim().includes(full));
        if (!titled) problems.push(`text clipped without a title holding it: ${name(e)} shows ${e.clientWidth}px of ${e.scrollWidth}px ("${short(full)}")`);
      }
    }
    for (const table of root.querySelectorAll("table")) {
      if (!visible(table)) continue;
      const box = scrollBox(table);
      const where = box.el ? name(box.el) : "the viewport";
      const out = new Map();  // column -> the cells of it outside the box
      for (const cell of table.querySelectorAll("th, td")) {
        if (!visible(cell)) continue;
        const r = cell.getBoundingClientRect();
        if (r.right > box.right + 1 || r.left < box.left - 1) {
          const col = columnOf(cell);
          const o = out.get(col) || { n: 0, left: r.left, right: r.right, sample: short(text(cell), 40) };
          o.n += 1;
          o.left = Math.min(o.left, r.left);
          o.right = Math.max(o.right, r.right);
          out.set(col, o);
        }
      }
      for (const [col, o] of out) {
        problems.push(`${name(table)}: column "${col}" clipped: ${o.n} cell(s) (e.g. "${o.sample}") span ${px(o.left)}-${px(o.right)}, outside ${where}'s visible ${px(box.left)}-${px(box.right)}`);
      }
    }
  }
  return problems;
}
"""


def _open(page: Any, url: str, view: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.goto(f"{url}/dashboard#{view}")
    try:
        page.wait_for_function(f"() => document.body.dataset.loaded === '{view}'", timeout=15_000)
    except PlaywrightTimeout:
        state = page.evaluate(
            """(v) => ({loaded: document.body.dataset.loaded || null, error: document.body.dataset.error || null,
                   alert: document.getElementById('alert')?.hidden ? null : document.getElementById('alert-text')?.textContent,
                   section: document.getElementById('view-' + v)?.children.length ?? null})""",
            view,
        )
        pytest.fail(
            f"#{view} never set body.dataset.loaded = {view!r}: loaded={state['loaded']!r} error={state['error']!r} "
            f"alert={state['alert']!r}; #view-{view} has {state['section']} child element(s)"
            + (" (empty: the view is not built)" if state["section"] == 0 else ""),
            pytrace=False,
        )


def _axe_report(violations: list[dict[str, Any]]) -> list[str]:
    lines = []
    for v in violations:
        lines.append(f"axe {v['id']} [{v['impact']}] {v['help']} ({len(v['nodes'])} element(s)):")
        for n in v["nodes"][:4]:
            why = " ".join((n.get("failureSummary") or "").split())
            lines.append(f"    {' '.join(map(str, n['target']))}: {why[:240]}")
    return lines


def _findings(page: Any, roots: list[str], axe_js: Path) -> tuple[list[str], list[str]]:
    """What the element geometry shows clipped, and axe-core's serious or critical violations, on the page as it is."""
    clipped = page.evaluate(GEOMETRY_JS, roots)
    # axe-core evaluated in the page: an injected <script> would be refused by the dashboard's CSP, rightly.
    page.evaluate(axe_js.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return clipped, _axe_report([v for v in result["violations"] if v["impact"] in ("serious", "critical")])


@pytest.mark.parametrize("width", list(WIDTHS), ids=lambda w: f"{w}px")
@pytest.mark.parametrize("view", VIEWS)
def test_page(axe_js, site, browser, view, width):
    gw, failover_id = site
    ctx = browser.new_context(viewport={"width": width, "height": WIDTHS[width]})
    page = ctx.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.method} {r.url} {r.failure}"))
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.request.method} {r.url.removeprefix(gw.url)} answered {r.status}")
            if r.status >= 400
            else None
        ),
    )
    try:
        login(page, gw.url)
        _open(page, gw.url, view)
        roots = [f"#view-{view}"]
        if view == "requests":  # with the failover request's detail drawer open
            page.click(f"#requests-table tr[data-request-id='{failover_id}']")
            page.wait_for_selector(f"#request-detail[data-request-id='{failover_id}']")
            roots.append("#request-detail")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")  # fixed bars are drawn where the viewport is
        page.screenshot(path=str(ARTIFACTS / f"page-{view}-{width}.png"), full_page=True)

        if page.evaluate(f"() => document.querySelector('#view-{view}').children.length === 0"):
            problems.append(f"#view-{view} is empty: the view shows nothing")
        clipped, violations = _findings(page, roots, axe_js)
        report = [*problems, *clipped, *violations]
        axe_count = sum(1 for line in violations if line.startswith("axe "))
        counts = f"{len(problems)} page problem(s), {len(clipped)} geometry problem(s), {axe_count} axe violation(s)"
        assert not report, f"#{view} at {width}px: {counts}:\n" + "\n".join(report)
    finally:
        ctx.close()


# The checks above must see what they look for: a page built to break each of them, and its fixed twin.
BROKEN = """<!doctype html><html lang="en"><head><title>t</title><style>
  .scroll { width: 300px; overflow-x: auto; } .clip { width: 300px; overflow-x: hidden; }
  td { white-space: nowrap; } .ell { max-width: 60px; overflow: hidden; text-overflow: ellipsis; }
</style></head><body><main id="view-x"><h1>Test</h1>
  <div class="scroll"><table id="wide"><tr><th>Name</th><th>Last column</th></tr>
    <tr><td>a-very-long-name-that-does-not-wrap-at-all-in-this-table</td><td>z</td></tr></table></div>
  <div class="clip"><table id="hidden"><tr><th>Name</th><th>Cut column</th></tr>
    <tr><td>another-very-long-name-that-does-not-wrap-at-all-here</td><td>y</td></tr></table></div>
  <table><tr><th>Short</th></tr><tr><td class="ell">truncated text without its title</td></tr></table>
  <div id="huge" style="width: 3000px">wider than any viewport</div>
  <p style="color: #cbd5e1">low-contrast text</p><input type="text">
</main></body></html>"""
FIXED = """<!doctype html><html lang="en"><head><title>t</title><style>
  .scroll { width: 300px; overflow-x: auto; } td { overflow-wrap: anywhere; }
  .ell { max-width: 60px; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
</style></head><body><main id="view-x"><h1>Test</h1>
  <div class="scroll"><table id="wide"><tr><th>Name</th><th>Last column</th></tr>
    <tr><td>a-very-long-name-that-does-not-wrap-at-all-in-this-table</td><td>z</td></tr></table></div>
  <table><tr><th>Short</th></tr><tr><td class="ell" title="truncated text with its title">truncated text with its
    title</td></tr></table>
  <p style="color: #334155">readable text</p><label>Name <input type="text"></label>
</main></body></html>"""


def test_checks_see_clipping_and_violations(axe_js, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    try:
        page.set_content(BROKEN)
        clipped, violations = _findings(page, ["#view-x"], axe_js)
        text = "\n".join(clipped)
        assert "the page scrolls horizontally" in text
        assert "div.scroll scrolls horizontally" in text
        assert 'table#wide: column "Last column" clipped: 2 cell(s)' in text
        assert 'table#hidden: column "Cut column" clipped: 2 cell(s)' in text
        assert "text clipped without a title holding it: #view-x td.ell" in text
        assert "div#huge goes past the 1280px viewport" in text
        axe_ids = {line.split()[1] for line in violations if line.startswith("axe ")}
        assert {"color-contrast", "label"} <= axe_ids, violations

        page.set_content(FIXED)
        assert _findings(page, ["#view-x"], axe_js) == ([], [])
    finally:
        ctx.close()
