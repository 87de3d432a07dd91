"""The insight pages: usage (with its CSV export) and knowledge gaps (with "mark resolved").

Who sees what is `ingestion.access.insight_scope_for`: auditors and superusers everything,
document admins the answers of the groups they administer and the documents they may read
or manage, without who asked. Employees get 403, and nobody signed in goes to the login form.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.models import Group, User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from assistant.insight import charts
from assistant.insight.gaps import MAX_GAP_ANSWERS, gaps_of, resolved_gaps
from assistant.insight.scope import (
    DEFAULT_PERIOD_DAYS,
    MAX_PERIOD_DAYS,
    Period,
    answers_in_period,
    answers_in_scope,
    answers_resolvable,
)
from assistant.insight.usage import (
    DAILY_COLUMNS,
    DOCUMENT_COLUMNS,
    OUTCOMES,
    Usage,
    daily_rows,
    document_rows,
    usage_for,
)
from assistant.models import GapResolution
from audit.ledger import ledger_append
from audit.models import AuditEvent
from ingestion.access import InsightScope, insight_scope_for, manageable_documents

View = Callable[..., HttpResponseBase]
GAPS_PERIOD_DAYS = 90
NOTE_MAX_CHARS = 2000
RECENT_DOCUMENTS_OFFERED = 30
OUTCOME_CSS = {
    "answered": "chart-answered",
    "abstained": "chart-abstained",
    "failed": "chart-failed",
    "cut_off": "chart-cut-off",
    "interrupted": "chart-interrupted",
    "cancelled": "chart-cancelled",
}


def insight_reader_required(view: View) -> View:
    """For auditors and document admins: others log in first, then get 403.

    The view receives the reader's `scope` (what they may count, name and quote).
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        scope = insight_scope_for(request.user)
        if scope is None:
            raise PermissionDenied("Only auditors and document admins may read usage and gaps.")
        return view(request, *args, scope=scope, **kwargs)

    return guarded


class InsightFilterForm(forms.Form):
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    group = forms.ModelChoiceField(
        queryset=Group.objects.none(),
        required=False,
        empty_label="Every group",
        label="Asked by readers of",
    )

    def __init__(self, data: Any, *, scope: InsightScope, default_days: int) -> None:
        # The period shown is always written in the form, the default one included.
        data = data.copy()
        if not data.get("until"):
            data["until"] = timezone.localdate().isoformat()
        if not data.get("since"):
            try:
                until = forms.DateField().clean(data["until"])
            except forms.ValidationError:
                until = None
            if until is not None:
                data["since"] = (until - timedelta(days=default_days - 1)).isoformat()
        super().__init__(data)
        groups = Group.objects.order_by("name")
        if scope.group_ids is not None:
            groups = groups.filter(id__in=scope.group_ids)
            self.fields["group"].empty_label = "Every group you administer"  # type: ignore[attr-defined]
        self.fields["group"].queryset = groups  # type: ignore[attr-defined]
        self.default_days = default_days

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        period = self._period_of(cleaned)
        if period.until < period.since:
            raise forms.ValidationError("The period ends before it starts.")
        if (period.until - period.since).days + 1 > MAX_PERIOD_DAYS:
            raise forms.ValidationError(f"Choose a period of at most {MAX_PERIOD_DAYS} days.")
        cleaned["period"] = period
        return cleaned

    def _period_of(self, cleaned: dict[str, Any]) -> Period:
        default = Period.last_days(self.default_days)
        until: date = cleaned.get("until") or default.until
        since: date = cleaned.get("since") or until - timedelta(days=self.default_days - 1)
        return Period(since=since, until=until)

    @property
    def period(self) -> Period:
        period: Period = self.cleaned_data["period"]
        return period

    @property
    def group_id(self) -> int | None:
        group = self.cleaned_data.get("group")
        return group.pk if group is not None else None


def _filtered(
    request: HttpRequest, scope: InsightScope, default_days: int
) -> tuple[InsightFilterForm, Any]:
    form = InsightFilterForm(request.GET, scope=scope, default_days=default_days)
    if not form.is_valid():
        return form, None
    answers = answers_in_period(answers_in_scope(scope, group_id=form.group_id), form.period)
    return form, answers


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.0f}%"


def _usage_charts(usage: Usage) -> dict[str, Any]:
    labels = [row.day.strftime("%m-%d") for row in usage.days]
    outcome_series = [
        charts.Series(
            str(status.label).lower(),
            OUTCOME_CSS[status.value],
            [row.outcomes.get(status.value, 0) for row in usage.days],
        )
        for status in OUTCOMES
    ]
    return {
        "questions": charts.column_chart("Questions per day, by outcome", labels, outcome_series),
        "people": charts.column_chart(
            "Active people per day",
            labels,
            [charts.Series("people", "chart-primary", [row.people for row in usage.days])],
            height=180,
        ),
        "feedback": charts.share_bar(
            "Ratings: helpful and not helpful",
            [
                ("helpful", usage.helpful, "chart-answered"),
                ("not helpful", usage.not_helpful, "chart-failed"),
            ],
        ),
        "support": charts.share_bar(
            "Answer sentences supported by a cited passage",
            [
                ("supported", usage.supported_sentences, "chart-answered"),
                ("not supported", usage.sentences - usage.supported_sentences, "chart-abstained"),
            ],
        ),
        "first_token": charts.bar_chart(
            "Time to first token, percentiles",
            [(f"p{p}", round(v)) for p, v in usage.first_token_ms.items()],
            unit=" ms",
        ),
        "most_cited": charts.bar_chart(
            "Most cited documents (answers citing each)",
            [(document.title, document.answers) for document in usage.most_cited],
        ),
    }


def _query_without(request: HttpRequest, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


@insight_reader_required
@require_GET
def usage(request: HttpRequest, *, scope: InsightScope) -> HttpResponse:
    form, answers = _filtered(request, scope, DEFAULT_PERIOD_DAYS)
    context: dict[str, Any] = {"form": form, "scope": scope, "tab": "usage"}
    if answers is None:
        return render(request, "insight/usage.html", context, status=400)
    figures = usage_for(scope, answers, form.period)
    context.update(
        {
            "usage": figures,
            "charts": _usage_charts(figures),
            "feedback_rate": _percent(figures.feedback_rate),
            "helpful_share": _percent(figures.helpful_share),
            "supported_share": _percent(figures.supported_share),
            "query": _query_without(request),
        }
    )
    return render(request, "insight/usage.html", context)


@insight_reader_required
@require_GET
def usage_export(request: HttpRequest, *, scope: InsightScope) -> HttpResponse:
    """The figures of the page's filters as CSV: per day (the default) or per document."""
    form, answers = _filtered(request, scope, DEFAULT_PERIOD_DAYS)
    if answers is None:
        errors = " ".join(str(error) for errors in form.errors.values() for error in errors)
        return HttpResponse(errors, status=400, content_type="text/plain; charset=utf-8")
    kind = "documents" if request.GET.get("kind") == "documents" else "daily"
    if kind == "documents":
        header: Iterable[str] = DOCUMENT_COLUMNS
        rows = document_rows(scope, answers)
    else:
        header = DAILY_COLUMNS
        rows = daily_rows(usage_for(scope, answers, form.period))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(_csv_safe(row) for row in rows)
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    period = form.period
    response["Content-Disposition"] = (
        f'attachment; filename="usage-{kind}-{period.since:%Y%m%d}-{period.until:%Y%m%d}.csv"'
    )
    return response


def _csv_safe(row: Iterable[Any]) -> list[Any]:
    """Text that a spreadsheet would run as a formula is kept as text."""
    return [
        f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@") else value
        for value in row
    ]


# ---- Knowledge gaps ------------------------------------------------------------------------------


@insight_reader_required
@require_GET
def gaps(request: HttpRequest, *, scope: InsightScope) -> HttpResponse:
    form, answers = _filtered(request, scope, GAPS_PERIOD_DAYS)
    show = "resolved" if request.GET.get("show") == "resolved" else "open"
    context: dict[str, Any] = {
        "form": form,
        "scope": scope,
        "tab": "gaps",
        "show": show,
        "query": _query_without(request, "show"),
    }
    if answers is None:
        return render(request, "insight/gaps.html", context, status=400)
    with transaction.atomic():
        ledger_append(
            event=AuditEvent.AUDIT_VIEWED,
            actor=request.user,
            details={
                "view": "knowledge gaps",
                "show": show,
                "since": form.period.since.isoformat(),
                "until": form.period.until.isoformat(),
                "group_id": form.group_id,
                "summary": f"Opened the knowledge gaps ({show})",
            },
        )
    if show == "resolved":
        context["resolved"] = resolved_gaps(answers, scope)
    else:
        found, total = gaps_of(answers, scope)
        resolvable = set(
            answers_resolvable(scope)
            .filter(id__in=[i for gap in found for i in gap.answer_ids])
            .values_list("id", flat=True)
        )
        context.update(
            {
                "gaps": [
                    (gap, bool(gap.answer_ids) and set(gap.answer_ids) <= resolvable)
                    for gap in found
                ],
                "gap_answers": total,
                "gaps_limit": MAX_GAP_ANSWERS,
                "recent_documents": _documents_offered(request, scope),
            }
        )
    return render(request, "insight/gaps.html", context)


def _documents_offered(request: HttpRequest, scope: InsightScope) -> list[Any]:
    """The documents a curator may name as the one added for a gap: their newest ones."""
    if not scope.may_resolve:
        return []
    return list(
        manageable_documents(request.user)
        .order_by("-created_at", "-id")
        .values("id", "title")[:RECENT_DOCUMENTS_OFFERED]
    )


def _answer_ids(request: HttpRequest) -> list[int]:
    ids = []
    for value in request.POST.getlist("answers"):
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit():
                raise Http404("No such answer.")
            ids.append(int(part))
    return list(dict.fromkeys(ids))


def _back_to_gaps(request: HttpRequest) -> HttpResponse:
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ) or not target.startswith(reverse("insight:gaps")):
        target = reverse("insight:gaps")
    return redirect(target)


@insight_reader_required
@require_POST
def gap_resolve(request: HttpRequest, *, scope: InsightScope) -> HttpResponse:
    """Mark the answers of a gap resolved, optionally naming the document added for it.

    Every answer named must be one the curator may resolve; otherwise nothing is recorded
    and the answer is 404, as if the answers did not exist.
    """
    if not scope.may_resolve:
        raise PermissionDenied("Only document admins mark gaps resolved.")
    ids = _answer_ids(request)
    if not ids:
        messages.error(request, "Choose the gap to mark resolved; nothing was recorded.")
        return _back_to_gaps(request)
    answers = list(answers_resolvable(scope).filter(id__in=ids))
    if len(answers) != len(ids):
        raise Http404("No such answer.")
    document = None
    raw_document = request.POST.get("document", "").strip()
    if raw_document:
        if not raw_document.isdigit():
            raise Http404("No such document.")
        document = manageable_documents(request.user).filter(id=int(raw_document)).first()
        if document is None:
            raise Http404("No such document.")
    note = request.POST.get("note", "").strip()
    if len(note) > NOTE_MAX_CHARS:
        messages.error(
            request, f"The note is longer than {NOTE_MAX_CHARS} characters; nothing was recorded."
        )
        return _back_to_gaps(request)
    with transaction.atomic():
        resolution = GapResolution.objects.create(
            resolved_by=request.user if isinstance(request.user, User) else None,
            note=note,
            document=document,
        )
        resolution.answers.set(answers)
    count = len(answers)
    messages.success(
        request,
        f"Marked resolved: {count} question{'s' if count != 1 else ''} left the open gaps "
        f"on {timezone.localdate():%Y-%m-%d}.",
    )
    return _back_to_gaps(request)
