"""The answers a viewer of the insight pages may count, and the filters they chose."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import QuerySet
from django.utils import timezone

from assistant.models import Answer
from audit.models import AuditRecord, AuditReference, AuditReferenceKind
from ingestion.access import InsightScope

DEFAULT_PERIOD_DAYS = 30
# A period longer than this is refused: the daily chart and the queries stay a page's worth.
MAX_PERIOD_DAYS = 366


@dataclass(frozen=True)
class Period:
    """From `since` to `until`, both days included, in the site's time zone."""

    since: date
    until: date

    @classmethod
    def last_days(cls, days: int = DEFAULT_PERIOD_DAYS) -> Period:
        today = timezone.localdate()
        return cls(since=today - timedelta(days=days - 1), until=today)

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.since, time.min))

    @property
    def end(self) -> datetime:
        """The first moment after the period."""
        return timezone.make_aware(datetime.combine(self.until + timedelta(days=1), time.min))

    @property
    def days(self) -> list[date]:
        return [self.since + timedelta(days=n) for n in range((self.until - self.since).days + 1)]


def answers_asked_with_groups(group_ids: Collection[int]) -> QuerySet[Answer]:
    """Answers whose asker read with one of these groups, as their ledger records say."""
    references = AuditReference.objects.filter(
        kind=AuditReferenceKind.GROUP_ACL, target_id__in=list(group_ids)
    )
    records = AuditRecord.objects.filter(
        sequence__in=references.values("record_id"), answer_id__isnull=False
    )
    return Answer.objects.filter(id__in=records.values("answer_id"))


def answers_of_groups(group_ids: Collection[int] | None) -> QuerySet[Answer]:
    """Every answer when `group_ids` is None, else those asked with one of the groups."""
    return Answer.objects.all() if group_ids is None else answers_asked_with_groups(group_ids)


def answers_resolvable(scope: InsightScope) -> QuerySet[Answer]:
    """The answers whose gaps the viewer may mark resolved."""
    if not scope.may_resolve:
        return Answer.objects.none()
    return answers_of_groups(scope.resolve_group_ids)


def answers_in_scope(scope: InsightScope, *, group_id: int | None = None) -> QuerySet[Answer]:
    """The answers the viewer may count, narrowed to one group when `group_id` is given.

    A group outside the viewer's scope narrows to nothing: the form offers only the groups in
    scope, and a guessed id must not widen what is counted.
    """
    answers = answers_of_groups(scope.group_ids)
    if group_id is not None:
        if scope.group_ids is not None and group_id not in scope.group_ids:
            return Answer.objects.none()
        answers = answers.filter(id__in=answers_asked_with_groups([group_id]).values("id"))
    return answers


def answers_in_period(answers: QuerySet[Answer], period: Period) -> QuerySet[Answer]:
    return answers.filter(created_at__gte=period.start, created_at__lt=period.end)
