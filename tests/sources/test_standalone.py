"""Standalone mode: the server's own scheduler carries out a run a command asks for."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.assistant.test_browser import ADMIN_PASSWORD, CHROMIUM, CHROMIUM_ARGS
from tests.ingestion.test_standalone import Server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: each test adds a source of its own name."""
    the_server = Server(tmp_path_factory.mktemp("standalone") / "var")
    the_server.start()
    yield the_server
    the_server.stop()


def test_source_sync_beside_the_running_server_waits_for_its_scheduler(
    server: Server, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "holidays.txt").write_text("Employees accrue twenty-six days of paid holiday.\n")
    added = server.manage("source_add", "share", "--kind", "folder", "--path", str(share),
                          "--everyone")  # fmt: skip
    assert added.returncode == 0, added.stderr
    synced = server.manage("source_sync", "share", "--wait", "--json")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "server carries out the run" in synced.stderr
    result = json.loads(synced.stdout.strip().splitlines()[-1])
    assert (result["status"], result["new"]) == ("ok", 1)

    token = server.manage("apitoken", "create", "admin", "--name", "t", "--scopes", "read")
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token.stdout.strip()}"},
        timeout=30,
    )
    results = client.get("/api/documents/").json()["results"]
    documents = [doc for doc in results if doc["source_path"].startswith(str(share))]
    assert [document["title"] for document in documents] == ["holidays"]
    assert documents[0]["status"] == "READY"


@pytest.mark.browser
def test_an_admin_adds_runs_and_removes_a_source_in_the_browser(
    server: Server, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed: apt-get install chromium")
    sync_api: Any = pytest.importorskip("playwright.sync_api")
    share = tmp_path / "handbook"
    share.mkdir()
    (share / "parking.md").write_text("Visitors park in the north garage.\n")
    (share / "canteen.txt").write_text("The canteen opens at noon.\n")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{server.url}/accounts/login/")
        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("link", name="Sources").click()

        page.get_by_label("Name").fill("handbook")
        page.get_by_label("Path or URLs").fill(str(share))
        page.get_by_label("Everyone may read").check()
        page.get_by_label("Options").fill("exclude=*.tmp")
        page.get_by_role("button", name="Add source").click()
        page.get_by_text("Added source “handbook”").wait_for()

        page.get_by_role("button", name="Run now").click()
        page.get_by_text("A run of “handbook” is under way.").wait_for()
        deadline = time.monotonic() + 60
        while "2 new, 0 changed, 0 unchanged, 0 deleted, 0 failed" not in page.content():
            assert time.monotonic() < deadline, "the run did not finish"
            time.sleep(0.5)
            page.reload()

        page.get_by_role("link", name="Remove…").click()
        page.get_by_label("Delete its documents").check()
        page.get_by_role("button", name="Remove source").click()
        page.get_by_text("Removed source “handbook”; its 2 documents were deleted.").wait_for()
        browser.close()
