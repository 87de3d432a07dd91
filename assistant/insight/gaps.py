"""Knowledge gaps: what people asked that the documents could not answer, grouped by question.

A gap is a group of similar questions whose answers abstained ("the documents do not say") or
were rated not helpful overall (the sum of their ratings is below zero). The questions are
encoded with the product's own encoder and grouped by average-linkage clustering
(`clusters.average_linkage`) at `SIMILAR_QUESTION` cosine. Each gap shows its questions and
the passages that search found for them, so a curator sees what is missing or what misled.

A curator marks a gap resolved (usually once a document is added): the answers leave the
open gaps; a new question like them that is still not answered opens a new gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from django.db.models import Prefetch, Q, QuerySet, Sum

from assistant.insight.clusters import average_linkage
from assistant.insight.vectors import VectorCache
from assistant.models import Answer, AnswerStatus, GapResolution
from audit.models import AuditEvent, AuditRecord
from ingestion.access import InsightScope

# Questions at least this alike (mean cosine of all-MiniLM-L6-v2 vectors) form one gap:
# paraphrases of one question score 0.45-0.7, questions about different things below 0.3.
SIMILAR_QUESTION = 0.5
# The newest gap answers grouped on one page view.
MAX_GAP_ANSWERS = 400
PASSAGES_PER_GAP = 5
PASSAGE_EXCERPT_CHARS = 320
QUESTION_VECTOR_CACHE = 5000


@dataclass(frozen=True)
class GapQuestion:
    answer: Answer
    why: str
    asked_by: str
    record_sequence: int | None


@dataclass
class AskedQuestion:
    """One wording of a question in a gap, however many times it was asked."""

    text: str
    times: int
    latest: datetime
    abstained: int
    rated_down: int
    askers: list[str]
    records: list[int]


RECORDS_LISTED = 5


@dataclass(frozen=True)
class FoundPassage:
    document_id: int
    title: str
    source: str
    page: int | None
    heading: str
    excerpt: str
    point_id: str
    times: int
    best_score: float


@dataclass
class Gap:
    questions: list[GapQuestion]
    # Only passages of documents the viewer may read or manage: the others are neither
    # shown nor counted, so that nothing tells of a document the viewer may not read.
    passages: list[FoundPassage] = field(default_factory=list)
    title: str = ""

    @property
    def answer_ids(self) -> list[int]:
        return [question.answer.id for question in self.questions]

    @property
    def latest(self) -> datetime:
        return max(question.answer.created_at for question in self.questions)

    @property
    def wordings(self) -> list[AskedQuestion]:
        """The questions by wording (case and spacing aside), the most asked first."""
        by_text: dict[str, AskedQuestion] = {}
        for question in sorted(self.questions, key=lambda q: q.answer.created_at, reverse=True):
            key = " ".join(question.answer.question.casefold().split())
            asked = by_text.get(key)
            if asked is None:
                asked = by_text[key] = AskedQuestion(
                    text=question.answer.question,
                    times=0,
                    latest=question.answer.created_at,
                    abstained=0,
                    rated_down=0,
                    askers=[],
                    records=[],
                )
            asked.times += 1
            asked.abstained += question.why == "abstained"
            asked.rated_down += question.why != "abstained"
            if question.asked_by and question.asked_by not in asked.askers:
                asked.askers.append(question.asked_by)
            if question.record_sequence and len(asked.records) < RECORDS_LISTED:
                asked.records.append(question.record_sequence)
        return sorted(by_text.values(), key=lambda asked: (-asked.times, -asked.latest.timestamp()))

    @property
    def abstained(self) -> int:
        return sum(1 for question in self.questions if question.why == "abstained")

    @property
    def poorly_rated(self) -> int:
        return len(self.questions) - self.abstained


def unresolved(answers: QuerySet[Answer]) -> QuerySet[Answer]:
    return answers.exclude(id__in=GapResolution.answers.through.objects.values("answer_id"))


def gap_answers(answers: QuerySet[Answer]) -> QuerySet[Answer]:
    """The answers among `answers` that show a gap: abstained, or rated below zero overall."""
    # The sum is taken apart: filtering on it next to the status would join the ratings twice.
    rated_down = answers.annotate(score=Sum("feedback__rating")).filter(score__lt=0).values("id")
    return Answer.objects.filter(id__in=answers.values("id")).filter(
        Q(status=AnswerStatus.ABSTAINED) | Q(id__in=rated_down)
    )


# ---- Question vectors ----------------------------------------------------------------------------

_questions_seen = VectorCache(QUESTION_VECTOR_CACHE)


def question_vectors(questions: Sequence[str]) -> np.ndarray:
    """Unit vectors of the questions from the product's encoder; recent ones are remembered."""
    return _questions_seen.encode(questions)


# ---- Gaps ------------------------------------------------------------------------------------


def _why(answer: Answer) -> str:
    return "abstained" if answer.status == AnswerStatus.ABSTAINED else "rated not helpful"


def _questions(answers: Sequence[Answer], scope: InsightScope) -> list[GapQuestion]:
    sequences: dict[int, int] = {}
    if scope.names_people:
        records = AuditRecord.objects.filter(
            event=AuditEvent.ANSWER, answer_id__in=[a.id for a in answers]
        ).values_list("answer_id", "sequence")
        sequences = {answer_id: sequence for answer_id, sequence in records if answer_id}
    return [
        GapQuestion(
            answer=answer,
            why=_why(answer),
            asked_by=answer.user.get_username() if scope.names_people else "",
            record_sequence=sequences.get(answer.id),
        )
        for answer in answers
    ]


def _representative(indices: Sequence[int], vectors: np.ndarray) -> int:
    """The question closest to all the others of its group."""
    if len(indices) <= 2:
        return indices[0]
    group = vectors[list(indices)]
    return indices[int(np.argmax((group @ group.T).sum(axis=1)))]


def _found_passages(answers: Iterable[Answer], readable: set[int]) -> list[FoundPassage]:
    found: dict[str, dict[str, Any]] = {}
    for answer in answers:
        for passage in answer.passages or []:
            if not isinstance(passage, Mapping):
                continue
            if passage.get("document_id") not in readable:
                continue
            key = str(passage.get("point_id") or "")
            entry = found.setdefault(key, {"passage": passage, "times": 0, "best": 0.0})
            entry["times"] += 1
            entry["best"] = max(entry["best"], float(passage.get("score") or 0.0))
    ranked = sorted(found.values(), key=lambda e: (-e["times"], -e["best"]))
    passages = []
    for entry in ranked[:PASSAGES_PER_GAP]:
        passage = entry["passage"]
        text = " ".join(str(passage.get("text") or "").split())
        cut = len(text) > PASSAGE_EXCERPT_CHARS
        passages.append(
            FoundPassage(
                document_id=int(passage["document_id"]),
                title=str(passage.get("title") or ""),
                source=str(passage.get("source") or ""),
                page=passage.get("page"),
                heading=str(passage.get("heading") or ""),
                excerpt=text[:PASSAGE_EXCERPT_CHARS] + ("…" if cut else ""),
                point_id=str(passage.get("point_id") or ""),
                times=entry["times"],
                best_score=entry["best"],
            )
        )
    return passages


def gaps_of(
    answers: QuerySet[Answer], scope: InsightScope, *, threshold: float = SIMILAR_QUESTION
) -> tuple[list[Gap], int]:
    """The open gaps among `answers` (already in scope), biggest first; and how many answers
    they hold in all (the newest MAX_GAP_ANSWERS are grouped)."""
    candidates = unresolved(gap_answers(answers))
    total = candidates.count()
    rows = list(candidates.select_related("user").order_by("-created_at", "-id")[:MAX_GAP_ANSWERS])
    if not rows:
        return [], total
    vectors = question_vectors([answer.question for answer in rows])
    readable = _readable_documents(rows, scope)
    gaps = []
    for group in average_linkage(vectors, threshold):
        members = [rows[index] for index in group]
        passages = _found_passages(members, readable)
        gap = Gap(
            questions=_questions(members, scope),
            passages=passages,
            title=rows[_representative(group, vectors)].question,
        )
        gaps.append(gap)
    gaps.sort(key=lambda gap: (-len(gap.questions), -gap.latest.timestamp()))
    return gaps, total


def _readable_documents(answers: Iterable[Answer], scope: InsightScope) -> set[int]:
    ids: set[int] = {
        passage["document_id"]
        for answer in answers
        for passage in answer.passages or []
        if isinstance(passage, Mapping) and isinstance(passage.get("document_id"), int)
    }
    return set(scope.documents.filter(id__in=ids).values_list("id", flat=True))


# ---- Resolved gaps -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedGap:
    resolution: GapResolution
    questions: list[str]
    document_title: str


def resolved_gaps(
    answers: QuerySet[Answer], scope: InsightScope, *, limit: int = 50
) -> list[ResolvedGap]:
    """Resolutions naming answers in scope, newest first, with only those answers' questions."""
    in_scope = answers.values("id")
    resolutions = list(
        GapResolution.objects.filter(answers__in=in_scope)
        .distinct()
        .select_related("resolved_by", "document")
        .prefetch_related(
            Prefetch(
                "answers",
                queryset=Answer.objects.filter(id__in=in_scope).order_by("created_at"),
                to_attr="answers_in_scope",
            )
        )
        .order_by("-resolved_at", "-id")[:limit]
    )
    document_ids = {r.document_id for r in resolutions if r.document_id is not None}
    readable = set(scope.documents.filter(id__in=document_ids).values_list("id", flat=True))
    return [
        ResolvedGap(
            resolution=resolution,
            questions=[answer.question for answer in resolution.answers_in_scope],
            document_title=resolution.document.title
            if resolution.document is not None and resolution.document_id in readable
            else "",
        )
        for resolution in resolutions
    ]
