"""The Flask-DebugToolbar panel in a real browser (Debian's Chromium through
Playwright), on the example app's page; ``make screenshot`` writes the
picture docs/observability.rst shows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from example_app import create_app, ploy

from . import servers
from .test_example_app import CHROMIUM, CHROMIUM_FLAGS, ROOT, serve

SCREENSHOT = ROOT / "docs" / "_static" / "toolbar-panel.png"


@pytest.fixture
def page() -> Iterator[Any]:
    servers.need(os.path.exists(CHROMIUM), f"chromium at {CHROMIUM}")
    playwright_api = servers.need_module("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 800})
            context.set_default_timeout(10_000)
            yield context.new_page()
        finally:
            browser.close()


def test_toolbar_panel_in_a_browser(page: Any, tmp_path: Path) -> None:
    from flask_debugtoolbar import DebugToolbarExtension

    app = create_app(
        {
            "DEBUG": True,  # PLOY_RECORD_OPS follows it
            "PLOY_CACHE_URL": f"sqlite:///{tmp_path}/cache.sqlite3",
            "PLOY_STATE_URL": f"sqlite:///{tmp_path}/state.sqlite3",
            "DEBUG_TB_INTERCEPT_REDIRECTS": False,
            "DEBUG_TB_PANELS": [
                "flask_debugtoolbar.panels.timer.TimerDebugPanel",
                "flask_debugtoolbar.panels.route_list.RouteListDebugPanel",
                "flask_ploy.observe.toolbar.PloyPanel",
            ],
            "REPORT_SECONDS": 0.0,
        }
    )
    app.debug = True
    DebugToolbarExtension(app)
    try:
        with serve(app) as base:
            servers.http_json(base, "/counters/visits", {})
            page.goto(base + "/")
            page.click("#flDebugPloyPanel a, a.flDebugPloyPanel")
            panel = page.locator("#flDebugPloyPanel-content")
            panel.wait_for(state="visible")
            text = panel.inner_text()
            assert "prefs:alice" in text and "USER_STATE" in text
            assert "STATE" in text and "CACHE" in text
            shot = tmp_path / "toolbar-panel.png"
            page.screenshot(path=str(shot))
    finally:
        ploy.app_bindings(app).close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("PLOY_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(data)
    assert SCREENSHOT.exists(), "run `make screenshot` to make docs/_static/toolbar-panel.png"
