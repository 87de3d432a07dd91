"""Mail messages end to end: the message and each attachment become documents, one reader set."""

from __future__ import annotations

import io
from email.message import EmailMessage

import docx
import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from assistant.retrieval import passages_for_user
from ingestion.models import Document, VersionStatus
from ingestion.runner import run_pending_once
from ingestion.services import document_delete, document_set_access, document_upload_bytes

pytestmark = pytest.mark.django_db


def travel_memo() -> bytes:
    document = docx.Document()
    document.add_heading("Travel memo", 1)
    document.add_paragraph("Flights under six hours are booked in economy class.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def budget_message(*, memo: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "Ada Lovelace <ada@example.com>"
    message["To"] = "Finance Team <finance@example.com>"
    message["Subject"] = "Q3 travel budget approved"
    message["Date"] = "Tue, 03 Oct 2023 09:15:00 +0200"
    message.set_content("The travel budget for Q3 is approved at 48,000 euros.")
    message.add_alternative(
        "<p>The travel budget for Q3 is approved at <b>48,000 euros</b>.</p>", subtype="html"
    )
    message.add_attachment(
        memo,
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.wordprocessingml.document",
        filename="travel-memo.docx",
    )
    return bytes(message)


@pytest.fixture
def finance() -> Group:
    return Group.objects.create(name="finance")


@pytest.fixture
def accountant(finance: Group) -> User:
    user = User.objects.create_user("accountant")
    user.groups.add(finance)
    return user


def test_a_message_and_its_attachment_become_linked_documents_for_the_same_readers(
    finance: Group, accountant: User
) -> None:
    outcome = document_upload_bytes(
        name="budget.eml", data=budget_message(memo=travel_memo()), groups=[finance]
    )
    assert outcome.version is not None
    run_pending_once()
    message = Document.objects.get(id=outcome.version.document_id)
    assert message.title == "Q3 travel budget approved"
    version = message.versions.get()
    assert version.status == VersionStatus.READY
    assert ["From", "Ada Lovelace <ada@example.com>"] in version.metadata
    assert ["Date", "2023-10-03T09:15:00+02:00"] in version.metadata

    attachment = Document.objects.get(attached_to=message)
    assert attachment.source_path == "budget.eml/travel-memo.docx"
    assert list(attachment.groups.all()) == [finance]
    assert attachment.current_version is not None
    assert attachment.current_version.status == VersionStatus.READY

    found = passages_for_user(user=accountant, query="economy class flights")
    assert found[0].source == "budget.eml/travel-memo.docx"
    found = passages_for_user(user=accountant, query="who approved the travel budget")
    assert any("From: Ada Lovelace" in passage.text for passage in found)

    outsider = User.objects.create_user("outsider")
    assert passages_for_user(user=outsider, query="economy class flights") == []


def test_the_readers_and_the_deletion_of_a_message_apply_to_its_attachments(
    finance: Group, accountant: User
) -> None:
    outcome = document_upload_bytes(
        name="budget.eml", data=budget_message(memo=travel_memo()), groups=[finance]
    )
    assert outcome.version is not None
    run_pending_once()
    message = Document.objects.get(id=outcome.version.document_id)
    document_set_access(document=message, groups=[], is_public=False)
    assert passages_for_user(user=accountant, query="economy class flights") == []
    document_set_access(document=message, groups=[finance], is_public=False)
    assert passages_for_user(user=accountant, query="economy class flights")
    document_delete(document=message)
    assert Document.objects.get(attached_to=message).deleted_at is not None
    assert passages_for_user(user=accountant, query="economy class flights") == []


def test_a_message_retried_stores_its_attachments_once(finance: Group) -> None:
    from ingestion.pipeline import versions_ingest

    outcome = document_upload_bytes(
        name="budget.eml", data=budget_message(memo=travel_memo()), groups=[finance]
    )
    assert outcome.version is not None
    run_pending_once()
    outcome.version.status = VersionStatus.QUEUED
    outcome.version.save(update_fields=["status"])
    versions_ingest([outcome.version.id])
    assert Document.objects.filter(attached_to_id=outcome.version.document_id).count() == 1


def test_the_document_page_shows_sender_and_links_message_and_attachment(
    finance: Group,
) -> None:
    outcome = document_upload_bytes(
        name="budget.eml", data=budget_message(memo=travel_memo()), groups=[finance]
    )
    assert outcome.version is not None
    run_pending_once()
    admin = User.objects.create_superuser("root")
    client = Client()
    client.force_login(admin)
    message_id = outcome.version.document_id
    page = client.get(reverse("ingestion:document-detail", args=[message_id])).content.decode()
    assert "Ada Lovelace &lt;ada@example.com&gt;" in page
    attachment = Document.objects.get(attached_to_id=message_id)
    assert reverse("ingestion:document-detail", args=[attachment.id]) in page
    page = client.get(reverse("ingestion:document-detail", args=[attachment.id])).content.decode()
    assert "Attached to" in page
    assert reverse("ingestion:document-detail", args=[message_id]) in page
