"""The documents REST API, used with tokens as a script would use it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from ingestion.models import Document, VersionStatus
from ingestion.runner import run_pending_once
from tests.accounts.api_tokens import api_token
from tests.config.nested_json import THOUSAND_DEEP, TOO_DEEP, padded_to
from tests.ingestion.test_services import BROKEN_PDF

pytestmark = pytest.mark.django_db

TRAVEL_POLICY = b"""# Travel policy

## Hotels

Employees book hotels through the travel desk and stay within the nightly limit of 180 euros.
"""


def markdown_file(name: str = "travel_policy.md", content: bytes = TRAVEL_POLICY) -> Any:
    return SimpleUploadedFile(name, content, content_type="text/markdown")


def token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token(user)}")
    return client


@pytest.fixture
def superuser_api(django_user_model: type[User]) -> APIClient:
    """A superuser: may share with everyone or with no group, which document admins may not."""
    librarian = django_user_model.objects.create_user(
        "librarian", password="x" * 12, is_superuser=True
    )
    return token_client(librarian)


@pytest.fixture
def finance_admin_api(django_user_model: type[User], finance: Group) -> APIClient:
    """A document admin of Finance (a member of Finance-admins), not a reader of Finance."""
    admin = django_user_model.objects.create_user("fiona", password="x" * 12)
    admin.groups.add(Group.objects.create(name="Finance-admins"))
    return token_client(admin)


@pytest.fixture
def finance() -> Group:
    return Group.objects.create(name="Finance")


def upload(client: APIClient, *files: Any, **fields: Any) -> Any:
    return client.post("/api/documents/", {"files": list(files), **fields}, format="multipart")


def test_anonymous_requests_get_401_with_a_reason() -> None:
    response = APIClient().get("/api/documents/")

    assert response.status_code == 401
    assert response.json()["detail"] == "Authentication credentials were not provided."


def test_a_token_holder_uploads_and_follows_ingestion_to_ready(
    superuser_api: APIClient, finance: Group
) -> None:
    response = upload(
        superuser_api,
        markdown_file(),
        markdown_file("minutes..md", b"# Minutes"),
        groups=["Finance"],
    )

    assert response.status_code == 201
    stored, refused = response.json()["results"]
    assert stored["created"] is True
    assert stored["status"] == VersionStatus.QUEUED
    assert refused["version_id"] is None
    assert "'..'" in refused["error"]

    run_pending_once()

    version = superuser_api.get(f"/api/versions/{stored['version_id']}/").json()
    assert version["status"] == VersionStatus.READY
    assert version["progress"] == 100
    assert version["chunks_done"] == version["chunks_total"] > 0
    listing = superuser_api.get("/api/documents/").json()
    assert listing["count"] == 1
    document = listing["results"][0]
    assert document["status"] == VersionStatus.READY
    assert document["chunk_count"] == version["chunks_total"]
    assert document["groups"] == [{"id": finance.id, "name": "Finance"}]
    assert document["everyone"] is False
    detail = superuser_api.get(f"/api/documents/{stored['document_id']}/").json()
    assert [v["original_name"] for v in detail["versions"]] == ["travel_policy.md"]


def test_groups_may_be_given_by_id_and_an_unknown_one_is_refused(
    superuser_api: APIClient, finance: Group
) -> None:
    response = upload(superuser_api, markdown_file(), groups=[str(finance.id)], everyone="true")
    assert response.status_code == 201
    document = Document.objects.get()
    assert list(document.groups.all()) == [finance]
    assert document.is_public

    refused = upload(superuser_api, markdown_file("other.md", b"# Other"), groups=["Nobody"])
    assert refused.status_code == 400
    assert refused.json()["detail"] == "groups: no such group: Nobody."
    assert Document.objects.count() == 1


def test_an_upload_without_files_says_what_is_missing(superuser_api: APIClient) -> None:
    response = superuser_api.post("/api/documents/", {}, format="multipart")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("files:")


def test_patch_changes_who_may_read(superuser_api: APIClient, finance: Group) -> None:
    document_id = upload(superuser_api, markdown_file()).json()["results"][0]["document_id"]

    response = superuser_api.patch(
        f"/api/documents/{document_id}/", {"groups": ["Finance"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["groups"] == [{"id": finance.id, "name": "Finance"}]
    assert response.json()["everyone"] is False

    response = superuser_api.patch(
        f"/api/documents/{document_id}/", {"everyone": True}, format="json"
    )
    assert response.json()["everyone"] is True
    assert response.json()["groups"] == [{"id": finance.id, "name": "Finance"}]


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_a_body_nested_a_thousand_deep_is_refused_with_400_not_a_server_error(
    superuser_api: APIClient, method: str
) -> None:
    document_id = upload(superuser_api, markdown_file()).json()["results"][0]["document_id"]
    address = f"/api/documents/{document_id}/" if method == "PATCH" else "/api/documents/"

    response = superuser_api.generic(
        method, address, THOUSAND_DEEP, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {"detail": TOO_DEEP}
    assert Document.objects.count() == 1
    assert Document.objects.get().is_public is False


def test_a_body_nested_to_the_limit_or_just_under_the_size_limit_is_read_as_usual(
    superuser_api: APIClient, settings: Any
) -> None:
    document_id = upload(superuser_api, markdown_file()).json()["results"][0]["document_id"]
    body = padded_to({"everyone": True})
    settings.JSON_BODY_MAX_BYTES = len(body)

    response = superuser_api.patch(
        f"/api/documents/{document_id}/", body, content_type="application/json"
    )

    assert response.status_code == 200
    assert response.json()["everyone"] is True


def test_a_body_over_the_size_limit_is_refused_with_400(
    superuser_api: APIClient, settings: Any
) -> None:
    document_id = upload(superuser_api, markdown_file()).json()["results"][0]["document_id"]
    settings.JSON_BODY_MAX_BYTES = 200

    response = superuser_api.patch(
        f"/api/documents/{document_id}/",
        {"everyone": True, "groups": ["x" * 200]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "The JSON body is too large (more than 200 bytes)."}
    assert Document.objects.get().is_public is False


def test_delete_takes_the_document_away(superuser_api: APIClient) -> None:
    document_id = upload(superuser_api, markdown_file()).json()["results"][0]["document_id"]

    assert superuser_api.delete(f"/api/documents/{document_id}/").status_code == 204

    assert superuser_api.get("/api/documents/").json()["count"] == 0
    missing = superuser_api.get(f"/api/documents/{document_id}/")
    assert missing.status_code == 404
    assert "detail" in missing.json()


def test_cancel_and_retry_a_version(superuser_api: APIClient) -> None:
    version_id = upload(superuser_api, markdown_file()).json()["results"][0]["version_id"]

    cancelled = superuser_api.post(f"/api/versions/{version_id}/cancel/")
    assert cancelled.json()["status"] == VersionStatus.CANCELLED
    again = superuser_api.post(f"/api/versions/{version_id}/cancel/")
    assert again.status_code == 409
    assert again.json()["detail"] == "Only a queued or running version can be cancelled."

    retried = superuser_api.post(f"/api/versions/{version_id}/retry/")
    assert retried.json()["status"] == VersionStatus.QUEUED
    assert superuser_api.post(f"/api/versions/{version_id}/retry/").status_code == 409


def test_people_who_are_not_document_admins_read_only_what_they_may_read(
    superuser_api: APIClient, finance: Group, django_user_model: type[User]
) -> None:
    upload(superuser_api, markdown_file(), groups=["Finance"])
    secret_id = upload(superuser_api, markdown_file("salaries.md", b"# Salaries")).json()[
        "results"
    ][0]["document_id"]
    accountant = django_user_model.objects.create_user("accountant", password="x" * 12)
    accountant.groups.add(finance)
    employee = token_client(accountant)

    titles = [
        document["source_path"] for document in employee.get("/api/documents/").json()["results"]
    ]
    assert titles == ["travel_policy.md"]
    assert employee.get(f"/api/documents/{secret_id}/").status_code == 404

    refused = upload(employee, markdown_file("mine.md", b"# Mine"))
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Only document admins may change documents."
    assert employee.delete(f"/api/documents/{secret_id}/").status_code == 403


def test_the_schema_describes_the_document_endpoints(superuser_api: APIClient) -> None:
    schema = superuser_api.get("/api/schema/", {"format": "json"}).json()

    for path in (
        "/api/documents/",
        "/api/documents/{document_id}/",
        "/api/versions/{version_id}/",
        "/api/versions/{version_id}/retry/",
        "/api/versions/{version_id}/cancel/",
    ):
        assert path in schema["paths"]
    upload_body = schema["paths"]["/api/documents/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload_body


def test_a_document_admin_uploads_and_manages_the_documents_of_their_group(
    finance_admin_api: APIClient, finance: Group
) -> None:
    stored = upload(finance_admin_api, markdown_file(), groups=["Finance"]).json()["results"][0]
    document_id = stored["document_id"]

    assert finance_admin_api.get(f"/api/documents/{document_id}/").status_code == 200
    listing = finance_admin_api.get("/api/documents/").json()
    assert [document["id"] for document in listing["results"]] == [document_id]
    assert (
        finance_admin_api.post(f"/api/versions/{stored['version_id']}/cancel/").status_code == 200
    )
    assert finance_admin_api.delete(f"/api/documents/{document_id}/").status_code == 204


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"groups": ["Finance"], "everyone": "true"}, "Only a superuser may share a document with"),
        ({}, "Choose who may read: the groups you administer (Finance)."),
        ({"groups": ["Finance", "Sales"]}, "You may share documents only with the groups you"),
    ],
)
def test_a_document_admin_shares_only_with_the_groups_they_administer(
    finance_admin_api: APIClient, finance: Group, fields: dict[str, Any], reason: str
) -> None:
    Group.objects.create(name="Sales")
    refused = upload(finance_admin_api, markdown_file(), **fields)

    assert refused.status_code == 403
    assert refused.json()["detail"].startswith(reason)
    assert not Document.objects.exists()


def test_a_document_admin_cannot_change_a_document_of_another_group_they_read(
    superuser_api: APIClient, finance_admin_api: APIClient, finance: Group
) -> None:
    sales = Group.objects.create(name="Sales")
    shared = upload(superuser_api, markdown_file(), groups=["Finance", "Sales"]).json()
    document_id = shared["results"][0]["document_id"]
    own = upload(finance_admin_api, markdown_file("budget.md", b"# Budget"), groups=["Finance"])
    own_id = own.json()["results"][0]["document_id"]
    User.objects.get(username="fiona").groups.add(sales)

    assert finance_admin_api.get(f"/api/documents/{document_id}/").status_code == 200
    for refused in (
        finance_admin_api.patch(f"/api/documents/{document_id}/", {"groups": ["Finance"]}),
        finance_admin_api.delete(f"/api/documents/{document_id}/"),
        finance_admin_api.post(f"/api/versions/{shared['results'][0]['version_id']}/cancel/"),
    ):
        assert refused.status_code == 403
        assert refused.json()["detail"].startswith("You do not manage this document")
    widened = finance_admin_api.patch(
        f"/api/documents/{own_id}/", {"groups": ["Finance", "Sales"]}, format="json"
    )
    assert widened.status_code == 403
    assert [g.name for g in Document.objects.get(id=own_id).groups.all()] == ["Finance"]


def test_a_document_admin_neither_joins_nor_learns_of_another_group_s_document(
    superuser_api: APIClient, finance_admin_api: APIClient, finance: Group
) -> None:
    hr = Group.objects.create(name="HR")
    travel_id = upload(superuser_api, markdown_file(), groups=["HR"]).json()["results"][0][
        "document_id"
    ]
    same_name = upload(
        finance_admin_api, markdown_file(content=b"# Travel, rewritten"), groups=["Finance"]
    )
    same_bytes = upload(finance_admin_api, markdown_file("copy.md"), groups=["Finance"])

    for response in (same_name, same_bytes):
        assert response.status_code == 201
        result = response.json()["results"][0]
        assert (result["created"], result["error"], result["note"]) == (True, "", "")
        assert result["document_id"] not in (None, travel_id)
        assert "HR" not in response.content.decode()
    travel = Document.objects.get(id=travel_id)
    assert travel.versions.count() == 1
    assert list(travel.groups.all()) == [hr]
    assert set(Document.objects.exclude(id=travel_id).values_list("groups__name", flat=True)) == {
        "Finance"
    }


def test_an_upload_over_the_size_limit_answers_413_and_stores_nothing(
    superuser_api: APIClient, finance: Group, settings: Any
) -> None:
    settings.UPLOAD_MAX_BYTES = 50

    response = upload(
        superuser_api,
        markdown_file("small.md", b"# Small"),
        markdown_file(),
        groups=["Finance"],
    )

    assert response.status_code == 413
    detail = response.json()["detail"]
    assert detail.startswith("travel_policy.md: The file is larger than the upload limit")
    assert detail.endswith("Nothing was stored.")
    assert not Document.objects.exists()


def test_the_bytes_of_a_failed_version_uploaded_again_are_queued_again(
    superuser_api: APIClient, finance: Group
) -> None:
    minutes = markdown_file("minutes.pdf", BROKEN_PDF)
    first = upload(superuser_api, minutes, groups=["Finance"]).json()["results"][0]
    run_pending_once()

    again = upload(superuser_api, markdown_file("minutes.pdf", BROKEN_PDF), groups=["Finance"])

    assert again.status_code == 200
    result = again.json()["results"][0]
    assert result["version_id"] == first["version_id"]
    assert (result["created"], result["error"], result["status"]) == (
        False,
        "",
        VersionStatus.QUEUED,
    )
    assert "PDF" in result["note"]
    assert result["note"].endswith("it is queued again.")
