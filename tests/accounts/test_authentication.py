"""Tokens on every API: who they sign in, what their scopes open, and how they are refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import token_create, token_revoke
from tests.accounts.api_tokens import api_token

pytestmark = pytest.mark.django_db


def client_with(secret: str, scheme: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {secret}")
    return client


def upload(client: APIClient) -> Any:
    note = SimpleUploadedFile("note.md", b"# Note\n\nHello.\n", content_type="text/markdown")
    return client.post("/api/documents/", {"files": [note]}, format="multipart")


def ask_empty(client: APIClient) -> Any:
    # An empty question is refused after sign-in and scope checks, before any answering.
    return client.post("/api/assistant/ask", {"question": ""}, format="json")


def v1_models(secret: str, scheme: str = "Bearer") -> Any:
    return Client().get("/v1/models", HTTP_AUTHORIZATION=f"{scheme} {secret}")


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="x" * 12)


@pytest.fixture
def root(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_superuser("root", password="x" * 12)


def test_a_read_token_reads_but_cannot_ask_or_upload(root: User) -> None:
    client = client_with(api_token(root, ["read"]))

    assert client.get("/api/assistant/conversations").status_code == 200
    assert client.get("/api/documents/").status_code == 200

    refused = ask_empty(client)
    assert refused.status_code == 403
    assert "does not have the 'ask' scope" in refused.json()["detail"]
    refused = upload(client)
    assert refused.status_code == 403
    assert "'ingest' scope" in refused.json()["detail"]
    models = v1_models(api_token(root, ["read"]))
    assert models.status_code == 403
    assert "'ask' scope" in models.json()["error"]["message"]


def test_an_ask_token_asks_and_lists_models_but_cannot_read_lists(alice: User) -> None:
    secret = api_token(alice, ["ask"])
    client = client_with(secret)

    assert ask_empty(client).status_code == 400
    assert v1_models(secret).json()["data"][0]["id"] == "knowledge-assistant"
    refused = client.get("/api/assistant/conversations")
    assert refused.status_code == 403
    assert "'read' scope" in refused.json()["detail"]
    # Renaming or removing conversations is a change: a read-only token cannot do it either.
    read_only = client_with(api_token(alice, ["read"]))
    assert read_only.delete("/api/assistant/conversations/1").status_code == 403


def test_an_ingest_token_uploads_only_for_a_document_admin(alice: User, root: User) -> None:
    assert upload(client_with(api_token(root, ["ingest"]))).status_code == 201

    refused = upload(client_with(api_token(alice, ["read", "ask", "ingest"])))

    # The token never gives more than its user has.
    assert refused.status_code == 403
    assert "document admins" in refused.json()["detail"]


def test_old_clients_may_send_the_token_keyword(alice: User) -> None:
    secret = api_token(alice, ["read", "ask"])

    assert client_with(secret, "Token").get("/api/assistant/conversations").status_code == 200
    assert v1_models(secret, "Token").status_code == 200


def test_requests_without_a_token_get_401_saying_how_to_sign_in() -> None:
    response = APIClient().get("/api/assistant/conversations")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    models = Client().get("/v1/models")
    assert models.status_code == 401
    assert "Authorization: Bearer" in models.json()["error"]["message"]


def test_a_revoked_token_is_refused_on_the_next_request(alice: User) -> None:
    issued = token_create(user=alice, name="script", scopes=["read", "ask"])
    client = client_with(issued.secret)
    assert client.get("/api/assistant/conversations").status_code == 200

    token_revoke(token=issued.token, actor=alice)

    refused = client.get("/api/assistant/conversations")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "This API token has been revoked."
    models = v1_models(issued.secret)
    assert models.status_code == 401
    assert "revoked" in models.json()["error"]["message"]


def test_an_expired_token_is_refused_with_401(alice: User) -> None:
    issued = token_create(user=alice, name="script", scopes=["read", "ask"], days=1)
    ApiToken.objects.filter(id=issued.token.id).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    refused = client_with(issued.secret).get("/api/assistant/conversations")
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    assert v1_models(issued.secret).status_code == 401


def test_an_unknown_token_is_refused_with_401() -> None:
    refused = client_with("kat_0123456789ab_not-the-secret").get("/api/documents/")

    assert refused.status_code == 401
    assert refused.json()["detail"] == "Invalid API token."


def test_a_request_records_when_and_from_where_the_token_was_used(alice: User) -> None:
    issued = token_create(user=alice, name="script", scopes=["read"])

    client_with(issued.secret).get("/api/assistant/conversations", REMOTE_ADDR="192.0.2.5")

    used = ApiToken.objects.get(id=issued.token.id)
    assert used.last_used_at is not None
    assert used.last_used_ip == "192.0.2.5"


def test_the_portal_session_is_not_limited_by_scopes(alice: User) -> None:
    client = APIClient()
    client.force_login(alice)

    assert client.get("/api/assistant/conversations").status_code == 200
    assert ask_empty(client).status_code == 400
