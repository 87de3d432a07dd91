"""The portal end to end: the real server, an R1 simulator, and headless Chromium.

One server and one simulator serve the whole module. The browser is Debian's Chromium, driven
by Playwright's Python package through `executable_path`; no browser is downloaded.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.ingestion.test_standalone import ROOT, Server, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN_PASSWORD = "a-long-test-password"
BOB_PASSWORD = "bob-has-a-long-password"
SECRET = "7-4-1-9"
NIGHTJAR = (
    "# Nightjar launch code\n\n"
    f"The launch code for Project Nightjar is {SECRET}. The code was approved by the "
    "security board in March.\n\n"
    "# Nightjar schedule\n\nThe first test flight of Project Nightjar is planned for the "
    "autumn, after the wind tunnel trials.\n"
)
FALCON = (
    "Falcon budget memo.\n\n"
    "The Falcon budget marker is <script>window.__pwned=1</script> in the quarterly ledger.\n"
)
SLOW_ENOUGH_TO_WATCH = "40"
ANSWER_TIMEOUT_MS = 60_000


@dataclass
class Portal:
    server: Server
    simulator: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def database(self) -> Path:
        return Path(self.server.env["ASSISTANT_DATA_DIR"]) / "db.sqlite3"


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the simulator did not start:\n" + log.read_text())


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    folder = tmp_path_factory.mktemp("portal")
    server = Server(folder / "var")
    simulator_port = free_port()
    simulator_log = folder / "simulator.log"
    simulator = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "r1_simulator",
            "--port",
            str(simulator_port),
            "--tokens-per-s",
            SLOW_ENOUGH_TO_WATCH,
        ],
        cwd=ROOT,
        env=server.env,
        stdout=simulator_log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server.env["VLLM_URLS"] = f"http://127.0.0.1:{simulator_port}/v1"
    try:
        server.start()
        _wait_for_health(f"http://127.0.0.1:{simulator_port}/health", simulator, simulator_log)
        for name, groups, password in [("admin", "research", None), ("bob", "sales", BOB_PASSWORD)]:
            arguments = ["adduser", name, "--groups", groups]
            if password:
                arguments.append("--password-stdin")
            created = subprocess.run(
                [sys.executable, "manage.py", *arguments],
                cwd=ROOT,
                env=server.env,
                input=f"{password}\n" if password else "",
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert created.returncode == 0, created.stderr
        yield Portal(server=server, simulator=simulator)
    finally:
        server.stop()
        simulator.terminate()
        simulator.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium")
    sync_api: Any = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(30_000)
    yield context.new_page()
    context.close()


# ---- Steps a person takes ----------------------------------------------------------------------


def log_in(page: Page, portal: Portal, username: str, password: str) -> None:
    page.goto(f"{portal.url}/accounts/login/")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{portal.url}/")


def upload(page: Page, portal: Portal, path: Path, readers: str) -> None:
    page.goto(f"{portal.url}/documents/")
    page.get_by_label("Files", exact=True).set_input_files(str(path))
    page.get_by_label(readers, exact=True).check()
    page.get_by_role("button", name="Upload", exact=True).click()
    page.locator("[data-upload-results] .badge-ready").wait_for(timeout=90_000)


def nightjar_uploaded_and_the_ask_page_open(page: Page, portal: Portal, tmp_path: Path) -> None:
    """As the administrator: Nightjar's page uploaded for its research readers, then asking."""
    log_in(page, portal, "admin", ADMIN_PASSWORD)
    document = tmp_path / "nightjar.md"
    document.write_text(NIGHTJAR)
    upload(page, portal, document, readers="research")
    page.goto(f"{portal.url}/")


def send(page: Page, question: str) -> Any:
    """Type the question and send it with Enter; return the question box."""
    box = page.locator("textarea[name=question]")
    box.fill(question)
    box.press("Enter")
    return box


def watch_the_streamed_text(page: Page) -> None:
    """Record each state of the streaming answer text, to tell a stream from a page swap."""
    page.evaluate(
        """() => {
          window.__streamedStates = [];
          const thread = document.querySelector("[data-thread]");
          new MutationObserver(() => {
            const streaming = thread.querySelector('.is-streaming [data-role="answer"]');
            const states = window.__streamedStates;
            if (streaming && streaming.textContent !== states[states.length - 1]) {
              states.push(streaming.textContent);
            }
          }).observe(thread, { childList: true, subtree: true, characterData: true });
        }"""
    )


def ask(page: Page, question: str) -> Any:
    """Type the question, send it with Enter, and return the answer once it is rendered."""
    from playwright.sync_api import expect

    answers = page.locator("article[data-answer-id]")
    before = answers.count()
    send(page, question)
    expect(answers).to_have_count(before + 1, timeout=ANSWER_TIMEOUT_MS)
    return answers.nth(before)


# ---- Tests -------------------------------------------------------------------------------------


@pytest.mark.browser
def test_an_employee_asks_reads_the_reasoning_and_sources_and_follows_up(
    portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    nightjar_uploaded_and_the_ask_page_open(page, portal, tmp_path)
    watch_the_streamed_text(page)
    expect(page.get_by_label("Your question")).to_be_visible()
    # The label turns into "Follow-up question" once the conversation exists.
    box = send(page, "What is the launch code for Project Nightjar?")
    streaming = page.locator("article.is-streaming")
    expect(streaming.locator('[data-role="reasoning"]')).not_to_be_empty()
    assert streaming.locator("details.reasoning").evaluate("panel => panel.open") is False
    expect(page.get_by_role("button", name="Stop")).to_be_visible()

    answer = page.locator("article[data-answer-id]").first
    answer.wait_for(timeout=ANSWER_TIMEOUT_MS)
    expect(answer.locator(".answer-text")).to_contain_text(SECRET)
    streamed_states = page.evaluate("window.__streamedStates")
    assert len(streamed_states) > 3, streamed_states
    assert SECRET in streamed_states[-1]
    assert re.search(r"/c/\d+/$", page.url)
    expect(box).to_have_value("")

    reasoning = answer.locator(".reasoning-text")
    expect(reasoning).to_be_hidden()
    answer.get_by_text("Reasoning", exact=True).click()
    expect(reasoning).to_be_visible()
    expect(reasoning).not_to_be_empty()

    helpful = answer.get_by_role("button", name="Helpful", exact=True)
    helpful.click()
    expect(answer.locator('[data-role="feedback-status"]')).to_have_text(
        "Thank you: your feedback was saved."
    )
    expect(helpful).to_have_attribute("aria-pressed", "true")

    follow_up = ask(page, "When is the first test flight?")
    expect(follow_up.locator(".answer-text")).to_contain_text("autumn")
    expect(page.locator("[data-conversation-list] a")).to_have_count(1)

    # A citation opens its passage beside the conversation; the panel leads to its own page.
    answer.locator(".answer-text a[href^='/passages/']").first.click()
    panel = page.locator("[data-passage-panel]")
    expect(panel.locator(".chunk-cited")).to_contain_text(SECRET)
    panel.get_by_role("link", name="Open on its own page").click()
    page.wait_for_url(re.compile(r"/passages/\d+/\d+/$"))
    expect(page.locator("#cited")).to_contain_text(SECRET)
    expect(page.get_by_role("link", name="Download nightjar.md")).to_be_visible()
    passage_url = page.url

    page.get_by_role("button", name="Log out").click()
    log_in(page, portal, "bob", BOB_PASSWORD)
    response = page.goto(passage_url)
    assert response is not None
    assert response.status == 404
    assert SECRET not in page.content()


@pytest.mark.browser
def test_a_script_in_a_document_or_answer_never_runs(
    portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    log_in(page, portal, "admin", ADMIN_PASSWORD)
    document = tmp_path / "falcon.txt"
    document.write_text(FALCON)
    upload(page, portal, document, readers="Everyone may read")

    page.goto(f"{portal.url}/")
    answer = ask(page, "What is the Falcon budget marker in the quarterly ledger?")
    expect(answer.locator(".answer-text")).to_contain_text("<script>window.__pwned=1</script>")
    assert page.evaluate("typeof window.__pwned") == "undefined"

    page.reload()
    expect(page.locator(".answer-text").first).to_contain_text("<script>window.__pwned=1</script>")
    assert page.evaluate("typeof window.__pwned") == "undefined"

    page.locator(".citation-list a").first.click()
    expect(page.locator("[data-passage-panel] .chunk-cited")).to_contain_text(
        "<script>window.__pwned=1</script>"
    )
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.get_by_role("link", name="Open on its own page").click()
    expect(page.locator("#cited")).to_contain_text("<script>window.__pwned=1</script>")
    assert page.evaluate("typeof window.__pwned") == "undefined"


@pytest.mark.browser
def test_an_empty_question_is_refused_and_stop_keeps_the_question(
    portal: Portal, page: Page
) -> None:
    from playwright.sync_api import expect

    log_in(page, portal, "admin", ADMIN_PASSWORD)
    box = page.locator("textarea[name=question]")
    box.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Please type a question.")
    expect(page.locator("article")).to_have_count(0)
    question = "Who approved the Nightjar launch code and when?"
    box.fill(question)
    box.press("Enter")
    expect(page.locator('.is-streaming [data-role="reasoning"]')).not_to_be_empty()
    page.get_by_role("button", name="Stop").click()
    expect(page.locator('[data-role="notice"]')).to_contain_text("Stopped")
    expect(box).to_have_value(question)
    expect(page.get_by_role("button", name="Ask")).to_be_enabled()


# ---- A client that goes away -------------------------------------------------------------------


def _logged_in_client(portal: Portal) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=portal.url, timeout=30)
    form = client.get("/accounts/login/").text
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    logged_in = client.post(
        "/accounts/login/",
        data={
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "csrfmiddlewaretoken": token.group(1),
        },
    )
    assert logged_in.status_code == 302, logged_in.text
    return client, client.cookies["csrftoken"]


def _upload_public(client: httpx.Client, csrf: str, name: str, text: str) -> None:
    headers = {"X-CSRFToken": csrf, "Accept": "application/json"}
    stored = client.post(
        "/documents/upload/",
        files=[("files", (name, text.encode(), "text/plain"))],
        data={"everyone": "on"},
        headers=headers,
    )
    assert stored.status_code == 200, stored.text
    version_id = stored.json()["results"][0]["version"]["id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        (state,) = client.get(f"/documents/status.json?ids={version_id}").json()["versions"]
        if state["final"]:
            assert state["status"] == "READY", state
            return
        time.sleep(0.3)
    raise AssertionError("the upload did not finish")


def _saved_answer(database: Path, question: str) -> dict[str, Any]:
    with sqlite3.connect(database, timeout=30) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute(
            "SELECT status, reasoning, answer, error FROM assistant_answer WHERE question = ?",
            [question],
        ).fetchone()
    return dict(row) if row else {}


def test_a_client_that_disconnects_mid_stream_leaves_a_cancelled_answer(portal: Portal) -> None:
    client, csrf = _logged_in_client(portal)
    _upload_public(
        client,
        csrf,
        "heron.txt",
        "The Heron archive keeps expense reports for seven years in the basement vault.\n",
    )
    question = "How long does the Heron archive keep expense reports?"
    reasoning_events = 0
    with client.stream(
        "POST",
        "/ask/stream",
        json={"question": question},
        headers={"X-CSRFToken": csrf, "Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "event: reasoning":
                reasoning_events += 1
            if reasoning_events == 3:
                break
    client.close()

    # The answer is saved in progress before it streams; wait for it to be closed.
    deadline = time.monotonic() + 30
    saved = _saved_answer(portal.database, question)
    while (not saved or saved["status"] == "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        saved = _saved_answer(portal.database, question)
    assert saved["status"] == "cancelled", saved
    # What was produced before the client left is kept with the answer.
    assert saved["reasoning"].strip()
    assert "Stopped" in saved["error"]
    # The server stopped generating: the model was still reasoning when the client left.
    assert saved["answer"] == ""


# ---- Phones, live lists, citations beside the conversation ------------------------------------

PHONE_WIDTH, PHONE_HEIGHT = 360, 740
KESTREL = (
    "# Kestrel release checklist\n\n"
    "Deploy the Kestrel service with `make deploy ENV=prod` after the smoke tests pass.\n\n"
    "The release manager signs the checklist before the deploy window opens on Thursday.\n"
)


def sideways_scroll(page: Page) -> int:
    """How far the page scrolls sideways: 0 when everything fits the viewport."""
    return int(
        page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    )


@pytest.mark.browser
def test_an_upload_appears_in_the_list_live_and_readers_must_be_chosen(
    portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    log_in(page, portal, "admin", ADMIN_PASSWORD)
    document = tmp_path / "kestrel-checklist.md"
    document.write_text(KESTREL)
    page.goto(f"{portal.url}/documents/?q=kestrel")
    expect(page.locator("[data-document-listing]")).to_contain_text("No document matches")

    page.get_by_label("Files", exact=True).set_input_files(str(document))
    page.get_by_role("button", name="Upload", exact=True).click()
    expect(page.locator("[data-role=selection]")).to_have_text(
        "Choose who may read these files: tick at least one group or Everyone."
    )
    expect(page.locator("[data-upload-result]")).to_have_count(0)

    page.get_by_label("research", exact=True).check()
    page.get_by_role("button", name="Upload", exact=True).click()
    page.locator("[data-upload-results] .badge-ready").wait_for(timeout=90_000)
    listing = page.locator("[data-document-listing]")
    expect(listing.get_by_role("link", name="Kestrel release checklist")).to_be_visible()
    expect(listing.locator(".badge-ready")).to_be_visible()
    assert "chunks" not in page.locator("main").inner_text().lower()


@pytest.mark.browser
def test_an_answer_streams_with_citation_links_previews_and_a_side_panel(
    portal: Portal, page: Page, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    nightjar_uploaded_and_the_ask_page_open(page, portal, tmp_path)
    question = "What is the launch code for Project Nightjar?"
    box = send(page, question)

    # While it streams: the box is empty, Ask is off, and [n] is already a link.
    streaming = page.locator("article.is-streaming")
    expect(streaming).to_be_visible()
    expect(box).to_have_value("")
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_disabled()
    expect(streaming.locator("[data-role=answer] a[href^='/passages/']").first).to_be_visible(
        timeout=ANSWER_TIMEOUT_MS
    )

    answer = page.locator("article[data-answer-id]").first
    answer.wait_for(timeout=ANSWER_TIMEOUT_MS)
    # The conversation's title replaces "Ask the knowledge base" without a reload.
    expect(page.locator("#chat-heading")).to_have_text(question)
    expect(page.get_by_role("button", name="Ask", exact=True)).to_be_enabled()

    citation = answer.locator(".answer-text a[href^='/passages/']").first
    citation.hover()
    expect(page.get_by_role("tooltip")).to_contain_text(SECRET)
    citation.focus()
    expect(page.get_by_role("tooltip")).to_contain_text("Nightjar")
    citation.click()
    panel = page.locator("[data-passage-panel]")
    expect(panel.locator(".chunk-cited")).to_contain_text(SECRET)
    assert re.search(r"/c/\d+/$", page.url)
    panel.get_by_role("button", name="Close").click()
    expect(panel).to_have_count(0)

    # The sources tell apart passages of one document by their first words.
    expect(answer.locator(".citation-opening").first).to_contain_text("The launch code")

    answer.get_by_role("button", name="Edit question").click()
    expect(box).to_have_value(question)
    answer.get_by_role("button", name="Ask again").click()
    expect(page.locator("article[data-answer-id]")).to_have_count(2, timeout=ANSWER_TIMEOUT_MS)

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    answer.get_by_role("button", name="Copy answer").click()
    expect(answer.get_by_text("Copied.")).to_be_visible()
    assert SECRET in page.evaluate("navigator.clipboard.readText()")

    # Its audit record reads in a screen or two: passages and prompt folded, flag state on top.
    page.goto(f"{portal.url}/audit/?event=answer")
    page.locator(".audit-table tbody a").first.click()
    expect(page.locator("[data-flag-state]")).to_contain_text("Not flagged")
    expect(page.locator("details#passage-1 .first-line")).to_be_visible()
    expect(page.locator("details#passage-1 .chunk-text")).to_be_hidden()
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 4000, height


@pytest.mark.browser
def test_every_page_fits_a_phone_and_keeps_its_controls_in_reach(
    portal: Portal, browser: Browser, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": PHONE_WIDTH, "height": PHONE_HEIGHT})
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        log_in(page, portal, "admin", ADMIN_PASSWORD)
        document = tmp_path / "kestrel-on-a-phone.md"
        document.write_text(KESTREL)
        upload(page, portal, document, readers="Everyone may read")
        document_url = page.locator("[data-upload-results] a[data-role=link]").first.get_attribute(
            "href"
        )
        page.goto(f"{portal.url}/")
        answer = ask(page, "How is the Kestrel service deployed?")
        conversation_url = page.url
        answer_id = answer.get_attribute("data-answer-id")

        # The answer starts near the top: the conversations fold behind a button.
        expect(page.locator("#conversation-sidebar")).to_be_hidden()
        toggle = page.get_by_role("button", name="Conversations")
        toggle.click()
        expect(page.locator("#conversation-sidebar")).to_be_visible()
        toggle.click()
        expect(page.locator("#conversation-sidebar")).to_be_hidden()
        assert page.locator("textarea[name=question]").bounding_box()["y"] < 1500  # type: ignore[index]

        menu = page.get_by_role("button", name="Menu")
        expect(menu).to_be_visible()
        expect(page.get_by_role("link", name="Audit")).to_be_hidden()
        menu.click()
        expect(page.get_by_role("link", name="Audit")).to_be_visible()
        assert sideways_scroll(page) == 0

        page.goto(f"{portal.url}/audit/?event=answer")
        record_url = page.locator(".audit-table tbody a").first.get_attribute("href")
        pages = {
            "/": ["textarea[name=question]", "button[data-role=ask]"],
            conversation_url.removeprefix(portal.url): ["textarea[name=question]"],
            "/documents/": ["input[type=file]", "form[data-upload-form] button[type=submit]"],
            document_url: ["button.button-primary"],
            "/audit/": ["form[role=search] button[type=submit]"],
            record_url: ["[data-flag-state]"],
            "/feedback/": ["h1"],
            "/accounts/tokens/": ["form button.button-primary"],
            "/search/?q=deploy+Kestrel": ["form[role=search] button", ".search-result"],
            f"/passages/{answer_id}/1/": ["#cited"],
        }
        for address, controls in pages.items():
            assert address is not None
            page.goto(f"{portal.url}{address}")
            assert sideways_scroll(page) == 0, address
            expect(page.get_by_role("button", name="Menu")).to_be_visible()
            for control in controls:
                expect(page.locator(control).first).to_be_visible()
    finally:
        context.close()


@pytest.mark.browser
def test_a_new_token_is_shown_whole_and_can_be_copied(portal: Portal, page: Page) -> None:
    from playwright.sync_api import expect

    log_in(page, portal, "admin", ADMIN_PASSWORD)
    page.goto(f"{portal.url}/accounts/tokens/")
    page.get_by_label("Name").fill("laptop")
    page.get_by_label("Read (search, conversations, documents)").check()
    page.get_by_role("button", name="Create token").click()
    secret_box = page.locator("[data-token-secret]")
    secret = secret_box.input_value()
    assert secret.startswith("kat_")
    # All of it is in view: nothing is cut off at the box's edge.
    assert secret_box.evaluate("box => box.scrollWidth <= box.clientWidth")
    assert secret_box.evaluate("box => box.scrollHeight <= box.clientHeight + 1")

    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret


@pytest.mark.browser
def test_the_pages_follow_a_dark_system_setting_and_have_an_icon(
    portal: Portal, browser: Browser
) -> None:
    context = browser.new_context(color_scheme="dark")
    page = context.new_page()
    try:
        log_in(page, portal, "admin", ADMIN_PASSWORD)
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        text = page.evaluate("getComputedStyle(document.body).color")
        assert background == "rgb(18, 22, 27)"
        assert text == "rgb(227, 231, 236)"
        icon = page.locator("link[rel=icon]").get_attribute("href")
        assert icon is not None
        assert httpx.get(f"{portal.url}{icon}").headers["content-type"].startswith("image/svg")
    finally:
        context.close()
