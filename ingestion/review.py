"""Document owners and review dates: who answers for a document, and whether it is overdue.

A document may have an owner (a user) and a "review by" date. Past that date it is overdue:
the documents page lists it, and every answer citing it says so next to the citation, in
the portal and in the APIs' citation objects (`review_by`, `review_overdue`). The date is
read when the answer is shown, not when it was written, so that setting a new date clears
the warning on old answers too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from ingestion.models import Document

REVIEW_FILTER_OVERDUE = "overdue"


def review_today() -> date:
    """Today in the site's time zone: a document is overdue the day after its date."""
    return timezone.localdate()


def is_overdue(review_by: date | None, *, today: date | None = None) -> bool:
    return review_by is not None and review_by < (today or review_today())


def documents_overdue(documents: QuerySet[Document]) -> QuerySet[Document]:
    """The live documents among `documents` whose review date has passed, the oldest date first."""
    return documents.filter(deleted_at__isnull=True, review_by__lt=review_today()).order_by(
        "review_by", "id"
    )


@dataclass(frozen=True)
class ReviewState:
    review_by: date | None
    overdue: bool


def review_states(document_ids: Iterable[Any]) -> dict[int, ReviewState]:
    """The review state of each named document that has a review date; one query."""
    ids = {value for value in document_ids if isinstance(value, int)}
    if not ids:
        return {}
    today = review_today()
    rows = Document.objects.filter(id__in=ids, review_by__isnull=False).values_list(
        "id", "review_by"
    )
    return {
        document_id: ReviewState(review_by, is_overdue(review_by, today=today))
        for document_id, review_by in rows
    }


def citation_with_review(
    citation: Mapping[str, Any], states: Mapping[int, ReviewState]
) -> dict[str, Any]:
    """A copy of a citation with `review_by` (ISO date or None) and `review_overdue` added."""
    state = states.get(citation.get("document_id"))  # type: ignore[arg-type]
    return {
        **citation,
        "review_by": state.review_by.isoformat() if state and state.review_by else None,
        "review_overdue": bool(state and state.overdue),
    }


def citations_with_review(citations: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Citations with their documents' review state; the stored citations are not touched."""
    citations = list(citations)
    states = review_states(citation.get("document_id") for citation in citations)
    return [citation_with_review(citation, states) for citation in citations]
