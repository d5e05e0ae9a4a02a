"""Settings > Broadcast in headless Chromium: add a Datadog destination through the page the way OpenRouter's
settings page works (fill the API key, ML App and site, Test Connection, Save), against Datadog's own
ddapm-test-agent; a wrong key against a site that answers 403 shows the exact failure and saves nothing; then
traffic reaches the test agent without a restart, and the page shows it sent."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import openai
import pytest

from tests.browser import login, needs_chromium, shot
from tests.conftest import UPSTREAM_KEY, Fake, GatewayProcess, standard_config
from tests.integration.test_broadcast_settings import DD_KEY, listing, refusing, wait_for  # noqa: F401 - refusing: a fixture
from tests.integration.test_host_processes import role_pids, signal_pid

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def gw(fake: Fake) -> Iterator[GatewayProcess]:
    g = GatewayProcess(standard_config(fake.url), env={"TEST_UPSTREAM_KEY": UPSTREAM_KEY}).wait_ready()
    yield g
    g.stop()


def test_add_datadog_through_the_page(gw, agent, refusing, browser):  # noqa: F811 - refusing: imported
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: d.accept())
    login(page, gw.url)
    page.goto(gw.url + "/dashboard#settings")
    page.wait_for_function("() => document.body.dataset.loaded === 'settings'", timeout=10_000)
    assert page.is_checked("#broadcast-toggle")

    # Datadog's form: API key, ML App, Site URL defaulting to us5.
    page.click("button[data-add-kind='datadog']")
    page.wait_for_selector("#dest-form[data-kind='datadog']")
    assert page.input_value("#dest-f-site") == "https://api.us5.datadoghq.com"
    page.fill("#dest-f-api_key", DD_KEY)
    page.fill("#dest-f-ml_app", "from-the-page")

    # A site that refuses the key: Save tests first, shows exactly what failed, saves nothing.
    page.click("#dest-form details.advanced summary")
    page.fill("#dest-f-api_url", refusing.url)
    page.click("#dest-save")
    page.wait_for_selector("#dest-result[data-ok='false']")
    failure = page.inner_text("#dest-result")
    assert "invalid API key" in failure and "HTTP 403" in failure, failure
    assert page.is_visible("#dest-save-anyway")
    assert "datadog" not in listing(gw)
    _shot(page, "broadcast-failed")

    # Through the Agent instead: Test Connection turns green, Save keeps it.
    page.fill("#dest-f-api_url", "")
    page.fill("#dest-f-agent_url", agent.url)
    page.click("#dest-test")
    page.wait_for_selector("#dest-result[data-ok='true']")
    assert "agent found" in page.inner_text("#dest-result")
    page.click("#dest-save")
    page.wait_for_selector("#dest-form", state="detached")
    row = page.wait_for_selector("#dest-table tr[data-destination='datadog']")
    assert "dashboard" in row.inner_text()

    # Live without a restart: a request's spans reach the test agent under the page's ML App.
    client = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="fakeai/gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    rid = raw.headers["x-relaycast-request-id"]
    wait_for(
        lambda: any(
            s["meta"]["metadata"].get("request_id") == rid and "ml_app:from-the-page" in s.get("tags", [])
            for s in agent.spans()
        ),
        "the request's spans at the test agent",
    )
    # The page shows it sent (it refreshes by itself).
    page.wait_for_function(
        "() => { const r = document.querySelector(\"#dest-table tr[data-destination='datadog']\");"
        " return r && r.dataset.state === 'healthy' && Number(r.cells[4].textContent.replace(/\\D/g, '')) >= 1; }",
        timeout=15_000,
    )
    _shot(page, "broadcast-live")

    # Editing shows the key as saved, never its value.
    page.click("#dest-table button[data-edit='datadog']")
    page.wait_for_selector("#dest-form[data-kind='datadog']")
    assert page.input_value("#dest-f-api_key") == "" and "(saved)" in page.inner_text("label[for='dest-f-api_key']")
    assert DD_KEY not in page.content()
    page.click("#dest-cancel")

    # Broadcast off: the destination stops; on again: it runs.
    page.click("#broadcast-toggle")
    page.wait_for_selector("#dest-table tr[data-destination='datadog'][data-state='off']", timeout=10_000)
    page.click("#broadcast-toggle")
    page.wait_for_selector("#dest-table tr[data-destination='datadog'][data-state='healthy']", timeout=10_000)

    # While the telemetry process is too busy to answer (at saturation; SIGSTOP stands for it), the page still
    # refreshes, with the statuses it last had, and says how old they are.
    [telemetry] = role_pids(gw, "telemetry")
    signal_pid(telemetry, signal.SIGSTOP)
    try:
        busy = (
            "() => /Statuses as of \\d+ s ago: the telemetry process is busy/"
            ".test(document.getElementById('settings-sync').textContent)"
        )
        page.wait_for_function(busy, timeout=15_000)
        assert page.is_visible("#dest-table tr[data-destination='datadog'][data-state='healthy']")
    finally:
        signal_pid(telemetry, signal.SIGCONT)
    page.wait_for_function(f"() => !({busy})()", timeout=15_000)
    assert not problems, problems
    page.close()


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    shot(page, f"dashboard-{name}")
