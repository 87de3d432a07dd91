"""The usage and knowledge-gap pages in headless Chromium, on a phone and on a laptop.

The server is a throw-away standalone one filled by docs/screenshots/insight.py --seed, the
month of made-up questions the README's screenshots show.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.ingestion.test_standalone import ROOT, Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
SEED = ROOT / "docs" / "screenshots" / "insight.py"
# The administrator the seed creates (docs/screenshots/insight.py).
USER, PASSWORD = "admin", "screenshots-only-password"


@pytest.fixture(scope="module")
def insight_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("insight") / "var")
    server.env["EMBEDDING_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / "assistant-test-encoders")
    server.env["PYTHONPATH"] = str(ROOT)
    seeded = subprocess.run(
        [sys.executable, str(SEED), "--seed"],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium")
    sync_api: Any = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield chromium
        chromium.close()


def signed_in(browser: Browser, server: Server, width: int, height: int) -> Page:
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(f"{server.url}/accounts/login/")
    page.get_by_label("User name").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}/")
    return page


def content_overflow(page: Page) -> int:
    """How far the page's content (the main area) reaches past its width, in pixels."""
    return int(page.evaluate("(() => { const m = document.querySelector('main');"
                             " return m.scrollWidth - m.clientWidth; })()"))  # fmt: skip


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(("width", "height"), [(360, 740), (1366, 768)])
def test_the_insight_pages_fit_the_screen_with_their_controls_in_reach(
    insight_server: Server, browser: Browser, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    page = signed_in(browser, insight_server, width, height)

    page.goto(f"{insight_server.url}/insight/usage/")
    assert content_overflow(page) == 0
    expect(page.get_by_role("heading", name="Usage", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Show")).to_be_visible()
    expect(page.get_by_role("link", name="Export per day (CSV)")).to_be_visible()
    expect(page.get_by_role("img", name="Questions per day, by outcome")).to_be_visible()
    assert page.locator("svg.chart").count() >= 5
    questions = page.locator('[data-figure="questions"]').inner_text()
    assert int(questions) > 100

    page.get_by_role("link", name="Knowledge gaps").click()
    page.wait_for_url("**/insight/gaps/**")
    assert content_overflow(page) == 0
    first_gap = page.locator("article.gap").first
    expect(first_gap.locator("h2.gap-title")).to_be_visible()
    resolve = first_gap.get_by_role("button", name="Mark resolved")
    resolve.scroll_into_view_if_needed()
    expect(resolve).to_be_visible()
    page.context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_a_gap_is_marked_resolved_in_the_browser(insight_server: Server, browser: Browser) -> None:
    from playwright.sync_api import expect

    page = signed_in(browser, insight_server, 1366, 768)
    page.goto(f"{insight_server.url}/insight/gaps/")
    gap = page.locator("article.gap").last
    title = gap.locator("h2.gap-title").inner_text()
    gap.get_by_label("Note (optional)").fill("Answered in the new FAQ.")
    gap.get_by_role("button", name="Mark resolved").click()
    expect(page.locator(".message-success")).to_contain_text("Marked resolved")
    expect(page.get_by_role("heading", name=title, exact=True)).to_have_count(0)
    page.get_by_role("link", name="Resolved").click()
    expect(page.get_by_text("Answered in the new FAQ.")).to_be_visible()
    page.context.close()
