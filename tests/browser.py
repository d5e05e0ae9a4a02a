"""Headless Chromium for the dashboard's tests: Debian's `chromium`, driven by Playwright. Screenshots go under
$RELAYCAST_ARTIFACTS (default: ./artifacts), kept by CI as the run's artifacts.

A test module uses the `browser` fixture (tests/conftest.py) and skips itself when Chromium is missing with
`pytestmark = needs_chromium`."""

from __future__ import annotations

import http.client
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_KEY

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
needs_chromium = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed (apt-get install chromium)"
)


def launch() -> Iterator[Any]:
    """Chromium for one test module: the `browser` fixture (tests/conftest.py)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def login(page: Any, url: str, key: str = ADMIN_KEY) -> None:
    """Log in through the dashboard's form and land on it."""
    page.goto(url + "/dashboard/login")
    page.fill("#login-key", key)
    page.click("#login-submit")
    page.wait_for_url(url + "/dashboard*")


def shot(page: Any, name: str) -> None:
    """A full-page screenshot, `<name>.png` among the run's artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def session_cookie(gw: Any) -> str:
    """A dashboard session cookie, as the login form gets it."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "POST",
        "/dashboard/login",
        body=f"key={ADMIN_KEY}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    r = conn.getresponse()
    assert r.status == 303
    cookie = r.getheader("set-cookie").split(";")[0]
    conn.close()
    return cookie
