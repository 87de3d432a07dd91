"""The assistant's REST API, used with tokens as a script would, and checked against its schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from rest_framework.test import APIClient

from assistant.models import Answer, Conversation
from audit.models import AuditRecord
from tests.accounts.api_tokens import api_token
from tests.assistant.conftest import Library
from tests.config.nested_json import THOUSAND_DEEP, TOO_DEEP, padded_to

SECRET = "7-4-1-9"
NIGHTJAR_QUESTION = "What is the launch code for Project Nightjar?"


def token_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token(user)}")
    return client


def streamed_body(response: Any) -> str:
    assert isinstance(response, StreamingHttpResponse)

    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])  # type: ignore[union-attr]

    return async_to_sync(read)().decode()


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for frame in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.fixture
def reader_api(django_user_model: type[User]) -> APIClient:
    """A signed-in user in a library with nothing in it, for requests refused before search."""
    return token_client(django_user_model.objects.create_user("reader", password="x" * 12))


@pytest.fixture
def alice_api(library: Library) -> APIClient:
    return token_client(library.alice)


@pytest.fixture
def bob_api(library: Library) -> APIClient:
    return token_client(library.bob)


def test_ask_answers_with_citations_like_the_command_line(alice_api: APIClient) -> None:
    response = alice_api.post("/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "answered"
    assert body["mode"] == "extractive"
    assert SECRET in body["answer"]
    assert "[1]" in body["answer"]
    first = body["citations"][0]
    assert first["n"] == 1
    assert first["source"] == "nightjar.md"
    assert SECRET in first["text"]
    assert {"title", "page", "heading", "document_id", "version_id"} <= set(first)
    assert Answer.objects.get(id=body["answer_id"]).conversation_id == body["conversation_id"]
    # The portal lists it as started by a script, apart from the person's own conversations.
    assert Conversation.objects.get(id=body["conversation_id"]).origin == "api"


def test_ask_streams_the_answer_as_server_sent_events(alice_api: APIClient) -> None:
    response = alice_api.post(
        "/api/assistant/ask", {"question": NIGHTJAR_QUESTION, "stream": True}, format="json"
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    events = sse_events(streamed_body(response))
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "meta"
    assert "answer" in kinds
    assert kinds[-1] == "done"
    streamed = "".join(data["text"] for kind, data in events if kind == "answer")
    done = events[-1][1]
    assert SECRET in streamed
    assert done["answer"] == streamed
    assert done["citations"][0]["source"] == "nightjar.md"


def test_a_follow_up_continues_the_conversation(alice_api: APIClient) -> None:
    first = alice_api.post(
        "/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json"
    ).json()
    follow_up = alice_api.post(
        "/api/assistant/ask",
        {"question": "When is its first test flight?", "conversation_id": first["conversation_id"]},
        format="json",
    ).json()

    assert follow_up["conversation_id"] == first["conversation_id"]
    assert "Nightjar" in follow_up["searched_query"]
    assert "autumn" in follow_up["answer"]


@pytest.mark.parametrize(
    ("question", "reason"),
    [("   ", "Please type a question."), ("?!", "no words"), ("x" * 5000, "the limit is")],
)
def test_a_bad_question_is_refused_with_a_reason_and_not_recorded(
    reader_api: APIClient, question: str, reason: str
) -> None:
    response = reader_api.post("/api/assistant/ask", {"question": question}, format="json")

    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert not Answer.objects.exists()


def test_a_streaming_client_gets_its_errors_as_json(reader_api: APIClient) -> None:
    response = reader_api.post(
        "/api/assistant/ask",
        {"question": "", "stream": True},
        format="json",
        HTTP_ACCEPT="text/event-stream",
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "Please type a question." in response.json()["detail"]


@pytest.fixture
def readers_conversation(django_user_model: type[User]) -> tuple[APIClient, Conversation]:
    reader = django_user_model.objects.create_user("reader", password="x" * 12)
    return token_client(reader), Conversation.objects.create(user=reader, title="Parking")


@pytest.mark.parametrize(
    ("method", "address", "accept"),
    [
        ("POST", "/api/assistant/ask", "application/json"),
        ("POST", "/api/assistant/ask", "text/event-stream"),
        ("PATCH", "/api/assistant/conversations/{id}", "application/json"),
    ],
)
def test_a_body_nested_a_thousand_deep_is_refused_with_400_not_a_server_error(
    readers_conversation: tuple[APIClient, Conversation], method: str, address: str, accept: str
) -> None:
    api, conversation = readers_conversation
    response = api.generic(
        method,
        address.format(id=conversation.id),
        THOUSAND_DEEP,
        content_type="application/json",
        HTTP_ACCEPT=accept,
    )

    assert response.status_code == 400
    assert response.json() == {"detail": TOO_DEEP}
    assert not Answer.objects.exists()


def test_a_body_nested_to_the_limit_is_read_as_usual(
    readers_conversation: tuple[APIClient, Conversation],
) -> None:
    api, conversation = readers_conversation
    asked = api.post(
        "/api/assistant/ask", padded_to({"question": ""}), content_type="application/json"
    )
    renamed = api.patch(
        f"/api/assistant/conversations/{conversation.id}",
        padded_to({"title": "Parking 2027"}),
        content_type="application/json",
    )

    assert asked.status_code == 400
    assert asked.json() == {"detail": "question: Please type a question."}
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Parking 2027"


def test_a_body_over_the_size_limit_is_refused_with_400(
    readers_conversation: tuple[APIClient, Conversation], settings: Any
) -> None:
    settings.JSON_BODY_MAX_BYTES = 200
    # Django's own limit on bodies, lower still, must not turn the refusal into an HTML page.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    api, conversation = readers_conversation
    response = api.patch(
        f"/api/assistant/conversations/{conversation.id}",
        {"title": "x" * 200},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "The JSON body is too large (more than 200 bytes)."}
    assert Conversation.objects.get().title == "Parking"


def test_another_users_conversation_cannot_be_continued_or_read(
    alice_api: APIClient, bob_api: APIClient
) -> None:
    alices = alice_api.post(
        "/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json"
    ).json()["conversation_id"]

    follow_up = bob_api.post(
        "/api/assistant/ask",
        {"question": "And the code again?", "conversation_id": alices},
        format="json",
    )
    assert follow_up.status_code == 404
    assert bob_api.get(f"/api/assistant/conversations/{alices}").status_code == 404
    assert (
        bob_api.patch(
            f"/api/assistant/conversations/{alices}", {"title": "mine"}, format="json"
        ).status_code
        == 404
    )
    assert bob_api.delete(f"/api/assistant/conversations/{alices}").status_code == 404
    assert Conversation.objects.get(id=alices).hidden_at is None


def test_search_returns_only_passages_the_user_may_read(
    alice_api: APIClient, bob_api: APIClient
) -> None:
    for_alice = alice_api.get("/api/assistant/search", {"q": "Nightjar launch code", "k": 3})
    for_bob = bob_api.get("/api/assistant/search", {"q": "Nightjar launch code", "k": 3})

    assert for_alice.status_code == for_bob.status_code == 200
    assert for_alice.json()[0]["source"] == "nightjar.md"
    assert SECRET in for_alice.json()[0]["text"]
    assert len(for_alice.json()) <= 3
    assert SECRET not in for_bob.content.decode()
    assert "nightjar" not in for_bob.content.decode()


def test_search_refuses_a_missing_query_or_a_silly_k(reader_api: APIClient) -> None:
    assert "q:" in reader_api.get("/api/assistant/search").json()["detail"]
    response = reader_api.get("/api/assistant/search", {"q": "travel", "k": 1000})
    assert response.status_code == 400
    assert "k:" in response.json()["detail"]


def test_conversations_are_listed_renamed_and_removed_but_kept_in_the_audit_log(
    alice_api: APIClient, bob_api: APIClient
) -> None:
    asked = alice_api.post(
        "/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json"
    ).json()
    bob_api.post("/api/assistant/ask", {"question": "What does a seat cost?"}, format="json")
    conversation_id = asked["conversation_id"]

    listing = alice_api.get("/api/assistant/conversations").json()
    assert listing["count"] == 1
    assert listing["results"][0]["id"] == conversation_id
    assert listing["results"][0]["answer_count"] == 1

    renamed = alice_api.patch(
        f"/api/assistant/conversations/{conversation_id}",
        {"title": "Nightjar codes"},
        format="json",
    )
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Nightjar codes"
    detail = alice_api.get(f"/api/assistant/conversations/{conversation_id}").json()
    assert detail["answers"][0]["question"] == NIGHTJAR_QUESTION
    assert detail["answers"][0]["citations"][0]["source"] == "nightjar.md"

    assert alice_api.delete(f"/api/assistant/conversations/{conversation_id}").status_code == 204
    assert alice_api.get("/api/assistant/conversations").json()["count"] == 0
    assert alice_api.get(f"/api/assistant/conversations/{conversation_id}").status_code == 404
    assert AuditRecord.objects.filter(answer_id=asked["answer_id"]).exists()


def test_a_blank_title_is_refused(alice_api: APIClient) -> None:
    conversation_id = alice_api.post(
        "/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json"
    ).json()["conversation_id"]

    response = alice_api.patch(
        f"/api/assistant/conversations/{conversation_id}", {"title": "  "}, format="json"
    )

    assert response.status_code == 400
    assert "title:" in response.json()["detail"]


def test_the_canary_never_reaches_another_group_through_any_endpoint(
    alice_api: APIClient, bob_api: APIClient
) -> None:
    alice_api.post("/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json")
    asked = bob_api.post("/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json")
    streamed = streamed_body(
        bob_api.post(
            "/api/assistant/ask", {"question": NIGHTJAR_QUESTION, "stream": True}, format="json"
        )
    )
    searched = bob_api.get("/api/assistant/search", {"q": NIGHTJAR_QUESTION, "k": 100})
    listing = bob_api.get("/api/assistant/conversations")
    details = [
        bob_api.get(f"/api/assistant/conversations/{item['id']}").content.decode()
        for item in listing.json()["results"]
    ]

    seen = [asked.content.decode(), streamed, searched.content.decode()]
    seen += [listing.content.decode(), *details]
    for body in seen:
        assert SECRET not in body
        assert "nightjar.md" not in body


@pytest.mark.django_db
def test_requests_without_a_token_get_401() -> None:
    anonymous = APIClient()
    for response in (
        anonymous.post("/api/assistant/ask", {"question": "Hello?"}, format="json"),
        anonymous.get("/api/assistant/search", {"q": "travel"}),
        anonymous.get("/api/assistant/conversations"),
    ):
        assert response.status_code == 401
        assert response.json()["detail"]
    assert not Answer.objects.exists()


def json_schema(openapi: dict[str, Any], node: Any) -> Any:
    """OpenAPI 3.0's `nullable` spelled as JSON Schema; `$ref`s stay as they are."""
    if isinstance(node, list):
        return [json_schema(openapi, item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: json_schema(openapi, value) for key, value in node.items()}
    if converted.pop("nullable", False):
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def check_against_schema(
    openapi: dict[str, Any], path: str, method: str, response: Any
) -> tuple[str, str, int]:
    operation = openapi["paths"][path][method]
    documented = operation["responses"]
    code = str(response.status_code)
    assert code in documented, f"{method.upper()} {path} answered {code}, not documented"
    content = documented[code].get("content")
    if content is None:
        assert not response.content
        return path, method, response.status_code
    media_type = response["Content-Type"].split(";")[0]
    assert media_type in content, f"{method.upper()} {path} {code}: {media_type} not documented"
    schema = {
        **json_schema(openapi, content[media_type]["schema"]),
        "components": json_schema(openapi, openapi["components"]),
    }
    if media_type == "text/event-stream":
        # The schema describes each event of the stream.
        events = [
            {
                line.split(":", 1)[0]: line.split(": ", 1)[1]
                for line in frame.splitlines()
                if ": " in line
            }
            for frame in streamed_body(response).strip().split("\n\n")
        ]
        assert events
        for event in events:
            jsonschema.validate(event, schema, cls=jsonschema.Draft202012Validator)
        return path, method, response.status_code
    jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
    return path, method, response.status_code


def test_every_documented_endpoint_answers_as_the_schema_says(
    library: Library, alice_api: APIClient, bob_api: APIClient, settings: Any
) -> None:
    openapi = alice_api.get("/api/schema/", {"format": "json"}).json()
    anonymous = APIClient()
    own = alice_api.post(
        "/api/assistant/ask", {"question": NIGHTJAR_QUESTION}, format="json"
    ).json()["conversation_id"]
    others = bob_api.post(
        "/api/assistant/ask", {"question": "What does a seat cost?"}, format="json"
    ).json()["conversation_id"]
    ask, search = "/api/assistant/ask", "/api/assistant/search"
    conversations = "/api/assistant/conversations"
    one = "/api/assistant/conversations/{conversation_id}"
    read_only = APIClient()
    read_only.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token(library.nobody, ['read'])}")
    limited = token_client(library.nobody)

    def over_the_limit() -> Any:
        settings.RATE_LIMIT_ASK = "1/minute"
        limited.post(ask, {"question": "Train travel?"}, format="json")
        return limited.post(ask, {"question": "Train travel?"}, format="json")

    calls: list[tuple[str, str, Callable[[], Any]]] = [
        (ask, "post", lambda: alice_api.post(ask, {"question": "Train travel?"}, format="json")),
        (
            ask,
            "post",
            lambda: alice_api.post(ask, {"question": "Meals?", "stream": True}, format="json"),
        ),
        (ask, "post", lambda: alice_api.post(ask, {"question": ""}, format="json")),
        (ask, "post", lambda: anonymous.post(ask, {"question": "Hi?"}, format="json")),
        (ask, "post", lambda: read_only.post(ask, {"question": "Hi?"}, format="json")),
        (ask, "post", over_the_limit),
        (
            ask,
            "post",
            lambda: alice_api.post(ask, {"question": "And?", "conversation_id": others}),
        ),
        (search, "get", lambda: alice_api.get(search, {"q": "travel policy"})),
        (search, "get", lambda: alice_api.get(search, {"k": "0"})),
        (search, "get", lambda: anonymous.get(search, {"q": "travel"})),
        (conversations, "get", lambda: alice_api.get(conversations)),
        (conversations, "get", lambda: anonymous.get(conversations)),
        (one, "get", lambda: alice_api.get(f"{conversations}/{own}")),
        (one, "get", lambda: anonymous.get(f"{conversations}/{own}")),
        (one, "get", lambda: alice_api.get(f"{conversations}/{others}")),
        (
            one,
            "patch",
            lambda: alice_api.patch(f"{conversations}/{own}", {"title": "New"}, format="json"),
        ),
        (one, "patch", lambda: alice_api.patch(f"{conversations}/{own}", {}, format="json")),
        (one, "patch", lambda: anonymous.patch(f"{conversations}/{own}", {"title": "x"})),
        (one, "patch", lambda: alice_api.patch(f"{conversations}/{others}", {"title": "x"})),
        (one, "delete", lambda: anonymous.delete(f"{conversations}/{own}")),
        (one, "delete", lambda: alice_api.delete(f"{conversations}/{others}")),
        (one, "delete", lambda: alice_api.delete(f"{conversations}/{own}")),
    ]
    answered = {check_against_schema(openapi, path, method, call()) for path, method, call in calls}

    documented = {
        (path, method, int(code))
        for path, operations in openapi["paths"].items()
        if path.startswith("/api/assistant/")
        for method, operation in operations.items()
        for code in operation["responses"]
    }
    assert documented == answered
