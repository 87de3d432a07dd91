"""The Django admin for documents: uploads, readers and deletion reach the index."""

from __future__ import annotations

from typing import Any

import pytest
from bs4 import BeautifulSoup
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from ingestion.access import index_scope
from ingestion.models import Document, DocumentVersion, VersionStatus, group_tag
from ingestion.passage_vectors import dense, sparse
from ingestion.runner import run_pending_once
from ingestion.vector_index import SparseVec
from ingestion.vector_index.configured import vector_index
from tests.ingestion.test_services import BROKEN_PDF

pytestmark = pytest.mark.django_db

TRAVEL_POLICY = b"""# Travel policy

## Hotels

Employees book hotels through the travel desk and stay within the nightly limit of 180 euros.
"""
QUESTION = "What is the nightly hotel limit?"


def markdown_file(name: str = "travel_policy.md", content: bytes = TRAVEL_POLICY) -> Any:
    return SimpleUploadedFile(name, content, content_type="text/markdown")


def admin_upload(client: Client, *files: Any, **fields: Any) -> Any:
    return client.post(
        reverse("admin:ingestion_document_add"), {"files": list(files), **fields}, follow=True
    )


def documents_found_by(tags: set[str]) -> set[int]:
    sparse_query = sparse().encode_query(QUESTION)
    scope = index_scope(tags, only_active=True)
    if scope is None:
        return set()
    hits = vector_index().search(
        dense=dense().encode_query(QUESTION), sparse=SparseVec(*sparse_query), scope=scope
    )
    return {hit.payload["document_id"] for hit in hits}


def form_as_posted(html: str, form_id: str) -> dict[str, Any]:
    """The fields a browser would send for the form as it is shown."""
    form = BeautifulSoup(html, "html.parser").find("form", id=form_id)
    assert form is not None
    data: dict[str, Any] = {}
    for field in form.find_all(["input", "select", "textarea"]):
        name = str(field.get("name") or "")
        if not name or field.get("type") in ("submit", "file"):
            continue
        if field.get("type") == "checkbox":
            if field.has_attr("checked"):
                data.setdefault(name, []).append(field.get("value", "on"))
        elif field.name == "select":
            data[name] = [option["value"] for option in field.find_all("option", selected=True)]
        else:
            data[name] = field.get("value", "")
    return data


def test_adding_a_document_in_the_admin_uploads_its_file(admin_client: Client) -> None:
    finance = Group.objects.create(name="Finance")
    form_page = admin_client.get(reverse("admin:ingestion_document_add")).content.decode()
    assert 'type="file"' in form_page

    response = admin_upload(admin_client, markdown_file(), groups=[finance.id])

    document = Document.objects.get()
    assert response.redirect_chain[-1][0] == reverse(
        "admin:ingestion_document_change", args=[document.id]
    )
    assert "queued for indexing" in response.content.decode()
    assert list(document.groups.all()) == [finance]
    assert document.versions.get().status == VersionStatus.QUEUED


def test_a_refused_admin_upload_says_why(admin_client: Client, settings: Any) -> None:
    settings.UPLOAD_MAX_BYTES = 50

    response = admin_upload(admin_client, markdown_file())

    assert "larger than the upload limit" in response.content.decode()
    assert not Document.objects.exists()


def test_saving_groups_in_the_admin_changes_who_finds_the_passages(admin_client: Client) -> None:
    finance = Group.objects.create(name="Finance")
    admin_upload(admin_client, markdown_file())
    run_pending_once()
    document = Document.objects.get()
    assert documents_found_by({group_tag(finance.id)}) == set()

    change_url = reverse("admin:ingestion_document_change", args=[document.id])
    data = form_as_posted(admin_client.get(change_url).content.decode(), "document_form")
    data["groups"] = [str(finance.id)]
    response = admin_client.post(change_url, data)

    assert response.status_code == 302, response.content.decode()
    assert list(document.groups.all()) == [finance]
    assert documents_found_by({group_tag(finance.id)}) == {document.id}
    listing = admin_client.get(reverse("admin:ingestion_document_changelist")).content.decode()
    assert "Finance" in listing
    assert "Ready" in listing


def test_deleting_in_the_admin_keeps_the_record_and_empties_the_index(
    admin_client: Client,
) -> None:
    admin_upload(admin_client, markdown_file(), is_public="on")
    run_pending_once()
    document = Document.objects.get()
    assert vector_index().count(document_id=document.id) > 0
    changelist = reverse("admin:ingestion_document_changelist")
    action = {"action": "delete_selected", "_selected_action": [document.id]}

    confirmation = admin_client.post(changelist, action).content.decode()
    assert "leaves search and answers; its record is kept" in confirmation
    admin_client.post(changelist, {**action, "post": "yes"})

    document.refresh_from_db()
    assert document.deleted_at is not None
    assert DocumentVersion.objects.filter(document=document).exists()
    assert vector_index().count(document_id=document.id) == 0
    assert documents_found_by({"public"}) == set()


def test_version_actions_cancel_and_retry(admin_client: Client) -> None:
    admin_upload(admin_client, markdown_file())
    version = DocumentVersion.objects.get()
    changelist = reverse("admin:ingestion_documentversion_changelist")

    admin_client.post(changelist, {"action": "cancel", "_selected_action": [version.id]})
    version.refresh_from_db()
    assert version.status == VersionStatus.CANCELLED

    response = admin_client.post(
        changelist, {"action": "retry", "_selected_action": [version.id]}, follow=True
    )
    assert "1 version(s) queued again" in response.content.decode()
    version.refresh_from_db()
    assert version.status == VersionStatus.QUEUED


def test_versions_and_passages_are_read_only(admin_client: Client) -> None:
    admin_upload(admin_client, markdown_file())
    run_pending_once()
    version = DocumentVersion.objects.get()

    passages = admin_client.get(reverse("admin:ingestion_chunk_changelist")).content.decode()
    assert "nightly limit of 180 euros" in passages
    assert admin_client.get(reverse("admin:ingestion_chunk_add")).status_code == 403
    assert admin_client.get(reverse("admin:ingestion_documentversion_add")).status_code == 403
    version_page = admin_client.get(
        reverse("admin:ingestion_documentversion_change", args=[version.id])
    ).content.decode()
    assert 'name="_save"' not in version_page


def test_the_document_list_filters_by_status(admin_client: Client) -> None:
    admin_upload(admin_client, markdown_file())
    admin_upload(admin_client, markdown_file("broken.pdf", BROKEN_PDF))
    run_pending_once()
    changelist = reverse("admin:ingestion_document_changelist")

    failed = admin_client.get(changelist, {"status": VersionStatus.FAILED}).content.decode()

    assert "broken.pdf" in failed
    assert "travel_policy.md" not in failed
