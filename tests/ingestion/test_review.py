"""Document owners and review dates: set on the page and in the API, listed when overdue, and
shown next to every citation of an overdue document (portal, REST API, OpenAI endpoint)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from assistant.api import CITATION_FIELDS, done_with_review
from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation
from assistant.openai_api import sources_text
from audit.hashing import parse_details
from audit.models import AuditEvent, AuditRecord
from ingestion.models import Chunk, Document, DocumentVersion
from ingestion.review import citations_with_review, is_overdue
from tests.accounts.api_tokens import api_token

pytestmark = [pytest.mark.django_db]

TEXT = "Employees book train travel in second class for journeys under four hours."


def make_user(name: str, *groups: str) -> User:
    user = User.objects.create_user(name, password="a-long-password")
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def make_document(title: str, group: str, *, review_by: date | None = None) -> Document:
    document = Document.objects.create(
        title=title, source_path=f"{title.lower()}.md", review_by=review_by
    )
    document.groups.add(Group.objects.get_or_create(name=group)[0])
    version = DocumentVersion.objects.create(
        document=document,
        number=1,
        sha256=f"{document.pk:064d}",
        file=f"documents/{document.pk}.md",
        original_name=f"{title}.md",
        size_bytes=10,
        status="READY",
    )
    Chunk.objects.create(version=version, index=0, text=TEXT, heading=title)
    document.current_version = version
    document.save()
    return document


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def yesterday() -> date:
    return timezone.localdate() - timedelta(days=1)


@pytest.fixture
def dana() -> User:
    return make_user("dana", f"finance{settings.DOCUMENT_ADMIN_GROUP_SUFFIX}")


@pytest.fixture
def travel() -> Document:
    return make_document("Travel policy", "finance")


def test_a_document_is_overdue_the_day_after_its_date() -> None:
    today = timezone.localdate()
    assert not is_overdue(None)
    assert not is_overdue(today)
    assert is_overdue(today - timedelta(days=1))


def test_the_document_page_sets_the_owner_and_the_review_date(dana: User, travel: Document) -> None:
    erin = make_user("erin", "finance")
    client = logged_in(dana)
    url = reverse("ingestion:document-review", args=[travel.pk])

    response = client.post(url, {"owner": "erin", "review_by": yesterday().isoformat()})

    assert response.status_code == 302
    travel.refresh_from_db()
    assert travel.owner == erin
    assert travel.review_by == yesterday()
    page = client.get(reverse("ingestion:document-detail", args=[travel.pk])).content.decode()
    assert "overdue for review" in page
    assert 'value="erin"' in page

    [record] = AuditRecord.objects.filter(event=AuditEvent.DOCUMENT_REVIEW_CHANGED)
    details = parse_details(record.details)
    assert record.actor == dana
    assert details["review"] == {
        "owner": {"id": erin.pk, "username": "erin"},
        "review_by": yesterday().isoformat(),
    }
    assert details["review_before"] == {"owner": None, "review_by": None}
    # The document admin reads the record of their document in the audit log.
    audit_list = client.get(reverse("audit:record-list")).content.decode()
    assert "Changed the owner or review date of “Travel policy”" in audit_list
    # Saving the same again changes nothing, so nothing more is recorded.
    client.post(url, {"owner": "erin", "review_by": yesterday().isoformat()})
    assert AuditRecord.objects.filter(event=AuditEvent.DOCUMENT_REVIEW_CHANGED).count() == 1

    refused = client.post(url, {"owner": "nobody-here", "review_by": ""}, follow=True)
    assert "There is no active user named “nobody-here”" in refused.content.decode()
    travel.refresh_from_db()
    assert travel.owner == erin

    client.post(url, {"owner": "", "review_by": ""})
    travel.refresh_from_db()
    assert travel.owner is None
    assert travel.review_by is None


def test_the_documents_page_lists_what_is_overdue(dana: User, travel: Document) -> None:
    make_document("Expenses", "finance", review_by=timezone.localdate())
    overdue = make_document("Old rules", "finance", review_by=yesterday())
    make_document("Sales prices", "sales", review_by=yesterday())
    client = logged_in(dana)

    page = client.get(reverse("ingestion:document-list"))
    assert [d.title for d in page.context["overdue"]] == ["Old rules"]
    body = page.content.decode()
    assert "Overdue for review (1)" in body
    assert "Sales prices" not in body

    filtered = client.get(reverse("ingestion:document-list") + "?review=overdue")
    assert [row.document for row in filtered.context["listing"].rows] == [overdue]


def test_the_api_sets_and_shows_the_owner_and_the_review_date(dana: User, travel: Document) -> None:
    make_user("erin", "finance")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token(dana)}")
    url = f"/api/documents/{travel.pk}/"

    changed = api.patch(url, {"owner": "erin", "review_by": "2020-01-31"}, format="json")
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["owner"] == "erin"
    assert body["review_by"] == "2020-01-31"
    assert body["review_overdue"] is True
    assert [g["name"] for g in body["groups"]] == ["finance"]

    kept = api.patch(url, {"review_by": None}, format="json").json()
    assert kept["owner"] == "erin"
    assert kept["review_by"] is None
    assert kept["review_overdue"] is False

    unknown = api.patch(url, {"owner": "mallory"}, format="json")
    assert unknown.status_code == 400
    assert "mallory" in unknown.json()["detail"]
    assert api.patch(url, {}, format="json").status_code == 400

    api.patch(url, {"review_by": "2020-01-31"}, format="json")
    listed = api.get("/api/documents/?review=overdue").json()
    assert [d["id"] for d in listed["results"]] == [travel.pk]


def cited_answer(user: User, document: Document) -> Answer:
    chunk = Chunk.objects.get(version=document.current_version)
    citation = {
        "n": 1,
        "point_id": str(chunk.point_id),
        "document_id": document.pk,
        "version_id": chunk.version_id,
        "chunk_index": 0,
        "source": document.source_path,
        "title": document.title,
        "page": None,
        "heading": chunk.heading,
        "text": chunk.text,
        "score": 0.9,
    }
    return Answer.objects.create(
        conversation=Conversation.objects.create(user=user, title="Travel"),
        user=user,
        question="How do I travel?",
        searched_query="travel",
        answer="By train in second class [1].",
        status=AnswerStatus.ANSWERED,
        mode=AnswerMode.EXTRACTIVE,
        passages=[citation],
        citations=[citation],
    )


def test_citations_of_an_overdue_document_say_so_in_the_portal(travel: Document) -> None:
    erin = make_user("erin", "finance")
    answer = cited_answer(erin, travel)
    client = logged_in(erin)
    fragment = reverse("assistant:answer-fragment", args=[answer.pk])
    assert "overdue for review" not in client.get(fragment).content.decode()

    Document.objects.filter(pk=travel.pk).update(review_by=date(2020, 1, 31))

    assert "overdue for review since 2020-01-31" in client.get(fragment).content.decode()
    page = client.get(reverse("assistant:conversation", args=[answer.conversation_id]))
    assert "overdue for review since 2020-01-31" in page.content.decode()
    # The stored answer is not touched: the warning is read when the answer is shown.
    answer.refresh_from_db()
    assert "review_overdue" not in answer.citations[0]


def test_citations_in_the_apis_carry_the_review_state_and_keep_their_keys(
    travel: Document,
) -> None:
    erin = make_user("erin", "finance")
    answer = cited_answer(erin, travel)
    Document.objects.filter(pk=travel.pk).update(review_by=date(2020, 1, 31))
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token(erin)}")

    detail = api.get(f"/api/assistant/conversations/{answer.conversation_id}").json()
    [citation] = detail["answers"][0]["citations"]
    assert set(citation) == set(CITATION_FIELDS)
    assert {"n", "source", "title", "text", "document_id", "point_id"} <= set(citation)
    assert citation["review_by"] == "2020-01-31"
    assert citation["review_overdue"] is True

    done = async_to_sync(done_with_review)({"citations": answer.citations})
    assert done["citations"][0]["review_overdue"] is True
    assert "(overdue for review since 2020-01-31)" in sources_text(done["citations"])

    Document.objects.filter(pk=travel.pk).update(review_by=None)
    [fresh] = citations_with_review(answer.citations)
    assert fresh["review_by"] is None
    assert fresh["review_overdue"] is False
    assert "overdue" not in sources_text([fresh])
