"""Fuzzing the REST API from its own OpenAPI schema (/api/schema/), against the real app.

Every operation is called with inputs generated from the schema, by a signed-in user with a
personal API token for every scope; no answer may be a server error, and every answer must
match what the schema promises. Bounded: API_FUZZ_EXAMPLES examples per operation (25 unless
set).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import Group, User
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from accounts.tokens import token_create
from ingestion.models import Document
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes

EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "25"))


# Served by the app itself, as clients see it; building it touches no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@pytest.fixture(autouse=True)
def connection_kept_across_requests(db: None) -> Iterator[None]:
    """As Django's test client does: the test's transaction must outlive each request."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(db: None) -> dict[str, str]:
    """A superuser's token for every scope, beside a few documents for the API to serve."""
    user = User.objects.create_superuser("fuzzer", password="pw-fuzzer-123")
    user.groups.add(Group.objects.create(name="research"))
    for name, text in (
        ("parking.md", b"# Parking\n\nVisitors park on level minus two of the north garage.\n"),
        ("travel.md", b"# Travel\n\nTrains in second class for journeys under four hours.\n"),
    ):
        document_upload_bytes(name=name, data=text, is_public=True)
    run_pending_once()
    issued = token_create(user=user, name="fuzzing", scopes=["read", "ask", "ingest"])
    return {"Authorization": f"Bearer {issued.secret}"}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_every_generated_request_within_its_schema(
    case: Any, bearer: dict[str, str]
) -> None:
    response = case.call(headers=bearer)

    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
    # Inputs outside the schema (a word for a numeric id) may not even reach the API: Django
    # answers its own 404 page. For them the promise is only "no server error".
    if case.meta is None or case.meta.generation.mode.is_positive:
        case.validate_response(
            response, checks=[content_type_conformance, response_schema_conformance]
        )


# --- What the fuzzing found --------------------------------------------------------------


def test_a_document_search_with_a_nul_character_answers_instead_of_failing(
    client: Client, bearer: dict[str, str]
) -> None:
    """PostgreSQL refuses NUL in a text parameter; the search once answered 500."""
    response = client.get(
        "/api/documents/", {"q": "park\x00ing"}, HTTP_AUTHORIZATION=bearer["Authorization"]
    )

    assert response.status_code == 200
    assert [document["title"] for document in response.json()["results"]] == ["Parking"]
    client.force_login(User.objects.get(username="fuzzer"))
    page = client.get("/documents/", {"q": "\x00"})
    assert page.status_code == 200


def test_a_document_a_command_ingested_is_described_by_the_schema(
    bearer: dict[str, str],
) -> None:
    """Its versions have no uploader; the schema once promised a user name."""
    document = Document.objects.get(source_path="parking.md")
    case = schema["/api/documents/{document_id}/"]["GET"].Case(
        path_parameters={"document_id": document.id}
    )

    response = case.call(headers=bearer)

    assert response.status_code == 200
    assert response.json()["versions"][0]["uploaded_by"] is None
    case.validate_response(response, checks=[response_schema_conformance])


def test_a_streamed_answer_is_described_by_the_schema(bearer: dict[str, str]) -> None:
    """Each server-sent event is an event name and its data; the schema once said a string."""
    case = schema["/api/assistant/ask"]["POST"].Case(
        body={"question": "Where do visitors park?", "stream": True},
        media_type="application/json",
    )

    response = case.call(headers={**bearer, "Accept": "text/event-stream"})

    assert response.status_code == 200
    assert "event: done" in response.text
    case.validate_response(response, checks=[content_type_conformance, response_schema_conformance])
