"""The employee portal: ask, read the answer as it streams, open its sources, give feedback."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any

import nh3
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
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
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST
from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline

from accounts import roles
from accounts.limits import Limited, aask_admit, holding_slot, limited_response
from assistant import selectors, services
from assistant.answering import AnswerEvent, QuestionRejected, answer_events, question_validate
from assistant.api import new_request_id, sse_frame
from assistant.models import Answer, Conversation
from assistant.services import PortalInputError
from config.errors import json_error, wants_json
from config.json_bodies import JSONBodyRejected, json_body_read
from ingestion.review import ReviewState, review_states

logger = logging.getLogger(__name__)

# `[1]`, `[1, 3]`: the citation forms the answering service keeps.
_CITATION_GROUP = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
# A citation with the space before it, taken out of plain-text excerpts.
_CITATION_MARK = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_ANSWER_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ANSWER_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
FEEDBACK_EXCERPT_CHARS = 400


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
    markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    markdown.inline.ruler.before("link", "citation", _citation_rule)
    return markdown


def answer_html(answer: Answer) -> SafeString:
    """The answer's Markdown as sanitised HTML, its citations linked to the passage viewer."""
    links = {
        int(passage["n"]): reverse("assistant:passage", args=[answer.id, passage["n"]])
        for passage in answer.passages
    }
    rendered = _markdown().render(answer.answer, {"citation_links": links})
    cleaned = nh3.clean(
        rendered,
        tags=_ANSWER_TAGS,
        attributes=_ANSWER_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
    )
    return mark_safe(cleaned)  # nh3 has just sanitised it


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
    context = {
        "conversation": conversation,
        "conversations": selectors.conversations_for_user(
            user=user, page_number=request.GET.get("page", 1)
        ),
        "answers": [_answer_view(answer, states) for answer in answers],
        "question": question,
        "error": error,
        "question_max_chars": settings.QUESTION_MAX_CHARS,
    }
    return render(request, "assistant/home.html", context, status=status)


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


def _question_and_conversation(request: HttpRequest) -> tuple[str, int | None]:
    """Read the question and the conversation id from a JSON or a form body."""
    if request.content_type == "application/json":
        try:
            body = json_body_read(request, if_empty={})
        except JSONBodyRejected as rejected:
            raise QuestionRejected(rejected.message) from rejected
        if not isinstance(body, dict):
            raise QuestionRejected("The request body must be a JSON object.")
    else:
        body = request.POST
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
        question, conversation_id = _question_and_conversation(request)
        question = question_validate(question)
    except QuestionRejected as rejected:
        return json_error(str(rejected), 400)
    if not await _own_conversation_exists(user, conversation_id):
        return json_error("No such conversation.", 404)
    try:
        slot = await aask_admit(user_id=user.pk, token=None)
    except Limited as limited:
        # The page shows `detail` above the question box.
        return limited_response(limited)
    request_id = new_request_id()
    events = holding_slot(
        answer_events(
            user=user, question=question, conversation_id=conversation_id, request_id=request_id
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
        question, conversation_id = _question_and_conversation(request)
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
    done: dict[str, Any] = {}
    try:
        async for event in holding_slot(
            answer_events(user=user, question=question, conversation_id=conversation_id), slot
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
    rows = [
        {
            "answer": answer,
            "excerpt": _CITATION_MARK.sub("", answer.answer)[:FEEDBACK_EXCERPT_CHARS],
            "truncated": len(answer.answer) > FEEDBACK_EXCERPT_CHARS,
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
