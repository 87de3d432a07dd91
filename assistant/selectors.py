"""Reads for the portal. Anything another user owns, or the user may not read, is a 404.

Passages and files go through `ingestion.access`, the same rule search uses, so a guessed id
of another group's document looks exactly like an id that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from assistant.models import Answer, Conversation, Feedback
from audit.models import AuditEvent, AuditRecord
from ingestion.access import readable_chunks, readable_documents
from ingestion.models import Chunk, DocumentVersion

CONVERSATIONS_PER_PAGE = 20
FEEDBACK_ANSWERS_PER_PAGE = 20
# Passages shown before and after the cited one, so that it reads in its context.
NEIGHBOUR_CHUNKS = 2


@dataclass(frozen=True)
class PassageInVersion:
    """A cited passage among its neighbours in the document version it came from."""

    chunk: Chunk
    version: DocumentVersion
    neighbours: list[Chunk]
    answer: Answer | None
    n: int | None


def conversations_visible_to(*, user: User) -> QuerySet[Conversation]:
    """The user's conversations that are not removed, most recently used first.

    Every face reads conversations through this: another's, or a removed one, does not exist.
    """
    return Conversation.objects.filter(user=user, hidden_at__isnull=True).order_by(
        "-updated_at", "-id"
    )


def conversations_for_user(
    *, user: User, page_number: Any = 1, query: str = ""
) -> Page[Conversation]:
    """The sidebar's page of the user's conversations; with `query`, those whose title or
    questions hold it."""
    conversations = conversations_visible_to(user=user)
    words = query.split()
    for word in words:
        conversations = conversations.filter(
            Q(title__icontains=word)
            | Q(
                id__in=Answer.objects.filter(user=user, question__icontains=word).values(
                    "conversation_id"
                )
            )
        )
    return Paginator(conversations, CONVERSATIONS_PER_PAGE).get_page(page_number)


@dataclass(frozen=True)
class ConversationGroup:
    """Conversations of one period of the sidebar: today, the last seven days, older."""

    label: str
    conversations: list[Conversation]


def conversations_by_period(
    conversations: Iterable[Conversation], *, today: date
) -> list[ConversationGroup]:
    """The sidebar's conversations under Today, Previous 7 days, Previous 30 days and Older,
    by when each was last used (in the server's time zone)."""
    periods = [
        ("Today", today),
        ("Previous 7 days", today - timedelta(days=7)),
        ("Previous 30 days", today - timedelta(days=30)),
    ]
    groups: dict[str, list[Conversation]] = {}
    for conversation in conversations:
        used = timezone.localdate(conversation.updated_at)
        label = next((name for name, start in periods if used >= start), "Older")
        groups.setdefault(label, []).append(conversation)
    order = [name for name, _ in periods] + ["Older"]
    return [ConversationGroup(label, groups[label]) for label in order if label in groups]


def conversation_for_user(*, user: User, conversation_id: int) -> Conversation:
    conversation = conversations_visible_to(user=user).filter(id=conversation_id).first()
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _with_own_feedback(answers: QuerySet[Answer], user: User) -> QuerySet[Answer]:
    own = Feedback.objects.filter(user=user)
    return answers.prefetch_related(Prefetch("feedback", queryset=own, to_attr="own_feedback"))


def answers_in_conversation(*, user: User, conversation: Conversation) -> list[Answer]:
    """The thread, oldest first; each answer carries `own_feedback` (a list of 0 or 1)."""
    answers = Answer.objects.filter(conversation=conversation, user=user).order_by(
        "created_at", "id"
    )
    return list(_with_own_feedback(answers, user))


def answer_for_user(*, user: User, answer_id: int) -> Answer:
    answer = _with_own_feedback(Answer.objects.filter(id=answer_id, user=user), user).first()
    if answer is None:
        raise Http404("No such answer.")
    return answer


def _in_version(chunk: Chunk, *, answer: Answer | None, n: int | None) -> PassageInVersion:
    neighbours = list(
        Chunk.objects.filter(
            version_id=chunk.version_id,
            index__gte=chunk.index - NEIGHBOUR_CHUNKS,
            index__lte=chunk.index + NEIGHBOUR_CHUNKS,
        ).order_by("index")
    )
    return PassageInVersion(
        chunk=chunk, version=chunk.version, neighbours=neighbours, answer=answer, n=n
    )


def _readable_chunks_with_version(user: User) -> QuerySet[Chunk]:
    return readable_chunks(user).select_related("version", "version__document")


def passage_for_user(*, user: User, answer_id: int, n: int) -> PassageInVersion:
    """Source `n` of one of the user's answers, if the user may still read its document."""
    answer = answer_for_user(user=user, answer_id=answer_id)
    shown = next((p for p in answer.passages if p.get("n") == n), None)
    if shown is None:
        raise Http404("No such passage.")
    chunks = _readable_chunks_with_version(user)
    # The point id names the passage; version and position find it if it was re-chunked.
    chunk = (
        chunks.filter(point_id=shown["point_id"], version_id=shown["version_id"]).first()
        or chunks.filter(version_id=shown["version_id"], index=shown.get("chunk_index", -1)).first()
    )
    if chunk is None:
        raise Http404("No such passage.")
    return _in_version(chunk, answer=answer, n=n)


def passage_by_point_for_user(*, user: User, point_id: uuid.UUID) -> PassageInVersion:
    chunk = _readable_chunks_with_version(user).filter(point_id=point_id).first()
    if chunk is None:
        raise Http404("No such passage.")
    return _in_version(chunk, answer=None, n=None)


def version_for_user(*, user: User, document_id: int, number: int) -> DocumentVersion:
    version = (
        DocumentVersion.objects.filter(
            document__in=readable_documents(user), document_id=document_id, number=number
        )
        .select_related("document")
        .first()
    )
    if version is None:
        raise Http404("No such document.")
    return version


def answers_with_feedback_worst_first(*, page_number: Any = 1) -> Page[Answer]:
    """Answers someone rated, the lowest sum of ratings first, then the newest."""
    answers: QuerySet[Answer] = (
        Answer.objects.annotate(
            feedback_score=Sum("feedback__rating"),
            feedback_up=Count("feedback", filter=Q(feedback__rating=1)),
            feedback_down=Count("feedback", filter=Q(feedback__rating=-1)),
        )
        # Filtering on the aggregate, not on the relation: a second join would double the sums.
        .filter(Q(feedback_up__gt=0) | Q(feedback_down__gt=0))
        .order_by("feedback_score", "-created_at", "-id")
        .select_related("user")
        .prefetch_related(
            Prefetch(
                "feedback",
                queryset=Feedback.objects.select_related("user").order_by("-updated_at", "-id"),
            )
        )
    )
    return Paginator(answers, FEEDBACK_ANSWERS_PER_PAGE).get_page(page_number)


def answer_record_sequences(answer_ids: list[int]) -> dict[int, int]:
    """The ledger record of each finished answer, by answer id, for links to the audit pages."""
    records = AuditRecord.objects.filter(
        event=AuditEvent.ANSWER, answer_id__in=answer_ids
    ).values_list("answer_id", "sequence")
    return {int(answer_id): sequence for answer_id, sequence in records if answer_id is not None}
