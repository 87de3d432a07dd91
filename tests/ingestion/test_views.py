"""The administrators' document pages: upload, live status, retry and cancel, access, delete."""

from __future__ import annotations

from typing import Any

import pytest
from bs4 import BeautifulSoup
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from ingestion.models import Document, DocumentVersion, VersionStatus
from ingestion.runner import run_pending_once
from tests.ingestion.test_services import BROKEN_PDF

pytestmark = pytest.mark.django_db

TRAVEL_POLICY = b"""# Travel policy

## Hotels

Employees book hotels through the travel desk and stay within the nightly limit of 180 euros.

## Trains

Second class is the rule for journeys shorter than four hours.
"""


def markdown_file(name: str = "travel_policy.md", content: bytes = TRAVEL_POLICY) -> Any:
    return SimpleUploadedFile(name, content, content_type="text/markdown")


def upload_json(client: Client, *files: Any, **fields: Any) -> dict[str, Any]:
    """Upload as the page's script does; readers are Everyone unless the test names them."""
    if "groups" not in fields and "everyone" not in fields:
        fields["everyone"] = "on"
    response = client.post(
        reverse("ingestion:document-upload"),
        {"files": list(files), **fields},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.content
    return dict(response.json())


def version_states(client: Client, *version_ids: int) -> dict[int, dict[str, Any]]:
    response = client.get(
        reverse("ingestion:version-status"), {"ids": ",".join(map(str, version_ids))}
    )
    assert response.status_code == 200
    return {state["id"]: state for state in response.json()["versions"]}


@pytest.fixture
def employee_client(client: Client, django_user_model: type[User]) -> Client:
    employee = django_user_model.objects.create_user("employee", password="a-long-password")
    client.force_login(employee)
    return client


def test_an_uploaded_markdown_file_becomes_ready_and_shows_its_passages(
    admin_client: Client,
) -> None:
    result = upload_json(admin_client, markdown_file())["results"][0]
    assert result["error"] == ""
    assert result["version"]["status"] == VersionStatus.QUEUED
    version_id = result["version"]["id"]
    assert version_states(admin_client, version_id)[version_id]["final"] is False

    run_pending_once()

    state = version_states(admin_client, version_id)[version_id]
    assert state["status"] == VersionStatus.READY
    assert state["final"] is True
    assert state["chunks_total"] > 0
    assert state["chunks_done"] == state["chunks_total"]
    assert state["progress"] == 100

    page = admin_client.get(state["document_url"]).content.decode()
    assert "nightly limit of 180 euros" in page
    # Two short sections under one heading are one passage, cited by the heading they share.
    assert '<span class="chunk-heading">Travel policy</span>' in page
    assert "Second class is the rule" in page
    assert "travel_policy.md" in page


def test_the_upload_form_works_without_javascript(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("ingestion:document-list"), {"files": [markdown_file()], "everyone": "on"}
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "travel_policy.md" in page
    assert "Queued" in page
    assert Document.objects.get().versions.get().status == VersionStatus.QUEUED


def test_many_files_upload_at_once_with_their_readers(admin_client: Client) -> None:
    finance = Group.objects.create(name="Finance")
    results = upload_json(
        admin_client,
        markdown_file("travel_policy.md"),
        markdown_file("expenses.md", b"# Expenses\n\nReceipts are kept for ten years."),
        groups=[finance.id],
        everyone="on",
    )["results"]

    assert [result["name"] for result in results] == ["travel_policy.md", "expenses.md"]
    assert all(result["created"] for result in results)
    for document in Document.objects.all():
        assert list(document.groups.all()) == [finance]
        assert document.is_public
    listing = admin_client.get(reverse("ingestion:document-list")).content.decode()
    assert "Everyone" in listing
    assert "Finance" in listing


def test_a_file_over_the_size_limit_is_refused_with_its_reason(
    admin_client: Client, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 50

    refused = admin_client.post(
        reverse("ingestion:document-upload"),
        {"files": [markdown_file()]},
        headers={"Accept": "application/json"},
    )
    assert refused.status_code == 413
    assert refused.json()["detail"].startswith(
        "travel_policy.md: The file is larger than the upload limit"
    )
    assert "files" in refused.json()["errors"]

    page = admin_client.post(reverse("ingestion:document-list"), {"files": [markdown_file()]})
    assert page.status_code == 413
    soup = BeautifulSoup(page.content.decode(), "html.parser")
    form_errors = " ".join(item.get_text() for item in soup.select("form .errorlist li"))
    assert "travel_policy.md: The file is larger than the upload limit" in form_errors
    assert not soup.select("[data-upload-results] [data-upload-result]")
    assert not Document.objects.exists()


def test_a_document_admin_uploading_a_name_another_group_uses_gets_their_own_document(
    admin_client: Client, finance_admin_client: Client, finance: Group
) -> None:
    hr = Group.objects.create(name="HR")
    upload_json(admin_client, markdown_file(), groups=[hr.id])

    same_name = upload_json(
        finance_admin_client,
        markdown_file(content=b"# Travel policy\n\nFinance travels by train."),
        groups=[finance.id],
    )["results"][0]
    copy = upload_json(finance_admin_client, markdown_file("copy.md"), groups=[finance.id])
    same_bytes = copy["results"][0]

    for result in (same_name, same_bytes):
        assert (result["created"], result["error"], result["note"]) == (True, "", "")
        assert result["version"]["status"] == VersionStatus.QUEUED
    hr_document = Document.objects.get(groups=hr)
    assert hr_document.versions.count() == 1
    assert Document.objects.filter(groups=finance).count() == 2


def test_uploading_a_failed_file_again_queues_it_again_and_says_so(admin_client: Client) -> None:
    first = upload_json(admin_client, markdown_file("minutes.pdf", BROKEN_PDF))
    run_pending_once()

    again = upload_json(admin_client, markdown_file("minutes.pdf", BROKEN_PDF))

    result = again["results"][0]
    assert result["version"]["id"] == first["results"][0]["version"]["id"]
    assert (result["created"], result["error"]) == (False, "")
    assert result["version"]["status"] == VersionStatus.QUEUED
    assert "PDF" in result["note"]
    assert result["note"].endswith("it is queued again.")

    run_pending_once()
    page = admin_client.post(
        reverse("ingestion:document-list"),
        {"files": [markdown_file("minutes.pdf", BROKEN_PDF)], "everyone": "on"},
    ).content.decode()
    assert "Version 1 of “minutes” holds the same content and its ingestion had failed" in page


def test_a_file_that_cannot_be_read_shows_why_and_offers_a_retry(admin_client: Client) -> None:
    result = upload_json(admin_client, markdown_file("minutes.pdf", BROKEN_PDF))
    version_id = result["results"][0]["version"]["id"]

    run_pending_once()

    state = version_states(admin_client, version_id)[version_id]
    assert state["status"] == VersionStatus.FAILED
    assert "PDF" in state["message"]
    assert state["can_retry"] is True
    listing = admin_client.get(reverse("ingestion:document-list")).content.decode()
    assert state["message"] in listing
    assert reverse("ingestion:version-retry", args=[version_id]) in listing


def test_a_file_whose_content_is_not_its_type_is_refused_in_the_request(
    admin_client: Client,
) -> None:
    refusal = "The file's content is not a PDF (it looks like plain text). Not stored."

    result = upload_json(admin_client, markdown_file("minutes.pdf", b"just some words"))

    assert result["results"][0]["error"] == refusal
    assert result["results"][0]["version"] is None
    page = admin_client.post(
        reverse("ingestion:document-list"),
        {"files": [markdown_file("minutes.pdf", b"just some words")], "everyone": "on"},
    ).content.decode()
    assert refusal.replace("'", "&#x27;") in page
    assert not DocumentVersion.objects.exists()


def test_an_upload_that_names_no_reader_is_refused_with_the_reason(admin_client: Client) -> None:
    refused = admin_client.post(
        reverse("ingestion:document-upload"),
        {"files": [markdown_file()]},
        headers={"Accept": "application/json"},
    )
    assert refused.status_code == 400
    assert refused.json()["detail"].startswith("Choose who may read these files")

    page = admin_client.post(reverse("ingestion:document-list"), {"files": [markdown_file()]})
    assert page.status_code == 400
    assert "tick at least one group or Everyone" in page.content.decode()
    assert not Document.objects.exists()


def test_cancel_and_retry_change_the_status(admin_client: Client) -> None:
    result = upload_json(admin_client, markdown_file())["results"][0]
    version_id = result["version"]["id"]
    as_script = {"Accept": "application/json"}

    cancelled = admin_client.post(result["version"]["cancel_url"], headers=as_script)
    assert cancelled.json()["status"] == VersionStatus.CANCELLED
    assert cancelled.json()["can_retry"] is True

    retried = admin_client.post(result["version"]["retry_url"], headers=as_script)
    assert retried.json()["status"] == VersionStatus.QUEUED

    run_pending_once()
    assert version_states(admin_client, version_id)[version_id]["status"] == VersionStatus.READY
    refused = admin_client.post(result["version"]["cancel_url"], headers=as_script)
    assert refused.status_code == 409
    assert "cancelled" in refused.json()["detail"]


def test_the_cancel_button_works_as_a_plain_form(admin_client: Client) -> None:
    upload_json(admin_client, markdown_file())
    version = DocumentVersion.objects.get()
    listing_url = reverse("ingestion:document-list")

    response = admin_client.post(
        reverse("ingestion:version-cancel", args=[version.id]), {"next": listing_url}, follow=True
    )

    assert response.redirect_chain == [(listing_url, 302)]
    assert "was cancelled" in response.content.decode()
    version.refresh_from_db()
    assert version.status == VersionStatus.CANCELLED


def test_changing_readers_on_the_document_page(admin_client: Client) -> None:
    upload_json(admin_client, markdown_file())
    document = Document.objects.get()
    legal = Group.objects.create(name="Legal")

    response = admin_client.post(
        reverse("ingestion:document-access", args=[document.id]),
        {"groups": [legal.id], "everyone": "on"},
        follow=True,
    )

    assert "was saved" in response.content.decode()
    document.refresh_from_db()
    assert document.is_public
    assert list(document.groups.all()) == [legal]


def test_deleting_asks_first_then_removes_the_document_from_the_list(
    admin_client: Client,
) -> None:
    upload_json(admin_client, markdown_file())
    document = Document.objects.get()
    delete_url = reverse("ingestion:document-delete", args=[document.id])

    confirmation = admin_client.get(delete_url)
    assert f"Delete “{document.title}”?" in confirmation.content.decode()
    assert Document.objects.get().deleted_at is None

    response = admin_client.post(delete_url, follow=True)
    page = response.content.decode()
    assert "was deleted" in page
    assert "No documents yet" in page
    assert (
        admin_client.get(reverse("ingestion:document-detail", args=[document.id])).status_code
        == 404
    )


def test_the_original_file_downloads_under_its_name(admin_client: Client) -> None:
    upload_json(admin_client, markdown_file())
    version = DocumentVersion.objects.get()

    response = admin_client.get(reverse("ingestion:version-download", args=[version.id]))

    assert response.status_code == 200
    assert 'attachment; filename="travel_policy.md"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == TRAVEL_POLICY  # type: ignore[attr-defined]


def test_searching_narrows_the_list(admin_client: Client) -> None:
    upload_json(
        admin_client,
        markdown_file(),
        markdown_file("expenses.md", b"# Expenses\n\nReceipts are kept for ten years."),
    )

    page = admin_client.get(reverse("ingestion:document-list"), {"q": "expens"}).content.decode()

    assert "expenses.md" in page
    assert "travel_policy.md" not in page


def test_people_who_are_not_document_admins_get_403(
    employee_client: Client, django_user_model: type[User]
) -> None:
    staff = Client()
    staff.force_login(django_user_model.objects.create_user("staff", is_staff=True))
    assert staff.get(reverse("ingestion:document-list")).status_code == 403
    for url in (
        reverse("ingestion:document-list"),
        reverse("ingestion:version-status") + "?ids=1",
        reverse("ingestion:document-detail", args=[1]),
    ):
        assert employee_client.get(url).status_code == 403
    assert employee_client.post(reverse("ingestion:document-upload")).status_code == 403


def test_anonymous_visitors_are_sent_to_log_in(client: Client) -> None:
    response = client.get(reverse("ingestion:document-list"))

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/documents/"
    login_page = client.get(response["Location"]).content.decode()
    assert '<label for="id_username">User name</label>' in login_page
    assert '<label for="id_password">Password</label>' in login_page


def test_the_layout_shows_superusers_their_links_and_a_logout_button(
    admin_client: Client, employee_client: Client
) -> None:
    staff_page = admin_client.get(reverse("ingestion:document-list")).content.decode()
    assert "Knowledge Assistant" in staff_page
    assert f'href="{reverse("admin:index")}"' in staff_page
    assert f'<form class="logout-form" method="post" action="{reverse("logout")}">' in staff_page
    assert 'src="/static/js/documents.js"' in staff_page
    assert "<script>" not in staff_page

    employee_page = employee_client.get("/").content.decode()
    assert reverse("ingestion:document-list") not in employee_page
    assert reverse("admin:index") not in employee_page


@pytest.fixture
def finance() -> Group:
    return Group.objects.create(name="Finance")


@pytest.fixture
def finance_admin_client(django_user_model: type[User], finance: Group) -> Client:
    """A document admin of Finance: a member of Finance-admins."""
    admin = django_user_model.objects.create_user("fiona", password="a-long-password")
    admin.groups.add(Group.objects.create(name="Finance-admins"))
    client = Client()
    client.force_login(admin)
    return client


def test_a_document_admin_is_offered_only_their_groups_and_not_everyone(
    finance_admin_client: Client, finance: Group
) -> None:
    Group.objects.create(name="Sales")
    page = finance_admin_client.get(reverse("ingestion:document-list")).content.decode()

    assert "Finance" in page
    assert "Sales" not in page
    assert "Everyone may read" not in page
    assert f'href="{reverse("ingestion:document-list")}"' in page
    assert f'href="{reverse("admin:index")}"' not in page


def test_a_document_admin_sees_and_opens_only_the_documents_they_manage(
    admin_client: Client, finance_admin_client: Client, finance: Group
) -> None:
    sales = Group.objects.create(name="Sales")
    upload_json(admin_client, markdown_file("pricing.md", b"# Pricing"), groups=[sales.id])
    upload_json(finance_admin_client, markdown_file(), groups=[finance.id])
    own = Document.objects.get(source_path="travel_policy.md")
    other = Document.objects.get(source_path="pricing.md")

    listing = finance_admin_client.get(reverse("ingestion:document-list")).content.decode()
    assert "travel policy" in listing
    assert "pricing" not in listing
    assert (
        finance_admin_client.get(reverse("ingestion:document-detail", args=[own.id])).status_code
        == 200
    )
    other_version = other.versions.get()
    for url in (
        reverse("ingestion:document-detail", args=[other.id]),
        reverse("ingestion:version-download", args=[other_version.id]),
    ):
        assert finance_admin_client.get(url).status_code == 404
    states = finance_admin_client.get(
        reverse("ingestion:version-status"), {"ids": str(other_version.id)}
    ).json()
    assert states == {"versions": []}


def test_a_document_admin_cannot_share_beyond_their_groups(
    finance_admin_client: Client, finance: Group
) -> None:
    sales = Group.objects.create(name="Sales")
    refused = finance_admin_client.post(
        reverse("ingestion:document-list"), {"files": [markdown_file()], "groups": [sales.id]}
    )
    assert refused.status_code == 400
    assert not Document.objects.exists()

    upload_json(finance_admin_client, markdown_file(), groups=[finance.id])
    document = Document.objects.get()
    answer = finance_admin_client.post(
        reverse("ingestion:document-access", args=[document.id]),
        {"groups": [finance.id], "everyone": "on"},
        follow=True,
    )
    assert "was saved" in answer.content.decode()
    document.refresh_from_db()
    assert not document.is_public

    refused_access = finance_admin_client.post(
        reverse("ingestion:document-access", args=[document.id]), {"groups": []}, follow=True
    )
    assert "Choose who may read: the groups you administer (Finance)." in (
        refused_access.content.decode()
    )
    assert list(document.groups.all()) == [finance]
