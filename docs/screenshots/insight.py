"""Screenshots of the usage and knowledge-gap pages, on a laptop and on a phone.

    .venv/bin/python docs/screenshots/insight.py

(`--seed [--measure]` only fills the database named by the environment; the browser tests of
these pages, tests/assistant/test_insight_browser.py, start from it.)

Starts a throw-away standalone server (SQLite and files in a temporary folder), fills it with
a month of made-up questions, answers, feedback and documents, logs in as an administrator in
Debian's Chromium driven by Playwright (as tests/assistant/test_browser.py does; no browser
is downloaded) and writes usage-{laptop,phone}.png and gaps-{laptop,phone}.png next to this
file. The made-up data is the same at every run.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "admin", "screenshots-only-password"
VIEWPORTS = {"laptop": (1366, 768), "phone": (390, 844)}
PAGES = {"usage": "/insight/usage/", "gaps": "/insight/gaps/"}

DOCUMENTS = [
    ("Travel policy", "finance", "policies/travel.md",
     "Employees book train travel in second class for journeys under four hours. Flights "
     "need approval from a director. The travel budget for 2031 is 48,000 euros."),
    ("Expenses handbook", "finance", "handbooks/expenses.md",
     "Meals are reimbursed up to 40 euros a day with receipts. Claims are filed within 30 "
     "days of the trip."),
    ("IT security guide", "it", "it/security.md",
     "Passwords are at least 14 characters long. Lost laptops are reported to the service "
     "desk within one hour."),
    ("Onboarding checklist", "hr", "hr/onboarding.md",
     "New employees receive their badge on the first day. The buddy programme lasts 90 days."),
    ("Kestrel price list", "sales", "sales/prices-2031.md",
     "The list price of the Kestrel licence rises to 1,200 euros per seat. Discounts above "
     "20 percent need approval from sales leadership."),
    ("Parking rules", "hr", "hr/parking.md", "Staff park in bays C and D. Visitors use bay A."),
]  # fmt: skip
ANSWERED = [
    ("How much is the travel budget for 2031?", 0,
     "The travel budget for 2031 is 48,000 euros [1]."),
    ("Do flights need approval?", 0, "Yes: flights need approval from a director [1]."),
    ("Can I take the train in first class?", 0,
     "Train travel is booked in second class for journeys under four hours [1]."),
    ("How much can I spend on meals when travelling?", 1,
     "Meals are reimbursed up to 40 euros a day with receipts [1]."),
    ("When do I have to file an expense claim?", 1,
     "Claims are filed within 30 days of the trip [1]. Late claims are paid twice a year [1]."),
    ("How long must a password be?", 2, "Passwords are at least 12 characters long [1]."),
    ("What do I do if I lose my laptop?", 2,
     "Report it to the service desk within one hour [1]."),
    ("When do new people get their badge?", 3,
     "New employees receive their badge on the first day [1]."),
    ("What does a Kestrel seat cost?", 4,
     "The list price of the Kestrel licence is 1,200 euros per seat [1]."),
]  # fmt: skip
GAPS = [
    "How many vacation days do I get per year?",
    "What is my annual leave allowance?",
    "How many days of paid holiday do employees get?",
    "Can I carry over unused holiday to next year?",
    "How do I reset my VPN token?",
    "The VPN token app says my token expired, what now?",
    "Is there a company gym discount?",
    "Who do I call about a broken office chair?",
]
PEOPLE = [("erin", "finance"), ("farid", "finance"), ("hana", "hr"), ("ivo", "it"),
          ("sam", "sales"), ("tess", "sales"), ("uma", "hr"), ("wes", "it")]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(*, measure: bool) -> None:
    """Runs inside Django (see main): the people, documents, answers and feedback; with
    `measure`, how well each answer is supported too (else the usage page measures them)."""
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from assistant.answer_record import answer_record_details
    from assistant.insight.support import supports_fill
    from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation, Feedback
    from audit.ledger import ledger_append
    from audit.models import AuditEvent
    from ingestion.access import access_tags_for_user
    from ingestion.models import Chunk, Document, DocumentVersion

    call_command("migrate", interactive=False, verbosity=0)
    User.objects.create_superuser(USER, email="", password=PASSWORD)
    chunks = []
    for title, group_name, path, text in DOCUMENTS:
        document = Document.objects.create(title=title, source_path=path)
        document.groups.add(Group.objects.get_or_create(name=group_name)[0])
        version = DocumentVersion.objects.create(
            document=document,
            number=1,
            sha256=uuid.uuid5(uuid.NAMESPACE_URL, path).hex * 2,
            file=f"documents/{Path(path).name}",
            original_name=Path(path).name,
            size_bytes=len(text),
            status="READY",
        )
        chunks.append(Chunk.objects.create(version=version, index=0, text=text, heading=title))
        document.current_version = version
        document.save()
    people = []
    for name, group_name in PEOPLE:
        person = User.objects.create_user(name, password=PASSWORD)
        person.groups.add(Group.objects.get(name=group_name))
        people.append(person)

    def passage(chunk: Chunk, n: int) -> dict[str, Any]:
        document = chunk.version.document
        return {
            "n": n, "point_id": str(chunk.point_id), "document_id": document.pk,
            "version_id": chunk.version_id, "chunk_index": 0, "source": document.source_path,
            "title": document.title, "page": None, "heading": chunk.heading,
            "text": chunk.text, "score": 0.8,
        }  # fmt: skip

    chance = random.Random(17)
    now = timezone.now()
    for day in range(30):
        for _ in range(chance.randint(4 + day // 3, 9 + day // 2)):
            person = chance.choice(people)
            roll = chance.random()
            found: list[Chunk] = []
            cited: list[int] = []
            if roll < 0.72:
                question, index, text = chance.choice(ANSWERED)
                found, cited, status = [chunks[index]], [1], AnswerStatus.ANSWERED
            elif roll < 0.9:
                question, status = chance.choice(GAPS), AnswerStatus.ABSTAINED
                text = "NOT IN DOCUMENTS: none of the passages answers this."
                found = [chance.choice(chunks)]
            elif roll < 0.95:
                question, status = chance.choice(ANSWERED)[0], AnswerStatus.FAILED
                text = ""
            else:
                question, index, text = chance.choice(ANSWERED)
                found, cited, status = [chunks[index]], [1], AnswerStatus.CUT_OFF
                text = text.split(" [")[0]
            passages = [passage(chunk, n) for n, chunk in enumerate(found, start=1)]
            answer = Answer.objects.create(
                conversation=Conversation.objects.create(user=person, title=question[:60]),
                user=person,
                question=question,
                searched_query=question,
                answer=text,
                status=status,
                mode=AnswerMode.LLM,
                passages=passages,
                citations=[passages[n - 1] for n in cited],
                first_token_ms=None if status == "failed" else chance.lognormvariate(6.6, 0.35),
                model_name="deepseek-r1",
            )
            moment = now - timedelta(days=29 - day, minutes=chance.randint(0, 600))
            Answer.objects.filter(pk=answer.pk).update(created_at=moment)
            with transaction.atomic():
                ledger_append(
                    event=AuditEvent.ANSWER,
                    actor=person,
                    details=answer_record_details(
                        answer,
                        access_tags=access_tags_for_user(person),
                        prompt=[],
                        sampling={},
                        usage={},
                    ),
                )
            if status != "failed" and chance.random() < 0.3:
                rating = 1 if status == "answered" and chance.random() < 0.8 else -1
                Feedback.objects.create(answer=answer, user=person, rating=rating)
    if measure:
        # As the server measures each answer once it is recorded.
        supports_fill(Answer.objects.all(), limit=10_000)


def shoot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        for device, (width, height) in VIEWPORTS.items():
            context = browser.new_context(
                viewport={"width": width, "height": height}, has_touch=device == "phone"
            )
            page = context.new_page()
            page.goto(f"{url}/accounts/login/")
            page.get_by_label("User name").fill(USER)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{url}/")
            for name, path in PAGES.items():
                page.goto(f"{url}{path}", timeout=120_000)
                target = out / f"{name}-{device}.png"
                # The whole page down, as wide as the screen: what scrolls sideways is cut.
                tall = page.evaluate("document.documentElement.scrollHeight")
                page.screenshot(
                    path=str(target),
                    full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": tall},
                )
                print(f"wrote {target.relative_to(ROOT)}")
            context.close()
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="insight-screenshots-") as folder:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "ASSISTANT_MODE", "QDRANT_URL", "VLLM_URLS")
        }
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            ASSISTANT_DATA_DIR=str(Path(folder) / "var"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONPATH=str(ROOT),
        )
        # The encoder compiled once for the tests serves here too.
        env.setdefault(
            "EMBEDDING_CACHE_DIR", str(Path(tempfile.gettempdir()) / "assistant-test-encoders")
        )
        subprocess.run(
            [sys.executable, __file__, "--seed", "--measure"], cwd=ROOT, env=env, check=True
        )
        port = free_port()
        log = Path(folder) / "server.log"
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for(url, server, log)
            shoot(url, HERE)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


def _wait_for(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped:\n{log.read_text()}")
        try:
            httpx.get(f"{url}/accounts/login/", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


if __name__ == "__main__":
    if "--seed" in sys.argv:
        seed(measure="--measure" in sys.argv)
    else:
        main()
