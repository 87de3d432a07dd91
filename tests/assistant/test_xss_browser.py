"""Hostile text never runs as script, and the pages run under the content security policy.

Documents full of HTML and JavaScript payloads (plain text, Markdown, HTML, Word; in file
names, headings, titles and body text), a group named like a payload, payload questions,
conversation titles, feedback comments and audit flags go through the real server and the R1
simulator, which echoes them in its answers. Headless Chromium then opens every page that shows
them. The payload check runs with the browser ignoring the CSP, so that it is the escaping and
sanitising alone that keep the payloads inert; the policy check runs with the CSP enforced and
fails on any violation.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.assistant.test_browser import (
    ADMIN_PASSWORD,
    ANSWER_TIMEOUT_MS,
    Portal,
    ask,
    browser,
    log_in,
    portal,
)
from tests.ingestion.test_standalone import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

__all__ = ["browser", "portal"]  # module-scoped fixtures shared with the portal's browser tests


def script(where: str) -> str:
    return f"<script>window.__pwned='{where}';alert('{where}')</script>"


def image(where: str) -> str:
    # No "/" in it, so that it can be a file name too.
    return f"<img src=x onerror=\"window.__pwned='{where}';alert('{where}')\">"


def svg(where: str) -> str:
    return f'"><svg onload="window.__pwned=\'{where}\'">'


GROUP = image("group") + " auditors"
FILE_NAME = image("file-name") + svg("file-name-attr") + ".txt"
TEXT = (
    "Falcon budget memo.\n\n"
    f"The Falcon budget marker is {script('text-body')} in the quarterly ledger.\n"
    f"The Falcon budget owner is {image('text-owner')} according to the ledger.\n"
)
MARKDOWN = (
    f"# Osprey handbook {svg('md-heading')}\n\n"
    f"The Osprey gate number is 42 {script('md-body')} at the north entrance.\n\n"
    "The Osprey gate is opened by [the guard](javascript:window.__pwned='md-link') at dawn.\n\n"
    f"<div onmouseover=\"window.__pwned='md-html'\">The Osprey gate closes at dusk.</div>\n"
)
HTML = (
    "<html><head><title>Heron archive "
    "&lt;img src=x onerror=&quot;window.__pwned='html-title'&quot;&gt;</title></head><body>"
    "<h1>Heron archive &lt;script&gt;window.__pwned='html-heading'&lt;/script&gt;</h1>"
    "<p>The Heron archive keeps records for &lt;svg onload=&quot;window.__pwned='html-entity'"
    "&quot;&gt; seven years in the vault.</p>"
    "<script>window.__pwned='html-script'</script>"
    "<p onclick=\"window.__pwned='html-attr'\">The Heron archive vault is in the basement.</p>"
    "</body></html>"
)
DOCX_HEADING = f"Kestrel vault {script('docx-heading')}"
DOCX_BODY = f"The Kestrel vault code is {image('docx-body')} for the night shift."
QUESTIONS = [
    f"{image('question')} What is the Falcon budget marker in the quarterly ledger?",
    "What is the Osprey gate number at the north entrance?",
    "How long does the Heron archive keep records in the vault?",
    "What is the Kestrel vault code for the night shift?",
]
TITLE = script("conversation-title") + " Falcon"
COMMENT = image("feedback-comment")
FLAG_NOTE = svg("audit-flag")
# The shipped simulator reasons in plain words only; a real R1 quotes its sources, payloads
# and all. This is what such a quote looks like in the stored reasoning.
QUOTED_REASONING = f" Source 1 says: {script('reasoning')} {image('reasoning-image')}"


def write_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = image("docx-title")
    document.add_heading(DOCX_HEADING, level=1)
    document.add_paragraph(DOCX_BODY)
    document.save(str(path))


def manage(portal: Portal, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=portal.server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@dataclass
class Watch:
    """What the browser did that it should not have: dialogs opened, CSP violations."""

    dialogs: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


VIOLATION_LISTENER = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def watched_context(browser: Any, *, enforce_csp: bool) -> tuple[BrowserContext, Watch]:
    context = browser.new_context(bypass_csp=not enforce_csp)
    context.set_default_timeout(30_000)
    watch = Watch()

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            watch.violations.append(message.text)

    context.on("dialog", on_dialog)
    context.on("console", on_console)
    context.add_init_script(VIOLATION_LISTENER)
    return context, watch


def assert_inert(page: Page, watch: Watch, where: str) -> None:
    page.wait_for_load_state("networkidle")
    assert page.evaluate("window.__pwned") is None, (where, page.evaluate("window.__pwned"))
    assert watch.dialogs == [], where
    assert page.locator("a[href^='javascript:' i]").count() == 0, where
    assert page.locator("body img[src='x'], body svg[onload], body iframe").count() == 0, where


def assert_within_policy(page: Page, watch: Watch, where: str) -> None:
    page.wait_for_load_state("networkidle")
    seen = page.evaluate("window.__violations")
    assert seen == [], (where, seen)
    assert watch.violations == [], (where, watch.violations)


def upload_all(page: Page, portal: Portal, paths: list[Path]) -> None:
    from playwright.sync_api import expect

    page.goto(f"{portal.url}/documents/")
    page.get_by_label("Files", exact=True).set_input_files([str(path) for path in paths])
    page.get_by_label("Everyone may read", exact=True).check()
    page.get_by_label(GROUP, exact=True).check()
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("[data-upload-results] .badge-ready")).to_have_count(
        len(paths), timeout=120_000
    )


def answer_ids(portal: Portal) -> list[int]:
    with sqlite3.connect(portal.database, timeout=30) as connection:
        rows = connection.execute("SELECT id FROM assistant_answer ORDER BY id").fetchall()
    return [row[0] for row in rows]


def quote_sources_in_reasoning(portal: Portal, answer_id: int) -> None:
    with sqlite3.connect(portal.database, timeout=30) as connection:
        connection.execute(
            "UPDATE assistant_answer SET reasoning = reasoning || ? WHERE id = ?",
            [QUOTED_REASONING, answer_id],
        )


@dataclass
class Hostile:
    """The pages that show the payloads, once they are all in."""

    conversation: str
    passages: list[str]
    fragment: str
    documents: list[str]
    audit_records: list[str]


@pytest.fixture(scope="module")
def hostile(portal: Portal, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Hostile:
    from playwright.sync_api import expect

    folder = tmp_path_factory.mktemp("payloads")
    manage(portal, "adduser", "mallory", "--groups", GROUP)
    files = {
        FILE_NAME: TEXT,
        "osprey.md": MARKDOWN,
        "heron.html": HTML,
    }
    paths = []
    for name, text in files.items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    write_docx(folder / "kestrel.docx")
    paths.append(folder / "kestrel.docx")

    context, _ = watched_context(browser, enforce_csp=False)
    page = context.new_page()
    log_in(page, portal, "admin", ADMIN_PASSWORD)
    upload_all(page, portal, paths)

    page.goto(f"{portal.url}/")
    for question in QUESTIONS:
        answer = ask(page, question)
        expect(answer.locator(".answer-text")).not_to_be_empty(timeout=ANSWER_TIMEOUT_MS)
    conversation = page.url
    first = page.locator("article[data-answer-id]").first
    expect(first.locator(".answer-text")).to_contain_text(script("text-body"))

    first.get_by_text("Add a comment").click()
    first.get_by_label("Comment (optional), sent with your choice above").fill(COMMENT)
    first.get_by_role("button", name="Not helpful", exact=True).click()
    expect(first.locator('[data-role="feedback-status"]')).to_contain_text("saved")

    page.goto(conversation)
    page.locator(".conversation-actions summary").first.click()
    page.get_by_label("New name").first.fill(TITLE)
    page.get_by_role("button", name="Rename").first.click()
    page.wait_for_load_state("networkidle")

    passages = [
        str(link.get_attribute("href"))
        for link in page.locator(".citation-list a").all()
        if link.get_attribute("href")
    ]
    ids = answer_ids(portal)
    quote_sources_in_reasoning(portal, ids[0])

    page.goto(f"{portal.url}/documents/")
    documents = sorted(
        {
            str(link.get_attribute("href"))
            for link in page.locator("a[href^='/documents/']").all()
            if str(link.get_attribute("href")).rstrip("/").split("/")[-1].isdigit()
        }
    )
    page.goto(f"{portal.url}/audit/")
    records = sorted(
        {
            str(link.get_attribute("href"))
            for link in page.locator("a[href^='/audit/']").all()
            if str(link.get_attribute("href")).rstrip("/").split("/")[-1].isdigit()
        },
        key=lambda href: int(href.rstrip("/").split("/")[-1]),
    )
    page.goto(f"{portal.url}{records[-1]}")
    page.get_by_label("Why this record").fill(FLAG_NOTE)
    page.get_by_role("button", name="Flag this record").click()
    page.wait_for_load_state("networkidle")
    context.close()
    assert len(passages) >= len(QUESTIONS), passages
    assert len(documents) >= len(paths), documents
    return Hostile(
        conversation=conversation,
        passages=passages,
        fragment=f"/answers/{ids[0]}/fragment",
        documents=documents,
        audit_records=records,
    )


@pytest.fixture
def unguarded(browser: Any, portal: Portal) -> Iterator[tuple[Page, Watch]]:
    """An administrator's browser that ignores the CSP: only escaping stands in the way."""
    context, watch = watched_context(browser, enforce_csp=False)
    page = context.new_page()
    log_in(page, portal, "admin", ADMIN_PASSWORD)
    yield page, watch
    context.close()


@pytest.fixture
def guarded(browser: Any, portal: Portal) -> Iterator[tuple[Page, Watch]]:
    context, watch = watched_context(browser, enforce_csp=True)
    page = context.new_page()
    yield page, watch
    context.close()


# ---- Tests -------------------------------------------------------------------------------------


@pytest.mark.browser
def test_payloads_in_answers_reasoning_and_sources_show_as_text(
    portal: Portal, hostile: Hostile, unguarded: tuple[Page, Watch]
) -> None:
    from playwright.sync_api import expect

    page, watch = unguarded
    page.goto(hostile.conversation)
    assert_inert(page, watch, "conversation")
    expect(page.locator("h1")).to_contain_text(TITLE)
    expect(page.locator(".conversation-list")).to_contain_text(TITLE)
    thread = page.locator("[data-thread]")
    expect(thread).to_contain_text(QUESTIONS[0])
    expect(thread).to_contain_text(script("text-body"))
    # Markdown is parsed to its text, so raw tags in it are gone; what they held stays text.
    expect(thread).to_contain_text("window.__pwned='md-body'")
    expect(thread).to_contain_text(svg("html-entity").removeprefix('">'))
    expect(thread).to_contain_text(image("docx-body"))
    page.locator("details.reasoning summary").first.click()
    expect(page.locator(".reasoning-text").first).to_contain_text(script("reasoning"))
    page.locator("details.feedback-comment summary").first.click()
    expect(page.locator("textarea[name=comment]").first).to_have_value(COMMENT)
    assert_inert(page, watch, "reasoning panel")

    page.goto(f"{portal.url}{hostile.fragment}")
    expect(page.locator("body")).to_contain_text(script("reasoning"))
    assert_inert(page, watch, "answer fragment")

    for passage in hostile.passages:
        page.goto(f"{portal.url}{passage}")
        expect(page.locator("#cited")).not_to_be_empty()
        assert_inert(page, watch, passage)

    # The same passages previewed on a citation and opened in the side panel.
    page.goto(hostile.conversation)
    for link in page.locator(".citation-list a").all():
        link.hover()
        expect(page.get_by_role("tooltip")).not_to_be_empty()
        link.click()
        expect(page.locator("[data-passage-panel] .chunk-cited")).not_to_be_empty()
        assert_inert(page, watch, "passage panel")
        page.get_by_role("button", name="Close").click()

    page.goto(f"{portal.url}/search/?q={script('search-only')}")
    assert_inert(page, watch, "search page")
    page.goto(f"{portal.url}/search/?q=Heron+archive+vault")
    expect(page.locator(".search-result").first).to_be_visible()
    assert_inert(page, watch, "search results")


@pytest.mark.browser
def test_payloads_in_documents_groups_feedback_and_audit_pages_show_as_text(
    portal: Portal, hostile: Hostile, unguarded: tuple[Page, Watch]
) -> None:
    from playwright.sync_api import expect

    page, watch = unguarded
    page.goto(f"{portal.url}/documents/")
    expect(page.locator("main")).to_contain_text(GROUP)
    # Chromium sends the double quotes of a file name as %22; the rest arrives as typed.
    expect(page.locator("main")).to_contain_text("<img src=x onerror=%22window.__pwned='file-name'")
    assert_inert(page, watch, "documents list")
    page.goto(f"{portal.url}/documents/?q={image('search')}")
    expect(page.locator("#document-search")).to_have_value(image("search"))
    assert_inert(page, watch, "documents search")
    for document in hostile.documents:
        page.goto(f"{portal.url}{document}")
        assert_inert(page, watch, document)
        chunks = page.locator("a[data-chunks-for-version]").first
        if chunks.count():
            chunks.click()
            page.wait_for_load_state("networkidle")
            assert_inert(page, watch, f"{document} chunks")

    page.goto(f"{portal.url}/feedback/")
    expect(page.locator("main")).to_contain_text(COMMENT)
    assert_inert(page, watch, "feedback")

    page.goto(f"{portal.url}/audit/?q={script('audit-search')}")
    assert_inert(page, watch, "audit search")
    page.goto(f"{portal.url}/audit/")
    assert_inert(page, watch, "audit list")
    for record in hostile.audit_records:
        page.goto(f"{portal.url}{record}")
        assert_inert(page, watch, record)
    expect(page.locator("main")).to_contain_text(FLAG_NOTE)

    for admin_page in ("/admin/ingestion/document/", "/admin/auth/group/"):
        page.goto(f"{portal.url}{admin_page}")
        assert_inert(page, watch, admin_page)


@pytest.mark.browser
def test_the_pages_run_within_the_content_security_policy(
    portal: Portal, hostile: Hostile, guarded: tuple[Page, Watch], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    page, watch = guarded
    page.goto(f"{portal.url}/accounts/login/")
    assert_within_policy(page, watch, "login")
    log_in(page, portal, "admin", ADMIN_PASSWORD)
    assert_within_policy(page, watch, "home")

    # The portal's own scripts work under the policy: an answer streams in and is rendered.
    page.goto(hostile.conversation)
    answer = ask(page, "What is the Falcon budget owner according to the ledger?")
    expect(answer.locator(".answer-text")).to_contain_text(image("text-owner"))
    assert_within_policy(page, watch, "asking")

    note = tmp_path / "plover.txt"
    note.write_text("The Plover canteen opens at seven.\n")
    page.goto(f"{portal.url}/documents/")
    page.get_by_label("Files", exact=True).set_input_files(str(note))
    page.get_by_label("Everyone may read", exact=True).check()
    page.get_by_role("button", name="Upload", exact=True).click()
    page.locator("[data-upload-results] .badge-ready").wait_for(timeout=90_000)
    assert_within_policy(page, watch, "uploading")

    pages = [
        hostile.conversation,
        *hostile.passages[:2],
        *hostile.documents[:2],
        "/feedback/",
        "/audit/",
        *hostile.audit_records[-2:],
        "/admin/",
        "/admin/ingestion/document/",
        "/admin/auth/user/1/change/",
    ]
    for address in pages:
        url = address if address.startswith("http") else f"{portal.url}{address}"
        page.goto(url)
        assert_within_policy(page, watch, address)

    # And the policy is really enforced: a script slipped into the page is refused.
    page.evaluate(
        """() => {
          const injected = document.createElement("script");
          injected.textContent = "window.__inline = 1";
          document.body.append(injected);
        }"""
    )
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__inline") is None
    assert any("script-src" in seen for seen in page.evaluate("window.__violations"))
