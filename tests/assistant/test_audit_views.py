"""The auditors' pages: who may open them, what they show, flags, exports, and their own record."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts.context_processors import roles
from audit.ledger import ledger_append
from audit.models import AuditEvent, AuditFlag, AuditRecord
from ingestion.ledger_details import document_act_details
from ingestion.models import Chunk, Document, DocumentVersion

pytestmark = [pytest.mark.django_db]

VERIFIER = Path(settings.BASE_DIR) / "deploy" / "verify_audit_export.py"
PASSAGE_TEXT = "Employees stay within the nightly limit of 180 euros."
# The travel document is read by "travel"; members of "travel-admins" manage it.
TRAVEL_ADMINS = ("travel-admins",)


def make_user(name: str, *, groups: tuple[str, ...] = (), **flags: Any) -> User:
    user = User.objects.create_user(name, password="a-long-password", **flags)
    for group_name in groups:
        user.groups.add(Group.objects.get_or_create(name=group_name)[0])
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def auditor() -> User:
    return make_user("audrey", groups=(settings.AUDITORS_GROUP,))


@pytest.fixture
def travel_document() -> tuple[Document, DocumentVersion, Chunk]:
    document = Document.objects.create(title="Travel policy", source_path="travel.md")
    document.groups.add(Group.objects.get_or_create(name="travel")[0])
    version = DocumentVersion.objects.create(
        document=document,
        number=1,
        sha256="a" * 64,
        file="documents/travel.md",
        original_name="travel.md",
        size_bytes=120,
        status="READY",
    )
    chunk = Chunk.objects.create(version=version, index=0, point_id=uuid.uuid4(), text=PASSAGE_TEXT)
    document.current_version = version
    document.save()
    return document, version, chunk


def record_answer(
    user: User,
    chunk: Chunk,
    *,
    question: str = "What is the hotel limit?",
    status: str = "answered",
    model: str = "deepseek-r1",
) -> AuditRecord:
    version = chunk.version
    details = {
        "question": question,
        "searched_query": "hotel nightly limit",
        "passages": [
            {
                "n": 1,
                "rank": 1,
                "point_id": str(chunk.point_id),
                "document_id": version.document_id,
                "version_id": version.pk,
                "title": version.document.title,
                "heading": "Hotels",
                "page": 2,
                "score": 0.91,
                "text": chunk.text,
            }
        ],
        "prompt": [{"role": "user", "content": f"Answer only from the sources.\n[1] {chunk.text}"}],
        "model": model,
        "endpoint": "http://vllm-1:8000/v1",
        "reasoning": "The first source gives the nightly limit.",
        "answer": "Hotels are paid up to 180 euros a night [1]." if status == "answered" else "",
        "citations": [1] if status == "answered" else [],
        "status": status,
        "first_token_ms": 350.0,
        "total_ms": 2100.0,
        "error": "",
    }
    with transaction.atomic():
        return ledger_append(event=AuditEvent.ANSWER, actor=user, details=details)


PAGES = [
    ("get", "audit:record-list", False),
    ("get", "audit:record-detail", True),
    ("get", "audit:record-export", False),
    ("post", "audit:record-flag", True),
]
# Document admins read the audit pages, but an answer record is not theirs to see or flag.
DOCUMENT_ADMIN_ON_AN_ANSWER = {
    "audit:record-list": 200,
    "audit:record-detail": 404,
    "audit:record-export": 200,
    "audit:record-flag": 403,
}


@pytest.mark.parametrize(("method", "name", "takes_record"), PAGES)
@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("anonymous", 302),
        ("employee", 403),
        ("document admin", None),
        ("auditor", 200),
        ("superuser", 200),
    ],
)
def test_each_role_opens_the_audit_pages_it_may(
    method: str,
    name: str,
    takes_record: bool,
    role: str,
    expected: int | None,
    travel_document: tuple[Document, DocumentVersion, Chunk],
) -> None:
    employee = make_user("erin")
    record = record_answer(employee, travel_document[2])
    users = {
        "employee": employee,
        "document admin": make_user("dana", groups=TRAVEL_ADMINS),
        "auditor": make_user("audrey", groups=(settings.AUDITORS_GROUP,)),
        "superuser": make_user("root", is_superuser=True),
    }
    client = logged_in(users[role]) if role in users else Client()
    url = reverse(name, args=[record.sequence] if takes_record else [])
    before = AuditRecord.objects.count()
    if expected is None:
        expected = DOCUMENT_ADMIN_ON_AN_ANSWER[name]

    if method == "post":
        response = client.post(url, {"note": "Check the source."})
        expected = 302 if expected == 200 else expected
    else:
        response = client.get(url)

    assert response.status_code == expected
    if role == "anonymous":
        assert response["Location"].startswith(settings.LOGIN_URL)
    if expected in (403, 404):
        assert AuditRecord.objects.count() == before


def test_employees_see_no_audit_records_even_their_own(
    travel_document: tuple[Document, DocumentVersion, Chunk],
) -> None:
    employee = make_user("erin")
    record = record_answer(employee, travel_document[2], question="Secret travel question")
    client = logged_in(employee)
    response = client.get(reverse("audit:record-detail", args=[record.sequence]))
    assert response.status_code == 403
    assert "Secret travel question" not in response.content.decode()


def test_the_list_filters_by_user_status_model_and_words(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    chunk = travel_document[2]
    erin, frank = make_user("erin"), make_user("frank")
    record_answer(erin, chunk, question="What is the hotel limit in Paris?")
    record_answer(frank, chunk, question="Can I fly business class?", status="abstained")
    record_answer(frank, chunk, question="Who approves flights?", status="failed", model="r1-70b")
    client = logged_in(auditor)

    def questions(**query: str) -> str:
        response = client.get(reverse("audit:record-list"), {"event": "answer", **query})
        assert response.status_code == 200
        return response.content.decode()

    page = questions(user="frank")
    assert "Can I fly business class?" in page
    assert "hotel limit in Paris" not in page
    page = questions(status="abstained")
    assert "Can I fly business class?" in page
    assert "Who approves flights?" not in page
    page = questions(model="r1-70b")
    assert "Who approves flights?" in page
    assert "business class" not in page
    page = questions(q="Paris")
    assert "hotel limit in Paris" in page
    assert "Who approves flights?" not in page
    assert "3 records" in questions()


def test_the_list_counts_and_shows_the_same_records_the_first_one_included(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    erin = make_user("erin")
    for number in range(3):
        record_answer(erin, travel_document[2], question=f"Question {number}")
    client = logged_in(auditor)
    sequences = list(AuditRecord.objects.values_list("sequence", flat=True))

    html = client.get(reverse("audit:record-list")).content.decode()

    assert f"{len(sequences)} records." in html
    for sequence in sequences:
        assert f'href="{reverse("audit:record-detail", args=[sequence])}"' in html
    # Opening the list adds a record of the look; it is not on the page counted before it.
    look = AuditRecord.objects.order_by("-sequence").first()
    assert look is not None
    assert look.sequence not in sequences
    assert f'href="{reverse("audit:record-detail", args=[look.sequence])}"' not in html


def test_the_list_filters_by_document_date_and_flag_and_sorts(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    document, _, chunk = travel_document
    erin = make_user("erin")
    cited = record_answer(erin, chunk, question="Cited question")
    record_answer(erin, chunk, question="Abstained question", status="abstained")
    flagged = record_answer(erin, chunk, question="Flagged question")
    client = logged_in(auditor)
    client.post(reverse("audit:record-flag", args=[flagged.sequence]), {"note": "Wrong figure."})
    list_url = reverse("audit:record-list")

    by_document = client.get(list_url, {"document": str(document.pk), "event": "answer"})
    assert "Cited question" in by_document.content.decode()
    assert "Abstained question" not in by_document.content.decode()

    only_flagged = client.get(list_url, {"flagged": "yes", "event": "answer"}).content.decode()
    assert "Flagged question" in only_flagged
    assert "Cited question" not in only_flagged

    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert "Cited question" not in client.get(list_url, {"since": tomorrow}).content.decode()
    today = timezone.localdate().isoformat()
    dated = client.get(list_url, {"since": today, "until": today, "event": "answer"})
    assert "Cited question" in dated.content.decode()

    oldest_first = client.get(list_url, {"event": "answer", "sort": "sequence"}).content.decode()
    assert oldest_first.index("Cited question") < oldest_first.index("Flagged question")
    newest_first = client.get(list_url, {"event": "answer"}).content.decode()
    assert newest_first.index("Flagged question") < newest_first.index("Cited question")
    assert cited.sequence < flagged.sequence


def test_the_record_page_shows_what_the_model_saw_and_said(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    erin = make_user("erin")
    record = record_answer(erin, travel_document[2])
    later = record_answer(erin, travel_document[2], question="A later question")
    page = logged_in(auditor).get(reverse("audit:record-detail", args=[record.sequence]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "What is the hotel limit?" in html
    assert "The first source gives the nightly limit." in html
    assert '<a href="#passage-1">[1]</a>' in html
    assert 'id="passage-1"' in html
    assert PASSAGE_TEXT in html
    assert "Answer only from the sources." in html
    assert "deepseek-r1" in html
    assert "2100 ms" in html
    assert "Unchanged" in html
    assert "intact" in html
    assert reverse("audit:record-detail", args=[later.sequence]) in html


def test_the_record_page_says_when_a_passage_s_document_changed_or_was_deleted(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    document, _, chunk = travel_document
    record = record_answer(make_user("erin"), chunk)
    client = logged_in(auditor)
    detail_url = reverse("audit:record-detail", args=[record.sequence])

    newer = DocumentVersion.objects.create(
        document=document,
        number=2,
        sha256="b" * 64,
        file="documents/travel-2.md",
        original_name="travel.md",
        size_bytes=130,
        status="READY",
    )
    document.current_version = newer
    document.save()
    assert "answers now use version 2" in client.get(detail_url).content.decode()

    document.deleted_at = timezone.now()
    document.save()
    assert "Its document was deleted on" in client.get(detail_url).content.decode()


def test_flagging_adds_a_record_and_keeps_the_flagged_one_unchanged(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    record = record_answer(make_user("erin"), travel_document[2])
    client = logged_in(auditor)
    url = reverse("audit:record-flag", args=[record.sequence])

    refused = client.post(url, {"note": ""})
    assert refused.status_code == 302
    assert not AuditFlag.objects.exists()

    response = client.post(url, {"note": "The limit was raised in March."}, follow=True)
    assert "was flagged" in response.content.decode()
    flag = AuditFlag.objects.get()
    assert flag.target_id == record.sequence
    assert flag.record.actor_username == "audrey"
    assert AuditRecord.objects.get(sequence=record.sequence).hash == record.hash
    assert "The limit was raised in March." in response.content.decode()


def test_opening_and_exporting_are_recorded_with_the_auditor(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    record = record_answer(make_user("erin"), travel_document[2])
    client = logged_in(auditor)
    client.get(reverse("audit:record-list"), {"status": "answered"})
    client.get(reverse("audit:record-detail", args=[record.sequence]))
    client.get(reverse("audit:record-export"), {"format": "csv"}).getvalue()

    looked = AuditRecord.objects.filter(
        actor_username="audrey", event__startswith="audit."
    ).order_by("sequence")
    assert [(r.event, json.loads(r.details).get("view")) for r in looked] == [
        ("audit.viewed", "list"),
        ("audit.viewed", "record"),
        ("audit.exported", None),
    ]
    assert json.loads(looked[0].details)["filters"]["status"] == "answered"
    assert json.loads(looked[1].details)["sequence"] == record.sequence
    assert json.loads(looked[2].details)["format"] == "csv"


def test_the_export_of_a_filter_verifies_outside_the_application(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk], tmp_path: Path
) -> None:
    chunk = travel_document[2]
    for number in range(3):
        record_answer(make_user(f"user{number}"), chunk, question=f"Question {number}")
    client = logged_in(auditor)
    response = client.get(reverse("audit:record-export"), {"event": "answer", "format": "jsonl"})
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert "attachment" in response["Content-Disposition"]
    export = tmp_path / "answers.jsonl"
    export.write_bytes(response.getvalue())
    lines = export.read_text().splitlines()
    assert [json.loads(line)["details"]["question"] for line in lines] == [
        "Question 0",
        "Question 1",
        "Question 2",
    ]

    checked = subprocess.run(
        [sys.executable, str(VERIFIER), str(export), "--filtered"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
    assert "INTACT" in checked.stdout

    export.write_text("\n".join([lines[0], lines[1].replace("Question 1", "Question 9"), lines[2]]))
    broken = subprocess.run(
        [sys.executable, str(VERIFIER), str(export), "--filtered"], capture_output=True, text=True
    )
    sequence = json.loads(lines[1])["sequence"]
    assert broken.returncode == 1
    assert broken.stdout.strip().splitlines()[-1] == (
        f"BROKEN: record {sequence} was edited: its content does not match its hash"
    )


def test_templates_can_ask_whether_the_user_audits(auditor: User, rf: RequestFactory) -> None:
    request = rf.get("/")
    request.user = auditor
    assert roles(request)["may_read_feedback"]() is True
    request.user = make_user("erin", is_staff=True)
    assert roles(request)["may_read_feedback"]() is False


def upload_record(document: Document, actor: User) -> AuditRecord:
    with transaction.atomic():
        return ledger_append(
            event=AuditEvent.DOCUMENT_UPLOADED,
            actor=actor,
            details=document_act_details(AuditEvent.DOCUMENT_UPLOADED, document),
        )


def test_document_admins_read_the_records_of_documents_and_nothing_else(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    document, _, chunk = travel_document
    admin = make_user("dana", groups=TRAVEL_ADMINS)
    uploaded = upload_record(document, admin)
    answer = record_answer(make_user("erin"), chunk, question="Secret travel question")
    logged_in(auditor).get(reverse("audit:record-detail", args=[answer.sequence]))
    client = logged_in(admin)

    page = client.get(reverse("audit:record-detail", args=[uploaded.sequence]))
    assert page.status_code == 200
    assert "Uploaded “Travel policy”" in page.content.decode()
    assert "Flag this record" not in page.content.decode()

    hidden = client.get(reverse("audit:record-detail", args=[answer.sequence]))
    assert hidden.status_code == 404
    assert "Secret travel question" not in hidden.content.decode()

    listed = client.get(reverse("audit:record-list")).content.decode()
    assert "Uploaded “Travel policy”" in listed
    assert "Secret travel question" not in listed
    assert "audrey" not in listed
    assert "Secret travel question" not in (
        client.get(reverse("audit:record-list"), {"q": "Secret"}).content.decode()
    )

    exported = client.get(reverse("audit:record-export"), {"format": "jsonl"}).getvalue()
    events = [json.loads(line)["event"] for line in exported.decode().splitlines()]
    assert events == ["document.uploaded"]
    csv_export = client.get(reverse("audit:record-export"), {"format": "csv"}).getvalue()
    assert b"Secret travel question" not in csv_export
    assert b"document.uploaded" in csv_export


def test_what_document_admins_open_is_recorded_like_an_auditor_s(
    travel_document: tuple[Document, DocumentVersion, Chunk],
) -> None:
    admin = make_user("dana", groups=TRAVEL_ADMINS)
    uploaded = upload_record(travel_document[0], admin)
    client = logged_in(admin)
    client.get(reverse("audit:record-list"))
    client.get(reverse("audit:record-detail", args=[uploaded.sequence]))
    client.get(reverse("audit:record-export"), {"format": "csv"}).getvalue()

    looked = AuditRecord.objects.filter(actor_username="dana", event__startswith="audit.")
    assert [(r.event, json.loads(r.details).get("view")) for r in looked.order_by("sequence")] == [
        ("audit.viewed", "list"),
        ("audit.viewed", "record"),
        ("audit.exported", None),
    ]


def test_document_admins_do_not_read_the_records_of_other_groups_documents(
    travel_document: tuple[Document, DocumentVersion, Chunk],
) -> None:
    pricing = Document.objects.create(title="Pricing 2027", source_path="pricing.md")
    pricing.groups.add(Group.objects.get_or_create(name="sales")[0])
    travel_record = upload_record(travel_document[0], make_user("root", is_superuser=True))
    pricing_record = upload_record(pricing, User.objects.get(username="root"))
    client = logged_in(make_user("dana", groups=TRAVEL_ADMINS))

    assert (
        client.get(reverse("audit:record-detail", args=[travel_record.sequence])).status_code == 200
    )
    hidden = client.get(reverse("audit:record-detail", args=[pricing_record.sequence]))
    assert hidden.status_code == 404
    listed = client.get(reverse("audit:record-list")).content.decode()
    assert "Travel policy" in listed
    assert "Pricing 2027" not in listed
    exported = client.get(reverse("audit:record-export"), {"format": "jsonl"}).getvalue()
    assert b"Pricing 2027" not in exported


def test_staff_flag_alone_opens_no_audit_page(
    travel_document: tuple[Document, DocumentVersion, Chunk],
) -> None:
    staff = logged_in(make_user("sam", is_staff=True))
    assert staff.get(reverse("audit:record-list")).status_code == 403


def test_the_record_page_is_compact_and_says_at_the_top_whether_it_is_flagged(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    record = record_answer(make_user("erin"), travel_document[2])
    client = logged_in(auditor)
    detail_url = reverse("audit:record-detail", args=[record.sequence])

    html = client.get(detail_url).content.decode()
    assert html.index("Not flagged") < html.index('id="chain-heading"')
    # Each passage folded to its first line; the prompt folded as a whole.
    assert '<details class="chunk" id="passage-1">' in html
    assert '<span class="first-line">Employees stay within the nightly limit' in html
    assert '<details class="prompt">' in html
    assert "<details open" not in html

    client.post(reverse("audit:record-flag", args=[record.sequence]), {"note": "Wrong figure."})
    html = client.get(detail_url).content.decode()
    top = html[: html.index('id="chain-heading"')]
    assert "Flagged" in top
    assert "1 flag; the last by audrey: “Wrong figure.”" in top


def test_the_list_shows_the_records_of_one_conversation(
    auditor: User, travel_document: tuple[Document, DocumentVersion, Chunk]
) -> None:
    from assistant.models import Answer, Conversation

    erin = make_user("erin")
    conversation = Conversation.objects.create(user=erin, title="Hotels")
    answer = Answer.objects.create(
        conversation=conversation, user=erin, question="Q", searched_query="Q", status="answered"
    )
    with transaction.atomic():
        ledger_append(
            event=AuditEvent.ANSWER,
            actor=erin,
            details={"answer_id": answer.id, "question": "In the conversation", "status": "x"},
        )
    record_answer(erin, travel_document[2], question="Elsewhere")

    page = logged_in(auditor).get(reverse("audit:record-list"), {"conversation": conversation.id})

    assert "In the conversation" in page.content.decode()
    assert "Elsewhere" not in page.content.decode()
