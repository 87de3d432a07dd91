"""Screenshots of the portal and of a document page, on a laptop and on a phone.

    .venv/bin/python docs/screenshots/capture_portal.py

Starts a throw-away assistant (its own data folder) with the R1 simulator, uploads a sample
document, asks about it, and saves PNGs next to this file. Uses Playwright's Python package
with Debian's Chromium (/usr/bin/chromium); no browser is downloaded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "a-long-screenshot-password"
SIZES = {"laptop": (1366, 768), "phone": (390, 844)}
HANDBOOK = """# Release handbook

## Deploying

Deploy the Kestrel service with `make deploy ENV=prod` once the smoke tests pass. The
release manager signs the checklist before the deploy window opens on Thursday at 10:00.

| Step | Who | When |
| --- | --- | --- |
| Smoke tests | QA | Wednesday |
| Sign-off | Release manager | Thursday 09:30 |
| Deploy | On-call engineer | Thursday 10:00 |

## Rolling back

If the error rate stays above 2 percent for ten minutes, roll back with
`make rollback ENV=prod` and page the on-call engineer.
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} did not start")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit(f"{url} did not answer in time")


def log_in(page: Page, url: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="assistant-screenshots-"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "ASSISTANT_MODE", "QDRANT_URL", "QDRANT_PATH")
    }
    simulator_port, port = free_port(), free_port()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        ASSISTANT_DATA_DIR=str(folder / "var"),
        ASSISTANT_ADMIN_PASSWORD=PASSWORD,
        HF_HUB_OFFLINE="1",
        VLLM_URLS=f"http://127.0.0.1:{simulator_port}/v1",
    )
    log = (folder / "server.log").open("wb")
    simulator = subprocess.Popen(
        [sys.executable, "manage.py", "r1_simulator", "--port", str(simulator_port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/accounts/login/", server)
        wait_for(f"http://127.0.0.1:{simulator_port}/health", simulator)
        subprocess.run(
            [sys.executable, "manage.py", "adduser", "admin", "--groups", "engineering"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        handbook = folder / "release-handbook.md"
        handbook.write_text(HANDBOOK)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            log_in(page, url)
            page.goto(f"{url}/documents/")
            page.get_by_label("Files", exact=True).set_input_files(str(handbook))
            page.get_by_label("engineering", exact=True).check()
            page.get_by_role("button", name="Upload", exact=True).click()
            page.locator("[data-upload-results] .badge-ready").wait_for(timeout=120_000)
            document_url = page.locator("[data-upload-results] a[data-role=link]").get_attribute(
                "href"
            )
            page.goto(f"{url}/")
            box = page.locator("textarea[name=question]")
            box.fill("How do I deploy Kestrel to production, and who signs off?")
            box.press("Enter")
            page.locator("article[data-answer-id]").wait_for(timeout=120_000)
            conversation_url = page.url
            page.close()

            for size, (width, height) in SIZES.items():
                context = browser.new_context(
                    viewport={"width": width, "height": height}, device_scale_factor=1
                )
                shot = context.new_page()
                log_in(shot, url)
                shot.goto(conversation_url)
                shot.screenshot(path=str(OUT / f"portal-{size}.png"))
                shot.goto(f"{url}{document_url}")
                shot.screenshot(path=str(OUT / f"document-{size}.png"))
                context.close()
            browser.close()
    finally:
        for process in (server, simulator):
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
    print("Saved:", ", ".join(sorted(path.name for path in OUT.glob("*-*.png"))))


if __name__ == "__main__":
    main()
