from __future__ import annotations
from pathlib import Path
import re
from tests.assistant.test_browser import *  # noqa
from tests.assistant.test_browser import portal, browser, page, log_in, upload, ask, NIGHTJAR, ADMIN_PASSWORD  # noqa

def test_shots(portal, page, tmp_path):
    from playwright.sync_api import expect
    page.set_viewport_size({"width": 1366, "height": 800})
    log_in(page, portal, "admin", ADMIN_PASSWORD)
    d = tmp_path / "nightjar.md"; d.write_text(NIGHTJAR)
    upload(page, portal, d, readers="research")
    page.screenshot(path="/tmp/shots/documents.png")
    page.goto(portal.url + "/")
    page.screenshot(path="/tmp/shots/home_empty.png")
    box = page.locator("textarea[name=question]")
    box.fill("What is the launch code for Project Nightjar?"); box.press("Enter")
    expect(page.locator('.is-streaming [data-role="reasoning"]')).not_to_be_empty()
    page.locator(".is-streaming details.reasoning summary").click()
    page.wait_for_timeout(1500)
    page.screenshot(path="/tmp/shots/streaming.png")
    a = page.locator("article[data-answer-id]").first; a.wait_for(timeout=60000)
    ask(page, "Who is the president of France?")
    ask(page, "When is the first test flight?")
    page.locator("article[data-answer-id]").first.get_by_role("button", name="Not helpful", exact=True).click()
    page.wait_for_timeout(500)
    page.screenshot(path="/tmp/shots/thread.png", full_page=True)
    page.locator(".conversation-actions summary").first.click()
    page.screenshot(path="/tmp/shots/sidebar_edit.png")
    page.locator(".answer-text a").first.click()
    page.wait_for_url(re.compile("/passages/"))
    page.screenshot(path="/tmp/shots/passage.png", full_page=True)
    page.goto(portal.url + "/feedback/")
    page.screenshot(path="/tmp/shots/feedback.png", full_page=True)
