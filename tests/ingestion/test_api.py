"""The documents REST API, used with tokens as a script would use it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from ingestion.models import Document, VersionStatus
from ingestion.runner import run_pending_once

pytestmark = pytest.mark.django_db

TRAVEL_POLICY = b"""# Travel policy

## Hotels

Employees book hotels through the travel desk and stay within the nightly limit of 180 euros.
"""


def markdown_file(name: str = "travel_policy.md", content: bytes = TRAVEL_POLICY) -> Any:
    return SimpleUploadedFile(name, content, content_type="text/markdown")


def token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def staff_api(django_user_model: type[User]) -> APIClient:
    staff = django_user_model.objects.create_user("librarian", password="x" * 12, is_staff=True)
    return token_client(staff)


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
    staff_api: APIClient, finance: Group
) -> None:
    response = upload(
        staff_api,
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

    version = staff_api.get(f"/api/versions/{stored['version_id']}/").json()
    assert version["status"] == VersionStatus.READY
    assert version["progress"] == 100
    assert version["chunks_done"] == version["chunks_total"] > 0
    listing = staff_api.get("/api/documents/").json()
    assert listing["count"] == 1
    document = listing["results"][0]
    assert document["status"] == VersionStatus.READY
    assert document["chunk_count"] == version["chunks_total"]
    assert document["groups"] == [{"id": finance.id, "name": "Finance"}]
    assert document["everyone"] is False
    detail = staff_api.get(f"/api/documents/{stored['document_id']}/").json()
    assert [v["original_name"] for v in detail["versions"]] == ["travel_policy.md"]


def test_groups_may_be_given_by_id_and_an_unknown_one_is_refused(
    staff_api: APIClient, finance: Group
) -> None:
    response = upload(staff_api, markdown_file(), groups=[str(finance.id)], everyone="true")
    assert response.status_code == 201
    document = Document.objects.get()
    assert list(document.groups.all()) == [finance]
    assert document.is_public

    refused = upload(staff_api, markdown_file("other.md", b"# Other"), groups=["Nobody"])
    assert refused.status_code == 400
    assert refused.json()["detail"] == "groups: no such group: Nobody."
    assert Document.objects.count() == 1


def test_an_upload_without_files_says_what_is_missing(staff_api: APIClient) -> None:
    response = staff_api.post("/api/documents/", {}, format="multipart")

    assert response.status_code == 400
    assert response.json()["detail"].startswith("files:")


def test_patch_changes_who_may_read(staff_api: APIClient, finance: Group) -> None:
    document_id = upload(staff_api, markdown_file()).json()["results"][0]["document_id"]

    response = staff_api.patch(
        f"/api/documents/{document_id}/", {"groups": ["Finance"]}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["groups"] == [{"id": finance.id, "name": "Finance"}]
    assert response.json()["everyone"] is False

    response = staff_api.patch(f"/api/documents/{document_id}/", {"everyone": True}, format="json")
    assert response.json()["everyone"] is True
    assert response.json()["groups"] == [{"id": finance.id, "name": "Finance"}]


def test_delete_takes_the_document_away(staff_api: APIClient) -> None:
    document_id = upload(staff_api, markdown_file()).json()["results"][0]["document_id"]

    assert staff_api.delete(f"/api/documents/{document_id}/").status_code == 204

    assert staff_api.get("/api/documents/").json()["count"] == 0
    missing = staff_api.get(f"/api/documents/{document_id}/")
    assert missing.status_code == 404
    assert "detail" in missing.json()


def test_cancel_and_retry_a_version(staff_api: APIClient) -> None:
    version_id = upload(staff_api, markdown_file()).json()["results"][0]["version_id"]

    cancelled = staff_api.post(f"/api/versions/{version_id}/cancel/")
    assert cancelled.json()["status"] == VersionStatus.CANCELLED
    again = staff_api.post(f"/api/versions/{version_id}/cancel/")
    assert again.status_code == 409
    assert again.json()["detail"] == "Only a queued or running version can be cancelled."

    retried = staff_api.post(f"/api/versions/{version_id}/retry/")
    assert retried.json()["status"] == VersionStatus.QUEUED
    assert staff_api.post(f"/api/versions/{version_id}/retry/").status_code == 409


def test_people_who_are_not_staff_read_only_what_they_may_read(
    staff_api: APIClient, finance: Group, django_user_model: type[User]
) -> None:
    upload(staff_api, markdown_file(), groups=["Finance"])
    secret_id = upload(staff_api, markdown_file("salaries.md", b"# Salaries")).json()["results"][0][
        "document_id"
    ]
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
    assert refused.json()["detail"] == "Only staff may change documents."
    assert employee.delete(f"/api/documents/{secret_id}/").status_code == 403


def test_a_token_is_issued_for_a_user_name_and_password(django_user_model: type[User]) -> None:
    django_user_model.objects.create_user("librarian", password="a-long-password", is_staff=True)

    response = APIClient().post(
        "/api/token/", {"username": "librarian", "password": "a-long-password"}, format="json"
    )

    assert response.status_code == 200
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert client.get("/api/documents/").status_code == 200


def test_the_schema_describes_the_document_endpoints(staff_api: APIClient) -> None:
    schema = staff_api.get("/api/schema/", {"format": "json"}).json()

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
