"""The usage figures: questions, people, outcomes, feedback, speed, citations, support.

Every figure is computed over the answers of one viewer's scope and period
(`assistant.insight.scope`); documents are named only among the scope's documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from assistant.insight.scope import Period
from assistant.insight.support import measurable_answers, supports_fill
from assistant.models import Answer, AnswerStatus, AnswerSupport, Feedback, FeedbackRating
from audit.models import AuditEvent, AuditRecord, AuditReference, AuditReferenceKind
from ingestion.access import InsightScope
from ingestion.models import Document

# The outcomes shown, in the order of the charts; in-progress answers are counted apart.
OUTCOMES = (
    AnswerStatus.ANSWERED,
    AnswerStatus.ABSTAINED,
    AnswerStatus.FAILED,
    AnswerStatus.CUT_OFF,
    AnswerStatus.INTERRUPTED,
    AnswerStatus.CANCELLED,
)
PERCENTILES = (50, 90, 99)
MOST_CITED_SHOWN = 10
NOT_CITED_SHOWN = 25
# Answers measured for support while the page is drawn, when the thread after each answer
# has not (yet) measured them; the rest follow on later views.
SUPPORT_FILL_PER_VIEW = 20


@dataclass
class DayRow:
    day: date
    questions: int = 0
    people: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    helpful: int = 0
    not_helpful: int = 0

    @property
    def outcome_list(self) -> list[int]:
        return [self.outcomes.get(status.value, 0) for status in OUTCOMES]


@dataclass(frozen=True)
class CitedDocument:
    document_id: int
    title: str
    source_path: str
    answers: int
    deleted: bool


@dataclass
class Usage:
    period: Period
    days: list[DayRow]
    questions: int
    people: int
    outcomes: dict[str, int]
    in_progress: int
    rated_answers: int
    helpful: int
    not_helpful: int
    first_token_ms: dict[int, float]
    first_token_count: int
    most_cited: list[CitedDocument]
    not_cited: list[Document]
    not_cited_count: int
    sentences: int
    supported_sentences: int
    answers_measured: int
    answers_measurable: int

    @property
    def feedback_rate(self) -> float | None:
        """Answers someone rated, of all answers."""
        return self.rated_answers / self.questions if self.questions else None

    @property
    def helpful_share(self) -> float | None:
        """Helpful ratings of all ratings."""
        ratings = self.helpful + self.not_helpful
        return self.helpful / ratings if ratings else None

    @property
    def supported_share(self) -> float | None:
        return self.supported_sentences / self.sentences if self.sentences else None

    @property
    def outcome_rows(self) -> list[tuple[str, str, int]]:
        return [
            (status.value, str(status.label), self.outcomes.get(status.value, 0))
            for status in OUTCOMES
        ]


def _outcome_counts() -> dict[str, Any]:
    return {status.value: Count("id", filter=Q(status=status)) for status in OUTCOMES}


def _days(answers: QuerySet[Answer], period: Period) -> list[DayRow]:
    local_day = TruncDate("created_at", tzinfo=timezone.get_current_timezone())
    rows = {day: DayRow(day=day) for day in period.days}
    per_day = (
        answers.annotate(day=local_day)
        .values("day")
        .annotate(questions=Count("id"), people=Count("user", distinct=True), **_outcome_counts())
        .order_by("day")
    )
    for values in per_day:
        counts: dict[str, Any] = dict(values)
        row = rows.get(counts["day"])
        if row is None:
            continue
        row.questions = counts["questions"]
        row.people = counts["people"]
        row.outcomes = {status.value: counts[status.value] for status in OUTCOMES}
    ratings = (
        Feedback.objects.filter(answer__in=answers.values("id"))
        .annotate(day=TruncDate("answer__created_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(
            helpful=Count("id", filter=Q(rating=FeedbackRating.UP)),
            not_helpful=Count("id", filter=Q(rating=FeedbackRating.DOWN)),
        )
        .order_by("day")
    )
    for rated in ratings:
        row = rows.get(rated["day"])
        if row is not None:
            row.helpful, row.not_helpful = rated["helpful"], rated["not_helpful"]
    return list(rows.values())


def _first_token(answers: QuerySet[Answer]) -> tuple[dict[int, float], int]:
    times = np.array(
        list(answers.exclude(first_token_ms=None).values_list("first_token_ms", flat=True)),
        dtype=np.float64,
    )
    if not len(times):
        return {}, 0
    values = np.percentile(times, PERCENTILES)
    return {p: float(v) for p, v in zip(PERCENTILES, values, strict=True)}, len(times)


def _citation_counts(answers: QuerySet[Answer], scope: InsightScope) -> dict[int, int]:
    """How many of the answers cited each document in scope (from their ledger records)."""
    records = AuditRecord.objects.filter(
        event=AuditEvent.ANSWER, answer_id__in=answers.values("id")
    )
    counts = (
        AuditReference.objects.filter(
            kind=AuditReferenceKind.DOCUMENT_CITED,
            record__in=records.values("sequence"),
            target_id__in=scope.documents.values("id"),
        )
        .values("target_id")
        .annotate(answers=Count("record_id", distinct=True))
        .values_list("target_id", "answers")
    )
    return dict(counts)


def _most_cited(counts: dict[int, int]) -> list[CitedDocument]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:MOST_CITED_SHOWN]
    documents = Document.objects.in_bulk([document_id for document_id, _ in ranked])
    return [
        CitedDocument(
            document_id=document_id,
            title=documents[document_id].title,
            source_path=documents[document_id].source_path,
            answers=answers,
            deleted=documents[document_id].deleted_at is not None,
        )
        for document_id, answers in ranked
        if document_id in documents
    ]


def usage_for(scope: InsightScope, answers: QuerySet[Answer], period: Period) -> Usage:
    """The figures of `answers` (already narrowed to the scope, group and period)."""
    totals = answers.aggregate(
        questions=Count("id"),
        people=Count("user", distinct=True),
        in_progress=Count("id", filter=Q(status=AnswerStatus.IN_PROGRESS)),
        **_outcome_counts(),
    )
    feedback = Feedback.objects.filter(answer__in=answers.values("id")).aggregate(
        rated=Count("answer", distinct=True),
        helpful=Count("id", filter=Q(rating=FeedbackRating.UP)),
        not_helpful=Count("id", filter=Q(rating=FeedbackRating.DOWN)),
    )
    first_token, first_token_count = _first_token(answers)
    counts = _citation_counts(answers, scope)
    not_cited = (
        scope.documents.filter(deleted_at__isnull=True, current_version__isnull=False)
        .exclude(id__in=list(counts))
        .order_by("title", "id")
    )
    supports_fill(answers, limit=SUPPORT_FILL_PER_VIEW)
    measurable = measurable_answers(answers)
    support = AnswerSupport.objects.filter(answer__in=measurable.values("id")).aggregate(
        sentences=Sum("sentence_count"),
        supported=Sum("supported_count"),
        answers=Count("answer"),
    )
    return Usage(
        period=period,
        days=_days(answers, period),
        questions=totals["questions"],
        people=totals["people"],
        outcomes={status.value: totals[status.value] for status in OUTCOMES},
        in_progress=totals["in_progress"],
        rated_answers=feedback["rated"],
        helpful=feedback["helpful"],
        not_helpful=feedback["not_helpful"],
        first_token_ms=first_token,
        first_token_count=first_token_count,
        most_cited=_most_cited(counts),
        not_cited=list(not_cited[:NOT_CITED_SHOWN]),
        not_cited_count=not_cited.count(),
        sentences=support["sentences"] or 0,
        supported_sentences=support["supported"] or 0,
        answers_measured=support["answers"],
        answers_measurable=measurable.count(),
    )


# ---- CSV ---------------------------------------------------------------------------------------

DAILY_COLUMNS = (
    "day",
    "questions",
    "active_people",
    *(status.value for status in OUTCOMES),
    "helpful",
    "not_helpful",
)
DOCUMENT_COLUMNS = ("document_id", "title", "source_path", "answers_citing", "deleted")


def daily_rows(usage: Usage) -> list[list[Any]]:
    return [
        [
            row.day.isoformat(),
            row.questions,
            row.people,
            *(row.outcomes.get(status.value, 0) for status in OUTCOMES),
            row.helpful,
            row.not_helpful,
        ]
        for row in usage.days
    ]


def document_rows(scope: InsightScope, answers: QuerySet[Answer]) -> list[list[Any]]:
    """Every document in scope that the answers cited, and every live one they did not."""
    counts = _citation_counts(answers, scope)
    documents = scope.documents.filter(Q(id__in=list(counts)) | Q(deleted_at__isnull=True))
    rows = [
        [
            document.id,
            document.title,
            document.source_path,
            counts.get(document.id, 0),
            "yes" if document.deleted_at else "no",
        ]
        for document in documents.order_by("id")
    ]
    return sorted(rows, key=lambda row: (-row[3], row[0]))
