"""The employee portal: ask, read the answer as it streams, open its sources, give feedback."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any

from asgiref.sync import sync_to_async
from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.views.decorators.http import require_GET, require_POST
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline

from accounts import roles
from accounts.limits import Limited, aask_admit, holding_slot, limited_response
from assistant import selectors, services
from assistant.answering import AnswerEvent, QuestionRejected, answer_events, question_validate
from assistant.api import new_request_id, sse_frame
from assistant.models import Answer, Conversation
from assistant.rendering import markdown_engine, safe_html
from assistant.retrieval import passages_for_user
from assistant.services import PortalInputError
from config.errors import json_error, wants_json
from config.json_bodies import JSONBodyRejected, json_body_read
from ingestion.access import readable_document_choice, readable_documents
from ingestion.review import ReviewState, review_states

logger = logging.getLogger(__name__)

# `[1]`, `[1, 3]`: the citation forms the answering service keeps.
_CITATION_GROUP = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# A citation with the space before it, taken out of plain-text excerpts.
_CITATION_MARK = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
FEEDBACK_EXCERPT_CHARS = 400
# How much of a passage the preview on a citation shows.
PREVIEW_CHARS = 600
# Documents offered to ask or search within (the first by title; the groups cover the rest).
SCOPE_DOCUMENTS_SHOWN = 300
# Documents and groups one question may name to ask within.
MAX_CHOSEN = 1000
SEARCH_RESULTS = 10


# ---- Answers as HTML ---------------------------------------------------------------------------


def _citation_rule(state: StateInline, silent: bool) -> bool:
    """Turn `[n]` into a link to source n of this answer; other brackets stay text."""
    if state.src[state.pos] != "[":
        return False
    match = _CITATION_GROUP.match(state.src, state.pos)
    if match is None:
        return False
    links: dict[int, str] = state.env.get("citation_links", {})
    numbers = [int(part) for part in match.group(1).split(",")]
    if not all(number in links for number in numbers):
        return False
    if not silent:
        state.push("text", "", 0).content = "["
        for position, number in enumerate(numbers):
            if position:
                state.push("text", "", 0).content = ", "
            link = state.push("link_open", "a", 1)
            link.attrs = {"href": links[number], "title": f"Open source {number}"}
            state.push("text", "", 0).content = str(number)
            state.push("link_close", "a", -1)
        state.push("text", "", 0).content = "]"
    state.pos = match.end()
    return True


@cache
def _markdown() -> MarkdownIt:
    # Raw HTML in an answer (or in a document it quotes) is shown as text, never as markup.
    markdown = markdown_engine()
    markdown.inline.ruler.before("link", "citation", _citation_rule)
    return markdown


def answer_html(answer: Answer) -> SafeString:
    """The answer's Markdown as sanitised HTML, its citations linked to the passage viewer."""
    links = {
        int(passage["n"]): reverse("assistant:passage", args=[answer.id, passage["n"]])
        for passage in answer.passages
    }
    return safe_html(_markdown().render(answer.answer, {"citation_links": links}))


@dataclass(frozen=True)
class AnswerView:
    """An answer as the thread shows it: rendered text and the reader's own feedback."""

    answer: Answer
    html: SafeString
    own_rating: int | None
    own_comment: str
    # Cited documents past their review date: document id -> the date (ingestion/review.py).
    overdue_documents: dict[int, date] = field(default_factory=dict)


def _answer_view(answer: Answer, states: dict[int, ReviewState] | None = None) -> AnswerView:
    own: list[Any] = getattr(answer, "own_feedback", [])
    if states is None:
        states = _review_states_of([answer])
    return AnswerView(
        answer=answer,
        html=answer_html(answer),
        own_rating=own[0].rating if own else None,
        own_comment=own[0].comment if own else "",
        overdue_documents={
            document_id: state.review_by
            for document_id, state in states.items()
            if state.overdue and state.review_by is not None
        },
    )


def _review_states_of(answers: list[Answer]) -> dict[int, ReviewState]:
    return review_states(
        citation.get("document_id") for answer in answers for citation in answer.citations
    )


# ---- The chat page -----------------------------------------------------------------------------


def _signed_in_user(request: HttpRequest) -> User:
    # login_required has let only signed-in users through; this narrows the type for the rest.
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


def _render_chat(
    request: HttpRequest,
    *,
    conversation: Conversation | None,
    question: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    user = _signed_in_user(request)
    answers = (
        selectors.answers_in_conversation(user=user, conversation=conversation)
        if conversation is not None
        else []
    )
    states = _review_states_of(list(answers))
    conversation_query = request.GET.get("q", "").strip()[:200]
    conversations = selectors.conversations_for_user(
        user=user, page_number=request.GET.get("page", 1), query=conversation_query
    )
    context = {
        "conversation": conversation,
        "conversations": conversations,
        "conversation_groups": selectors.conversations_by_period(
            conversations, today=timezone.localdate()
        ),
        "conversation_query": conversation_query,
        "scope": _scope_choices(user),
        "answers": [_answer_view(answer, states) for answer in answers],
        "question": question,
        "error": error,
        "question_max_chars": settings.QUESTION_MAX_CHARS,
    }
    return render(request, "assistant/home.html", context, status=status)


def _scope_choices(user: User) -> dict[str, Any]:
    """What a reader may ask within: their groups that share documents, and the documents."""
    readable = readable_documents(user)
    groups = (
        Group.objects.filter(user=user, documents__in=readable)
        .annotate(document_count=Count("documents", distinct=True))
        .order_by("name")
    )
    documents = list(readable.order_by("title", "id").values("id", "title")[:SCOPE_DOCUMENTS_SHOWN])
    return {"groups": list(groups), "documents": documents}


def _id_list(raw: Any) -> list[int]:
    """Ids from a JSON list or a form's repeated field; anything not an id is left out."""
    values = raw if isinstance(raw, list) else []
    ids = []
    for value in values[:MAX_CHOSEN]:
        if isinstance(value, bool):
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if 0 < number < 2**63:
            ids.append(number)
    return ids


def _document_choice(user: User, documents: list[int], groups: list[int]) -> frozenset[int] | None:
    """The documents the reader chose to ask within (only those they may read), or None to
    ask within everything they may read."""
    if not documents and not groups:
        return None
    return readable_document_choice(user, document_ids=documents, group_ids=groups)


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return _render_chat(request, conversation=None)


@login_required
@require_GET
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.conversation_for_user(
        user=_signed_in_user(request), conversation_id=conversation_id
    )
    return _render_chat(request, conversation=conversation)


@login_required
@require_POST
def conversation_rename(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.conversation_for_user(
        user=_signed_in_user(request), conversation_id=conversation_id
    )
    try:
        services.conversation_rename(conversation=conversation, title=request.POST.get("title", ""))
    except PortalInputError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Renamed to “{conversation.title}”.")
    return redirect("assistant:conversation", conversation_id=conversation.id)


@login_required
@require_POST
def conversation_remove(request: HttpRequest, conversation_id: int) -> HttpResponse:
    conversation = selectors.conversation_for_user(
        user=_signed_in_user(request), conversation_id=conversation_id
    )
    services.conversation_hide(conversation=conversation)
    messages.success(request, f"“{conversation.title}” was removed from your conversations.")
    return redirect("assistant:home")


# ---- Asking ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AskRequest:
    question: str
    conversation_id: int | None
    documents: list[int]
    groups: list[int]


def _ask_request(request: HttpRequest) -> AskRequest:
    """Read the question, the conversation and the chosen documents from a JSON or form body."""
    if request.content_type == "application/json":
        try:
            body = json_body_read(request, if_empty={})
        except JSONBodyRejected as rejected:
            raise QuestionRejected(rejected.message) from rejected
        if not isinstance(body, dict):
            raise QuestionRejected("The request body must be a JSON object.")
        documents, groups = _id_list(body.get("documents")), _id_list(body.get("groups"))
    else:
        body = request.POST
        documents = _id_list(request.POST.getlist("documents"))
        groups = _id_list(request.POST.getlist("groups"))
    question, conversation_id = _question_and_conversation(body)
    return AskRequest(question, conversation_id, documents, groups)


def _question_and_conversation(body: Any) -> tuple[str, int | None]:
    """The question and the conversation id of a JSON object or a form."""
    question = body.get("question")
    if not isinstance(question, str):
        raise QuestionRejected("Please type a question.")
    raw_conversation = body.get("conversation_id")
    if raw_conversation in (None, ""):
        return question, None
    try:
        return question, int(raw_conversation)
    except (TypeError, ValueError) as error:
        raise QuestionRejected("The conversation id must be a number.") from error


async def _own_conversation_exists(user: User, conversation_id: int | None) -> bool:
    if conversation_id is None:
        return True
    return await selectors.conversations_visible_to(user=user).filter(id=conversation_id).aexists()


def sse_bytes(kind: str, data: dict[str, Any]) -> bytes:
    return sse_frame(kind, data).encode()


def _event_data(event: AnswerEvent) -> dict[str, Any]:
    if event.kind == "done":
        answer_id = event.data["answer_id"]
        return {
            **event.data,
            "fragment_url": reverse("assistant:answer-fragment", args=[answer_id]),
            "conversation_url": reverse(
                "assistant:conversation", args=[event.data["conversation_id"]]
            ),
        }
    if event.kind == "meta":
        return {
            **event.data,
            "conversation_url": reverse(
                "assistant:conversation", args=[event.data["conversation_id"]]
            ),
        }
    return {"text": event.text}


async def _conversation_title(conversation_id: int) -> str:
    title = (
        await Conversation.objects.filter(id=conversation_id)
        .values_list("title", flat=True)
        .afirst()
    )
    return title or ""


async def _answer_stream(events: AsyncIterator[AnswerEvent]) -> AsyncIterator[bytes]:
    # Closing this stream (the client went away) closes the answering service's stream, which
    # then records the answer as cancelled with what it had produced.
    async with aclosing(events) as running:  # type: ignore[type-var]
        try:
            async for event in running:
                data = _event_data(event)
                if event.kind == "meta":
                    # The page lists a new conversation under the name it was given.
                    data["title"] = await _conversation_title(data["conversation_id"])
                yield sse_bytes(event.kind, data)
        except QuestionRejected as rejected:
            yield sse_bytes("error", {"message": str(rejected)})
        except Exception:
            logger.exception("An answer stream failed")
            yield sse_bytes(
                "error",
                {"message": "The answer failed on the server. Your question is kept; try again."},
            )


@require_POST
async def ask_stream(request: HttpRequest) -> HttpResponseBase:
    """Answer one question as Server-Sent Events: meta, reasoning, answer, ..., done."""
    user = await request.auser()
    if not isinstance(user, User):
        return json_error("Your session has ended. Log in again to ask.", 401)
    try:
        asked = _ask_request(request)
        question, conversation_id = question_validate(asked.question), asked.conversation_id
    except QuestionRejected as rejected:
        return json_error(str(rejected), 400)
    if not await _own_conversation_exists(user, conversation_id):
        return json_error("No such conversation.", 404)
    document_ids = await sync_to_async(_document_choice)(user, asked.documents, asked.groups)
    try:
        slot = await aask_admit(user_id=user.pk, token=None)
    except Limited as limited:
        # The page shows `detail` above the question box.
        return limited_response(limited)
    request_id = new_request_id()
    events = holding_slot(
        answer_events(
            user=user,
            question=question,
            conversation_id=conversation_id,
            request_id=request_id,
            document_ids=document_ids,
        ),
        slot,
    )
    response = StreamingHttpResponse(_answer_stream(events), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    # Proxies such as nginx would otherwise hold the tokens back until the buffer fills.
    response["X-Accel-Buffering"] = "no"
    response["X-Request-ID"] = request_id
    return response


@sync_to_async
def _render_chat_async(
    request: HttpRequest, conversation_id: int | None, question: str, error: str, status: int
) -> HttpResponse:
    conversation = (
        selectors.conversation_for_user(
            user=_signed_in_user(request), conversation_id=conversation_id
        )
        if conversation_id is not None
        else None
    )
    return _render_chat(
        request, conversation=conversation, question=question, error=error, status=status
    )


@login_required
@require_POST
async def ask(request: HttpRequest) -> HttpResponseBase:
    """The ask form without scripts: answer in full, then show the conversation."""
    user = await request.auser()
    if not isinstance(user, User):
        raise PermissionDenied
    question = request.POST.get("question", "")
    conversation_id: int | None = None
    try:
        asked = _ask_request(request)
        question, conversation_id = asked.question, asked.conversation_id
        if not await _own_conversation_exists(user, conversation_id):
            raise Http404("No such conversation.")
        question_validate(question)
    except QuestionRejected as rejected:
        return await _render_chat_async(request, conversation_id, question, str(rejected), 400)
    try:
        slot = await aask_admit(user_id=user.pk, token=None)
    except Limited as limited:
        response = await _render_chat_async(
            request, conversation_id, question, limited.message, 429
        )
        response["Retry-After"] = str(limited.retry_after_s)
        return response
    document_ids = await sync_to_async(_document_choice)(user, asked.documents, asked.groups)
    done: dict[str, Any] = {}
    try:
        async for event in holding_slot(
            answer_events(
                user=user,
                question=question,
                conversation_id=conversation_id,
                document_ids=document_ids,
            ),
            slot,
        ):
            if event.kind == "done":
                done = event.data
    except QuestionRejected as rejected:
        return await _render_chat_async(request, None, question, str(rejected), 400)
    url = reverse("assistant:conversation", args=[done["conversation_id"]])
    return redirect(f"{url}#answer-{done['answer_id']}")


@login_required
@require_GET
def answer_fragment(request: HttpRequest, answer_id: int) -> HttpResponse:
    """One answer as the thread shows it; the page swaps it in once the stream is done."""
    answer = selectors.answer_for_user(user=_signed_in_user(request), answer_id=answer_id)
    return render(request, "assistant/_answer.html", {"item": _answer_view(answer)})


# ---- Feedback ----------------------------------------------------------------------------------


@login_required
@require_POST
def answer_feedback(request: HttpRequest, answer_id: int) -> HttpResponse:
    user = _signed_in_user(request)
    answer = selectors.answer_for_user(user=user, answer_id=answer_id)
    try:
        rating = int(request.POST.get("rating", ""))
    except ValueError:
        rating = 0
    try:
        feedback = services.feedback_give(
            user=user, answer=answer, rating=rating, comment=request.POST.get("comment", "")
        )
    except PortalInputError as error:
        if wants_json(request):
            return json_error(str(error), 400)
        messages.error(request, str(error))
    else:
        thanks = "Thank you: your feedback was saved."
        if wants_json(request):
            return JsonResponse(
                {"rating": feedback.rating, "comment": feedback.comment, "message": thanks}
            )
        messages.success(request, thanks)
    url = reverse("assistant:conversation", args=[answer.conversation_id])
    return redirect(f"{url}#answer-{answer.id}")


@login_required
@require_GET
def feedback_list(request: HttpRequest) -> HttpResponse:
    """For auditors (and superusers): the answers people rated, the worst first."""
    if not roles.is_auditor(request.user):
        raise PermissionDenied("Only auditors may read the feedback on answers.")
    page = selectors.answers_with_feedback_worst_first(page_number=request.GET.get("page", 1))
    records = selectors.answer_record_sequences([answer.id for answer in page])
    rows = [
        {
            "answer": answer,
            "excerpt": _CITATION_MARK.sub("", answer.answer)[:FEEDBACK_EXCERPT_CHARS],
            "truncated": len(answer.answer) > FEEDBACK_EXCERPT_CHARS,
            "record_sequence": records.get(answer.id),
        }
        for answer in page
    ]
    return render(request, "assistant/feedback_list.html", {"page_obj": page, "rows": rows})


# ---- Sources -----------------------------------------------------------------------------------


@login_required
@require_GET
def passage(request: HttpRequest, answer_id: int, n: int) -> HttpResponse:
    """Source n of one of the user's answers, highlighted among its neighbours."""
    found = selectors.passage_for_user(user=_signed_in_user(request), answer_id=answer_id, n=n)
    return render(request, "assistant/passage.html", {"found": found})


@login_required
@require_GET
def passage_by_point(request: HttpRequest, point_id: uuid.UUID) -> HttpResponse:
    found = selectors.passage_by_point_for_user(user=_signed_in_user(request), point_id=point_id)
    return render(request, "assistant/passage.html", {"found": found})


@login_required
@require_GET
def version_file(request: HttpRequest, document_id: int, number: int) -> FileResponse:
    """The original file of a document version, for those who may read the document."""
    version = selectors.version_for_user(
        user=_signed_in_user(request), document_id=document_id, number=number
    )
    try:
        stored = version.file.open("rb")
    except FileNotFoundError as error:
        raise Http404("The stored file is missing.") from error
    return FileResponse(stored, as_attachment=True, filename=version.original_name)


@login_required
@require_GET
def passage_preview(request: HttpRequest, answer_id: int, n: int) -> JsonResponse:
    """Source n of an answer, briefly, for the preview shown on a citation's hover or focus."""
    found = selectors.passage_for_user(user=_signed_in_user(request), answer_id=answer_id, n=n)
    return JsonResponse(
        {
            "n": n,
            "title": found.version.document.title,
            "source": found.version.document.source_path,
            "page": found.chunk.page,
            "heading": found.chunk.heading,
            "text": found.chunk.text[:PREVIEW_CHARS],
            "truncated": len(found.chunk.text) > PREVIEW_CHARS,
            "url": reverse("assistant:passage", args=[answer_id, n]),
        }
    )


@login_required
@require_GET
def passage_panel(request: HttpRequest, answer_id: int, n: int) -> HttpResponse:
    """Source n among its neighbours, for the side panel that opens beside the conversation."""
    found = selectors.passage_for_user(user=_signed_in_user(request), answer_id=answer_id, n=n)
    return render(request, "assistant/_passage_panel.html", {"found": found})


# ---- Search without a model --------------------------------------------------------------------


class SearchForm(forms.Form):
    q = forms.CharField(required=False, max_length=500, label="Search for")
    document = forms.TypedChoiceField(
        required=False, coerce=int, empty_value=None, label="In document"
    )
    since = forms.DateField(
        required=False, label="Uploaded from", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="Uploaded until", widget=forms.DateInput(attrs={"type": "date"})
    )

    def __init__(self, *args: Any, documents: Iterable[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["document"].choices = [  # type: ignore[attr-defined]
            ("", "All documents you may read"),
            *((str(d["id"]), d["title"]) for d in documents),
        ]


@login_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    """The passages for a query, best first, without asking a model; only what the user may read."""
    user = _signed_in_user(request)
    readable = readable_documents(user)
    documents = list(readable.order_by("title", "id").values("id", "title")[:SCOPE_DOCUMENTS_SHOWN])
    form = SearchForm(request.GET or None, documents=documents)
    results: list[Any] = []
    searched = False
    if form.is_valid() and form.cleaned_data["q"].strip():
        data = form.cleaned_data
        chosen = readable
        if data["document"] is not None:
            chosen = chosen.filter(id=data["document"])
        if data["since"] is not None:
            chosen = chosen.filter(current_version__created_at__date__gte=data["since"])
        if data["until"] is not None:
            chosen = chosen.filter(current_version__created_at__date__lte=data["until"])
        filtered = any(data[name] is not None for name in ("document", "since", "until"))
        results = passages_for_user(
            user=user,
            query=data["q"],
            k=SEARCH_RESULTS,
            document_ids=frozenset(chosen.values_list("id", flat=True)) if filtered else None,
        )
        searched = True
    return render(
        request,
        "assistant/search.html",
        {"form": form, "results": results, "searched": searched},
    )
