"""The portal pages, through Django's test client: access, conversations, streaming, sources."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Group, User
from django.http import FileResponse, StreamingHttpResponse
from django.test import AsyncClient, Client
from django.utils import timezone

from assistant.models import (
    Answer,
    AnswerMode,
    AnswerStatus,
    Conversation,
    ConversationOrigin,
    Feedback,
)
from audit.models import AuditEvent, AuditRecord
from ingestion.models import Chunk, Document
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes
from tests.assistant.conftest import CANARY, Library
from tests.config.nested_json import THOUSAND_DEEP, TOO_DEEP, padded_to

SECRET = "7-4-1-9"
NIGHTJAR_QUESTION = "What is the launch code for Project Nightjar?"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def without_csrf_token(page: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b"", page)


def parse_sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def stream(user: User, payload: dict[str, Any] | str) -> tuple[int, str, list[tuple[str, Any]]]:
    """POST to /ask/stream over ASGI and read the Server-Sent Events as they come."""

    async def consume() -> tuple[int, str, list[tuple[str, Any]]]:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.post("/ask/stream", payload, content_type="application/json")
        if not isinstance(response, StreamingHttpResponse):
            return response.status_code, response["Content-Type"], [("refused", response.json())]
        body = b""
        async for part in response.streaming_content:
            body += part
        return response.status_code, response["Content-Type"], parse_sse(body.decode())

    return async_to_sync(consume)()


def ask(user: User, question: str, conversation_id: int | None = None) -> dict[str, Any]:
    status, _, events = stream(user, {"question": question, "conversation_id": conversation_id})
    assert status == 200, events
    kind, done = events[-1]
    assert kind == "done", events
    return dict(done)


def a_conversation(user: User, title: str) -> Conversation:
    return Conversation.objects.create(user=user, title=title)


def an_answer(user: User, question: str, text: str, **fields: Any) -> Answer:
    """An answer as the answering service saves it, without searching for one."""
    conversation = fields.pop("conversation", None) or a_conversation(user, question)
    return Answer.objects.create(
        conversation=conversation,
        user=user,
        question=question,
        searched_query=question,
        answer=text,
        status=fields.pop("status", AnswerStatus.ANSWERED),
        mode=fields.pop("mode", AnswerMode.LLM),
        **fields,
    )


class People:
    """Two employees in different groups, and no documents: for pages that need none."""

    def __init__(self) -> None:
        self.alice = User.objects.create_user("alice", password="pw-alice-123")
        self.bob = User.objects.create_user("bob", password="pw-bob-123")


@pytest.fixture
def people(db: None) -> People:
    return People()


# ---- Access ------------------------------------------------------------------------------------


def test_the_portal_asks_for_a_login_first(client: Client, db: None) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    refused = client.post("/ask/stream", {"question": "hello?"}, content_type="application/json")
    assert refused.status_code == 401
    assert "log in" in refused.json()["detail"].lower()


def test_the_ask_page_has_a_labelled_box_with_its_limit(people: People, settings: Any) -> None:
    settings.QUESTION_MAX_CHARS = 1234
    page = logged_in(people.alice).get("/").content.decode()
    assert '<label for="question">' in page
    assert 'maxlength="1234"' in page
    assert "Up to 1234 characters" in page
    assert "js/chat.js" in page
    assert "<script>" not in page.split("<main", 1)[1]


# ---- Conversations -----------------------------------------------------------------------------


def test_the_sidebar_lists_only_the_users_own_conversations(people: People) -> None:
    a_conversation(people.alice, "Alice asks about rockets")
    a_conversation(people.bob, "Bob asks about prices")
    removed = a_conversation(people.alice, "Alice removed this one")
    logged_in(people.alice).post(f"/c/{removed.id}/remove")

    page = logged_in(people.alice).get("/").content.decode()
    assert "Alice asks about rockets" in page
    assert "Bob asks about prices" not in page
    assert "Alice removed this one" not in page


def test_the_sidebar_is_paginated_newest_first(people: People) -> None:
    for number in range(25):
        a_conversation(people.alice, f"Topic number {number:02d}")
    client = logged_in(people.alice)
    first_page = client.get("/").content.decode()
    assert "Topic number 24" in first_page
    assert "Topic number 00" not in first_page
    assert "Page 1 of 2" in first_page
    assert "Topic number 00" in client.get("/?page=2").content.decode()


def test_another_users_conversation_is_not_found(people: People) -> None:
    bobs = a_conversation(people.bob, "Bob's pricing questions")
    alice = logged_in(people.alice)
    assert alice.get(f"/c/{bobs.id}/").status_code == 404
    assert alice.post(f"/c/{bobs.id}/rename", {"title": "Mine now"}).status_code == 404
    assert alice.post(f"/c/{bobs.id}/remove").status_code == 404
    bobs.refresh_from_db()
    assert bobs.title == "Bob's pricing questions"
    assert bobs.hidden_at is None


def test_a_conversation_can_be_renamed_and_removed_without_losing_answers(
    people: People,
) -> None:
    answer = an_answer(people.alice, "What is the launch code?", "It is secret.")
    conversation_id = answer.conversation_id
    client = logged_in(people.alice)

    renamed = client.post(f"/c/{conversation_id}/rename", {"title": "  Nightjar   codes "})
    assert renamed.status_code == 302
    assert (
        '<h1 id="chat-heading">Nightjar codes</h1>'
        in client.get(f"/c/{conversation_id}/").content.decode()
    )

    client.post(f"/c/{conversation_id}/rename", {"title": "   "})
    assert Conversation.objects.get(id=conversation_id).title == "Nightjar codes"

    removed = client.post(f"/c/{conversation_id}/remove")
    assert removed.status_code == 302
    assert client.get(f"/c/{conversation_id}/").status_code == 404
    assert f'href="/c/{conversation_id}/"' not in client.get("/").content.decode()
    assert Answer.objects.filter(conversation_id=conversation_id).count() == 1


def test_a_follow_up_continues_the_conversation_shown_as_one_thread(library: Library) -> None:
    first = ask(library.alice, NIGHTJAR_QUESTION)
    follow_up = ask(library.alice, "When is the first test flight?", first["conversation_id"])
    assert follow_up["conversation_id"] == first["conversation_id"]

    page = logged_in(library.alice).get(f"/c/{first['conversation_id']}/").content.decode()
    assert page.index(NIGHTJAR_QUESTION) < page.index("When is the first test flight?")
    assert f'href="/passages/{first["answer_id"]}/1/"' in page
    assert "nightjar.md" in page
    assert "Extracted from your documents without a language model" in page
    assert f'name="conversation_id" value="{first["conversation_id"]}"' in page

    status, _, _ = stream(
        library.bob, {"question": "and the code?", "conversation_id": first["conversation_id"]}
    )
    assert status == 404
    assert Answer.objects.count() == 2


# ---- Asking ------------------------------------------------------------------------------------


def test_the_stream_sends_the_events_of_an_extractive_answer_in_order(library: Library) -> None:
    status, content_type, events = stream(library.alice, {"question": NIGHTJAR_QUESTION})
    assert status == 200
    assert content_type.startswith("text/event-stream")
    kinds = [kind for kind, _ in events]
    assert kinds == ["meta", "answer", "done"]
    meta, answer, done = (data for _, data in events)
    assert meta["mode"] == "extractive"
    assert meta["conversation_url"] == f"/c/{meta['conversation_id']}/"
    assert meta["title"] == NIGHTJAR_QUESTION
    assert SECRET in answer["text"]
    assert done["status"] == "answered"
    assert done["citations"][0]["source"] == "nightjar.md"
    assert done["fragment_url"] == f"/answers/{done['answer_id']}/fragment"

    fragment = logged_in(library.alice).get(done["fragment_url"]).content.decode()
    assert "Extracted from your documents without a language model" in fragment
    assert f'<a href="/passages/{done["answer_id"]}/1/"' in fragment
    assert SECRET in fragment
    assert logged_in(library.bob).get(done["fragment_url"]).status_code == 404


def test_the_stream_needs_the_csrf_token_and_accepts_a_form_body(people: People) -> None:
    guarded = Client(enforce_csrf_checks=True)
    guarded.force_login(people.alice)
    assert guarded.post("/ask/stream", {"question": "Where is the archive?"}).status_code == 403

    async def consume() -> str:
        client = AsyncClient()
        await client.aforce_login(people.alice)
        response = await client.post("/ask/stream", {"question": "Where is the archive?"})
        assert isinstance(response, StreamingHttpResponse)
        return b"".join([part async for part in response.streaming_content]).decode()

    events = parse_sse(async_to_sync(consume)())
    # Nothing is readable yet, so the answer is a plain abstention, recorded all the same.
    assert events[-1][0] == "done"
    assert events[-1][1]["status"] == AnswerStatus.ABSTAINED
    assert Answer.objects.get().question == "Where is the archive?"


@pytest.mark.parametrize(
    ("question", "message"),
    [("", "Please type a question."), ("   \n", "Please type a question."), ("x" * 40, "limit")],
)
def test_a_bad_question_is_refused_with_a_message_before_any_model_is_asked(
    people: People, settings: Any, question: str, message: str
) -> None:
    settings.QUESTION_MAX_CHARS = 30
    # An endpoint that does not exist: asking it would fail loudly, not refuse politely.
    settings.VLLM_URLS = ["http://127.0.0.1:9/v1"]
    status, _, events = stream(people.alice, {"question": question})
    assert status == 400
    assert message in events[0][1]["detail"]
    assert not Answer.objects.exists()
    assert not Conversation.objects.exists()


def test_a_body_nested_a_thousand_deep_is_refused_with_400_not_a_server_error(
    people: People,
) -> None:
    status, content_type, events = stream(people.alice, THOUSAND_DEEP)
    assert (status, content_type) == (400, "application/json")
    assert events == [("refused", {"detail": TOO_DEEP})]

    page = logged_in(people.alice).post("/ask/", THOUSAND_DEEP, content_type="application/json")
    assert page.status_code == 400
    assert TOO_DEEP in page.content.decode()
    assert not Answer.objects.exists()


def test_a_body_nested_to_the_limit_is_read_as_usual(people: People) -> None:
    status, _, events = stream(people.alice, padded_to({"question": ""}))
    assert status == 400
    assert events == [("refused", {"detail": "Please type a question."})]


def test_a_body_over_the_size_limit_is_refused_with_400(people: People, settings: Any) -> None:
    settings.JSON_BODY_MAX_BYTES = 200
    status, _, events = stream(people.alice, {"question": "x" * 200})
    assert status == 400
    assert events == [("refused", {"detail": "The JSON body is too large (more than 200 bytes)."})]


def test_the_form_without_scripts_answers_and_keeps_a_refused_question(library: Library) -> None:
    client = logged_in(library.alice)
    answered = client.post("/ask/", {"question": NIGHTJAR_QUESTION})
    assert answered.status_code == 302
    answer = Answer.objects.get()
    assert answered["Location"] == f"/c/{answer.conversation_id}/#answer-{answer.id}"

    refused = client.post(
        "/ask/", {"question": "?!", "conversation_id": str(answer.conversation_id)}
    )
    assert refused.status_code == 400
    page = refused.content.decode()
    assert "The question has no words in it." in page
    assert ">?!</textarea>" in page
    assert Answer.objects.count() == 1


def test_an_abstained_answer_says_so_and_shows_what_was_searched(library: Library) -> None:
    done = ask(library.nobody, "What is the price of the Kestrel licence?")
    assert done["status"] == AnswerStatus.ABSTAINED
    fragment = logged_in(library.nobody).get(done["fragment_url"]).content.decode()
    assert "Your documents do not answer this question." in fragment
    assert "Searched for: <q>What is the price of the Kestrel licence?</q>" in fragment


def test_a_failed_answer_shows_why(library: Library, settings: Any) -> None:
    settings.VLLM_URLS = ["http://127.0.0.1:9/v1"]
    settings.VLLM_CONNECT_TIMEOUT_S = 1.0
    status, _, events = stream(library.alice, {"question": NIGHTJAR_QUESTION})
    assert status == 200
    kinds = [kind for kind, _ in events]
    assert "notice" in kinds
    done = events[-1][1]
    assert done["status"] == AnswerStatus.FAILED
    fragment = logged_in(library.alice).get(done["fragment_url"]).content.decode()
    assert "No answer could be written." in fragment
    assert "Was this answer helpful?" not in fragment


# ---- Sources -----------------------------------------------------------------------------------


def test_the_passage_viewer_highlights_the_cited_passage_in_its_version(library: Library) -> None:
    done = ask(library.alice, NIGHTJAR_QUESTION)
    client = logged_in(library.alice)
    page = client.get(f"/passages/{done['answer_id']}/1/").content.decode()
    cited = page.split('id="cited"', 1)[1].split("</article>", 1)[0]
    assert f"<p>{CANARY}" in cited
    assert "Project Nightjar" in page
    document = Document.objects.get(source_path="nightjar.md")
    download_url = f"/documents/{document.id}/versions/1/file"
    assert download_url in page

    downloaded = client.get(download_url)
    assert isinstance(downloaded, FileResponse)
    assert "attachment" in downloaded["Content-Disposition"]
    assert CANARY.encode() in downloaded.getvalue()


def test_a_guessed_passage_or_file_of_another_group_is_not_found_like_a_missing_one(
    library: Library,
) -> None:
    done = ask(library.alice, NIGHTJAR_QUESTION)
    document = Document.objects.get(source_path="nightjar.md")
    chunk = Chunk.objects.filter(version__document=document).first()
    assert chunk is not None
    bob = logged_in(library.bob)
    alice = logged_in(library.alice)
    assert alice.get(f"/passages/point/{chunk.point_id}/").status_code == 200

    guessed = [
        f"/passages/{done['answer_id']}/1/",
        f"/passages/point/{chunk.point_id}/",
        f"/documents/{document.id}/versions/1/file",
    ]
    missing = [
        f"/passages/{done['answer_id'] + 1000}/1/",
        f"/passages/point/{uuid.uuid4()}/",
        f"/documents/{document.id + 1000}/versions/1/file",
    ]
    for guessed_url, missing_url in zip(guessed, missing, strict=True):
        refused, absent = bob.get(guessed_url), bob.get(missing_url)
        assert refused.status_code == absent.status_code == 404
        # The page is the site's, with its log-out form: its token is masked anew each time.
        assert without_csrf_token(refused.content) == without_csrf_token(absent.content)
        assert SECRET.encode() not in refused.content

    # Access is checked at every read: out of the group, the passage closes for Alice too.
    library.alice.groups.remove(library.group_a)
    assert alice.get(f"/passages/{done['answer_id']}/1/").status_code == 404


def test_script_in_a_document_or_answer_is_shown_as_text(people: People) -> None:
    document_upload_bytes(
        name="falcon.txt",
        data=b"The Falcon budget marker is <script>window.__pwned=1</script> in the ledger.\n",
        is_public=True,
    )
    run_pending_once()
    chunk = Chunk.objects.get(version__document__source_path="falcon.txt")
    answer = an_answer(
        people.bob,
        "What is the Falcon budget marker?",
        "It is <script>window.__pwned=1</script> **here** [1] [2]",
        passages=[
            {
                "n": 1,
                "point_id": str(chunk.point_id),
                "version_id": chunk.version_id,
                "chunk_index": chunk.index,
            }
        ],
    )
    client = logged_in(people.bob)
    fragment = client.get(f"/answers/{answer.id}/fragment").content.decode()
    assert "<script>window" not in fragment
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in fragment
    assert "<strong>here</strong>" in fragment
    assert f'<a href="/passages/{answer.id}/1/"' in fragment
    # [2] names no source: it stays text, not a link.
    assert "[2]" in fragment
    assert f"/passages/{answer.id}/2/" not in fragment

    passage_page = client.get(f"/passages/{answer.id}/1/").content.decode()
    assert "<script>window" not in passage_page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in passage_page


# ---- Feedback ----------------------------------------------------------------------------------


def test_feedback_is_saved_once_per_answer_and_can_be_changed(people: People) -> None:
    answer = an_answer(people.alice, "When is the test flight?", "In the autumn.")
    client = logged_in(people.alice)
    url = f"/answers/{answer.id}/feedback"
    as_json = {"Accept": "application/json"}

    first = client.post(url, {"rating": "1"}, headers=as_json)
    assert first.json()["rating"] == 1
    changed = client.post(url, {"rating": "-1", "comment": "Missing the date."}, headers=as_json)
    assert changed.status_code == 200
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.comment) == (-1, "Missing the date.")

    fragment = client.get(f"/answers/{answer.id}/fragment").content.decode()
    assert 'value="-1" class="button button-small" aria-pressed="true"' in fragment
    assert "Missing the date." in fragment

    without_scripts = client.post(url, {"rating": "1"})
    assert without_scripts["Location"] == f"/c/{answer.conversation_id}/#answer-{answer.id}"
    assert Feedback.objects.get().rating == 1

    assert client.post(url, {"rating": "5"}, headers=as_json).status_code == 400
    assert logged_in(people.bob).post(url, {"rating": "1"}).status_code == 404
    assert Feedback.objects.count() == 1


def test_the_feedback_page_shows_the_worst_rated_answers_first_to_auditors_only(
    people: People, settings: Any
) -> None:
    good = an_answer(people.alice, "When is the Nightjar test flight?", "In the autumn [1].")
    bad = an_answer(people.bob, "What does the Kestrel licence cost?", "1,000 euros.")
    logged_in(people.alice).post(f"/answers/{good.id}/feedback", {"rating": "1"})
    logged_in(people.bob).post(
        f"/answers/{bad.id}/feedback", {"rating": "-1", "comment": "Wrong year."}
    )
    assert logged_in(people.alice).get("/feedback/").status_code == 403

    staff = User.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    assert logged_in(staff).get("/feedback/").status_code == 403

    reviewer = User.objects.create_user("reviewer", password="pw-reviewer-123")
    reviewer.groups.add(Group.objects.create(name=settings.AUDITORS_GROUP))
    page = logged_in(reviewer).get("/feedback/").content.decode()
    assert page.index("Kestrel licence") < page.index("Nightjar test flight")
    assert "Wrong year." in page
    assert "Score -1" in page
    assert "Score 1" in page


def test_the_form_without_scripts_is_held_to_the_same_rate_limit(
    library: Library, settings: Any
) -> None:
    settings.RATE_LIMIT_ASK = "1/minute"
    client = logged_in(library.alice)
    assert client.post("/ask/", {"question": NIGHTJAR_QUESTION}).status_code == 302

    refused = client.post("/ask/", {"question": NIGHTJAR_QUESTION})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many questions: at most 1 a minute." in refused.content.decode()
    assert Answer.objects.count() == 1


# ---- Asking within a selection, searching without a model --------------------------------------


def test_asking_within_chosen_documents_searches_only_those(library: Library) -> None:
    travel = Document.objects.get(source_path="travel-policy.md")
    nightjar = Document.objects.get(source_path="nightjar.md")

    within_travel = stream(
        library.alice, {"question": NIGHTJAR_QUESTION, "documents": [travel.id]}
    )[2]
    within_nightjar = stream(
        library.alice, {"question": NIGHTJAR_QUESTION, "documents": [nightjar.id]}
    )[2]

    assert {c["document_id"] for c in within_travel[-1][1]["citations"]} <= {travel.id}
    assert SECRET not in json.dumps(within_travel)
    assert SECRET in within_nightjar[-1][1]["answer"]
    # The ledger says what the asker chose to ask within.
    record = AuditRecord.objects.get(
        event=AuditEvent.ANSWER, answer_id=within_travel[-1][1]["answer_id"]
    )
    assert json.loads(record.details)["document_choice"] == [travel.id]
    research_only = stream(
        library.alice, {"question": NIGHTJAR_QUESTION, "groups": [library.group_a.id]}
    )[2]
    assert SECRET in research_only[-1][1]["answer"]


def test_a_choice_naming_a_document_the_reader_may_not_read_finds_nothing_of_it(
    library: Library,
) -> None:
    pricing = Document.objects.get(source_path="pricing.md")
    question = "What is the list price of the Kestrel licence?"

    status, _, named = stream(library.alice, {"question": question, "documents": [pricing.id]})
    _, _, missing = stream(library.alice, {"question": question, "documents": [pricing.id + 999]})
    by_group = stream(library.alice, {"question": question, "groups": [library.group_b.id]})[2]

    assert status == 200
    for events in (named, missing, by_group):
        assert "1,200" not in json.dumps(events)
        kind, done = events[-1]
        assert kind == "done"
        assert (done["status"], done["citations"]) == ("abstained", [])
    # Naming it looks exactly like naming a document that does not exist.
    assert named[0][1]["sources"] == missing[0][1]["sources"] == 0
    assert named[-1][1]["answer"] == missing[-1][1]["answer"]


def test_the_search_page_lists_passages_without_a_model_within_access_and_filters(
    library: Library,
) -> None:
    travel = Document.objects.get(source_path="travel-policy.md")
    alice = logged_in(library.alice)

    found = alice.get("/search/", {"q": "launch code Nightjar"}).content.decode()
    assert CANARY in found
    assert "/passages/point/" in found
    filtered = alice.get("/search/", {"q": "launch code Nightjar", "document": str(travel.id)})
    assert CANARY not in filtered.content.decode()
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    later = alice.get("/search/", {"q": "launch code Nightjar", "since": tomorrow})
    assert "No passage of the documents you may read matches" in later.content.decode()

    bob = logged_in(library.bob).get("/search/", {"q": "launch code Nightjar"}).content.decode()
    assert CANARY not in bob
    # Nor is it offered among the documents to search in.
    assert "Project Nightjar" not in bob


def test_the_sidebar_groups_conversations_by_date_marks_api_ones_and_searches(
    people: People,
) -> None:
    today = a_conversation(people.alice, "Parking rules")
    old = a_conversation(people.alice, "Holiday carry-over")
    scripted = Conversation.objects.create(
        user=people.alice, title="Parking rules", origin=ConversationOrigin.OPENAI
    )
    an_answer(people.alice, "Where do visitors park?", "Level minus two.", conversation=today)
    Conversation.objects.filter(id=old.id).update(updated_at=timezone.now() - timedelta(days=40))
    client = logged_in(people.alice)

    page = client.get("/").content.decode()
    assert page.index("Today") < page.index("Parking rules") < page.index("Older")
    assert page.index("Older") < page.index("Holiday carry-over")
    assert page.count('class="tag origin-tag"') == 1
    assert f'href="/c/{scripted.id}/">Parking rules</a>\n' in page
    assert "/v1</span>" in page

    searched = client.get("/", {"q": "visitors"}).content.decode()
    assert f'href="/c/{today.id}/"' in searched
    assert f'href="/c/{old.id}/"' not in searched


def test_the_feedback_page_names_the_raters_and_links_the_record_and_sources(
    library: Library, settings: Any
) -> None:
    done = ask(library.alice, NIGHTJAR_QUESTION)
    logged_in(library.alice).post(
        f"/answers/{done['answer_id']}/feedback", {"rating": "-1", "comment": "Too short."}
    )
    reviewer = User.objects.create_user("reviewer", password="pw-reviewer-123")
    reviewer.groups.add(Group.objects.create(name=settings.AUDITORS_GROUP))

    page = logged_in(reviewer).get("/feedback/").content.decode()

    assert "Asked by alice" in page
    assert "by alice: Too short." in page
    assert "/audit/?conversation=" in page
    assert re.search(r'href="/audit/\d+/">audit record \d+</a>', page)
    assert "nightjar.md" in page


def test_the_passage_viewer_shows_a_markdown_document_s_code_lists_and_tables(
    people: People,
) -> None:
    document_upload_bytes(
        name="deploy.md",
        data=(
            b"# Deploying Kestrel\n\nRun `make deploy ENV=prod` after the smoke tests.\n\n"
            b"1. Tag the release\n2. Run the deploy\n\n"
            b"| Env | Command |\n| --- | --- |\n| prod | `make deploy ENV=prod` |\n\n"
            b"```sh\nmake deploy ENV=prod <script>alert(1)</script>\n```\n"
        ),
        is_public=True,
    )
    run_pending_once()
    chunk = Chunk.objects.get(version__document__source_path="deploy.md")
    assert "Run `make deploy ENV=prod` after" in chunk.text

    page = logged_in(people.alice).get(f"/passages/point/{chunk.point_id}/").content.decode()

    assert "<code>make deploy ENV=prod</code>" in page
    assert "<li>Tag the release</li>" in page
    assert "<th>Env</th>" in page
    assert "<pre><code>make deploy ENV=prod &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page
