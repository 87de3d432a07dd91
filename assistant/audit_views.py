"""The auditors' pages: find records, read one as the model saw it, flag it, export a filter.

Auditors (and superusers) see every record and flag them; document admins see the
administrative records of the documents they manage only; `audit_scope_for` says which.
Every page opened and every export is itself appended to the ledger.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import wraps
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.models import Group
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from assistant.insight.support import support_for_answer
from assistant.models import Answer, AnswerStatus, AnswerSupport
from audit.hashing import text_sha256
from audit.ledger import audit_flag, cited_passages, ledger_append, passage_number
from audit.models import AuditEvent, AuditRecord
from audit.review import AuditFilters, audit_flags_in, audit_records_filtered, export_lines
from audit.verify import record_chain_status
from ingestion.access import audit_scope_for
from ingestion.models import Chunk, Document, DocumentVersion

RECORDS_PER_PAGE = 50
CITATION = re.compile(r"\[(\d{1,3})\]")

View = Callable[..., HttpResponseBase]


def audit_reader_required(view: View) -> View:
    """Audit pages are for auditors and document admins: others log in first, then get 403.

    The view receives the reader's `scope`, the records they may see; a record outside it
    answers 404, so that its existence does not show.
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        scope = audit_scope_for(request.user)
        if scope is None:
            raise PermissionDenied("Only auditors and document admins may read the audit log.")
        return view(request, *args, scope=scope, **kwargs)

    return guarded


def reads_every_record(scope: Q) -> bool:
    # The empty condition is the auditors' scope: nothing is left out.
    return not scope


SORT_CHOICES = [
    ("-sequence", "Newest first"),
    ("sequence", "Oldest first"),
    ("actor_username", "User"),
    ("event", "Event"),
    ("status", "Status"),
    ("model_name", "Model"),
]


class AuditFilterForm(forms.Form):
    user = forms.CharField(required=False, max_length=150, label="User")
    group = forms.ModelChoiceField(
        queryset=Group.objects.order_by("name"), required=False, empty_label="Any"
    )
    since = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    status = forms.ChoiceField(choices=[("", "Any"), *AnswerStatus.choices], required=False)
    event = forms.ChoiceField(choices=[("", "Any"), *AuditEvent.choices], required=False)
    model = forms.ChoiceField(choices=[("", "Any")], required=False)
    document = forms.IntegerField(required=False, min_value=1, label="Document (id)")
    flagged = forms.ChoiceField(
        choices=[("", "Any"), ("yes", "Flagged"), ("no", "Not flagged")], required=False
    )
    q = forms.CharField(required=False, max_length=500, label="Text in question or answer")
    conversation = forms.IntegerField(required=False, min_value=1, label="Conversation (id)")
    sort = forms.ChoiceField(choices=SORT_CHOICES, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        models = (
            AuditRecord.objects.exclude(model_name="")
            .order_by("model_name")
            .values_list("model_name", flat=True)
            .distinct()
        )
        self.fields["model"].choices = [("", "Any"), *((name, name) for name in models)]  # type: ignore[attr-defined]

    def filters(self) -> AuditFilters:
        """The filters chosen; none when the form is not valid."""
        if not self.is_valid():
            return AuditFilters()
        data = self.cleaned_data
        flagged = {"yes": True, "no": False}.get(data["flagged"])
        return AuditFilters(
            username=data["user"].strip(),
            group_id=data["group"].pk if data["group"] else None,
            since=_start_of(data["since"]) if data["since"] else None,
            until=_start_of(data["until"] + timedelta(days=1)) if data["until"] else None,
            status=data["status"],
            document_id=data["document"],
            model_name=data["model"],
            event=data["event"],
            flagged=flagged,
            text=data["q"].strip(),
            sort=data["sort"] or "-sequence",
            answer_ids=tuple(
                Answer.objects.filter(conversation_id=data["conversation"]).values_list(
                    "id", flat=True
                )
            )
            if data["conversation"]
            else None,
        )


def _start_of(day: Any) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


class FlagForm(forms.Form):
    note = forms.CharField(
        max_length=2000, widget=forms.Textarea(attrs={"rows": 3}), label="Why this record"
    )


def _record_looking(request: HttpRequest, event: AuditEvent, details: dict[str, Any]) -> None:
    with transaction.atomic():
        ledger_append(event=event, actor=request.user, details=details)


@audit_reader_required
@require_GET
def record_list(request: HttpRequest, *, scope: Q) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters = form.filters()
    records = audit_records_filtered(filters, scope=scope).annotate(
        is_flagged=Exists(audit_flags_in(scope).filter(target=OuterRef("pk")))
    )
    page = Paginator(records, RECORDS_PER_PAGE).get_page(request.GET.get("page"))
    # Read the rows before the look is recorded: the record of this look must not slip into
    # the page counted a moment earlier and push its oldest row off.
    page.object_list = list(page.object_list)
    _record_looking(
        request,
        AuditEvent.AUDIT_VIEWED,
        {
            "view": "list",
            "filters": filters.as_details(),
            "page": page.number,
            "summary": f"Listed records (page {page.number})",
        },
    )
    return render(
        request,
        "audit/record_list.html",
        {
            "form": form,
            "page_obj": page,
            "sort": filters.sort,
            "sequence_sort": "sequence" if filters.sort == "-sequence" else "-sequence",
            "filtered": bool(request.GET),
        },
    )


@audit_reader_required
@require_GET
def record_export(request: HttpRequest, *, scope: Q) -> StreamingHttpResponse:
    """The records of the current filter, oldest first, with their hashes."""
    export_format = "csv" if request.GET.get("format") == "csv" else "jsonl"
    filters = AuditFilterForm(request.GET).filters()
    _record_looking(
        request,
        AuditEvent.AUDIT_EXPORTED,
        {
            "via": "audit pages",
            "format": export_format,
            "filters": filters.as_details(),
            "summary": f"Exported records as {export_format.upper()}",
        },
    )
    records = audit_records_filtered(dataclasses.replace(filters, sort="sequence"), scope=scope)
    response = StreamingHttpResponse(
        export_lines(records, export_format=export_format),
        content_type="text/csv; charset=utf-8"
        if export_format == "csv"
        else "application/x-ndjson; charset=utf-8",
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{export_format}"'
    return response


@audit_reader_required
@require_GET
def record_detail(request: HttpRequest, sequence: int, *, scope: Q) -> HttpResponse:
    record = get_object_or_404(AuditRecord.objects.filter(scope), sequence=sequence)
    _record_looking(
        request,
        AuditEvent.AUDIT_VIEWED,
        {"view": "record", "sequence": sequence, "summary": f"Opened record {sequence}"},
    )
    details: dict[str, Any] = json.loads(record.details)
    return render(
        request,
        "audit/record_detail.html",
        {
            "record": record,
            "details": details,
            "details_pretty": json.dumps(details, indent=2, ensure_ascii=False, sort_keys=True),
            "is_answer": record.event == AuditEvent.ANSWER,
            "answer_parts": _answer_parts(details),
            "passages": _passages_now(details),
            "cited_numbers": [passage_number(p) for p in cited_passages(details)],
            "prompt_messages": _prompt_messages(details),
            "chain": record_chain_status(record),
            "flags": _flags_on(record, scope),
            "may_flag": reads_every_record(scope),
            "flag_form": FlagForm(),
            "neighbours": _neighbours(record, scope),
            "other_details": _other_details(details),
            "support": _support_of(record, details, scope),
        },
    )


def _support_of(record: AuditRecord, details: Mapping[str, Any], scope: Q) -> AnswerSupport | None:
    """How well the answer's sentences are supported by its citations, for auditors.

    Measured on first look when the thread after the answer has not done it yet. The answer
    as saved is measured; `audit_verify` vouches that it is the one this record holds.
    """
    if record.event != AuditEvent.ANSWER or not reads_every_record(scope):
        return None
    answer_id = details.get("answer_id")
    if not isinstance(answer_id, int):
        return None
    answer = Answer.objects.filter(id=answer_id).first()
    return support_for_answer(answer) if answer is not None else None


@audit_reader_required
@require_POST
def record_flag(request: HttpRequest, sequence: int, *, scope: Q) -> HttpResponse:
    if not reads_every_record(scope):
        raise PermissionDenied("Only auditors flag records.")
    record = get_object_or_404(AuditRecord, sequence=sequence)
    form = FlagForm(request.POST)
    if form.is_valid():
        flag = audit_flag(target=record, actor=request.user, note=form.cleaned_data["note"])
        messages.success(request, f"Record {sequence} was flagged (record {flag.sequence}).")
    else:
        messages.error(request, "A flag needs a note saying why; nothing was recorded.")
    return redirect("audit:record-detail", sequence=sequence)


@dataclass(frozen=True)
class AnswerPart:
    text: str
    citation: int | None = None


def _answer_parts(details: Mapping[str, Any]) -> list[AnswerPart]:
    """The answer split around its [n] markers, so that each can link to its passage."""
    answer = str(details.get("answer") or "")
    numbers = {passage_number(p) for p in details.get("passages") or [] if isinstance(p, Mapping)}
    parts: list[AnswerPart] = []
    position = 0
    for match in CITATION.finditer(answer):
        number = int(match.group(1))
        if number not in numbers:
            continue
        parts.append(AnswerPart(answer[position : match.start()]))
        parts.append(AnswerPart(match.group(0), citation=number))
        position = match.end()
    parts.append(AnswerPart(answer[position:]))
    return [part for part in parts if part.text]


@dataclass(frozen=True)
class PassageNow:
    """A passage as the model was shown it, and what became of its document since."""

    passage: Mapping[str, Any]
    number: Any
    state: str
    changed: bool


def _passages_now(details: Mapping[str, Any]) -> list[PassageNow]:
    passages = [p for p in details.get("passages") or [] if isinstance(p, Mapping)]
    document_ids = {p.get("document_id") for p in passages}
    documents: dict[Any, Mapping[str, Any]] = {
        row["id"]: row
        for row in Document.objects.filter(
            id__in=[i for i in document_ids if isinstance(i, int)]
        ).values("id", "deleted_at", "current_version_id")
    }
    current_numbers = dict(
        DocumentVersion.objects.filter(
            id__in=[d["current_version_id"] for d in documents.values() if d["current_version_id"]]
        ).values_list("id", "number")
    )
    point_ids = [_uuid(p.get("point_id")) for p in passages]
    chunk_texts = {
        str(point): text
        for point, text in Chunk.objects.filter(
            point_id__in=[p for p in point_ids if p is not None]
        ).values_list("point_id", "text")
    }
    shown = []
    for passage in passages:
        document = documents.get(passage.get("document_id"))
        state, changed = _passage_state(passage, document, current_numbers, chunk_texts)
        shown.append(PassageNow(passage, passage_number(passage), state, changed))
    return shown


def _passage_state(
    passage: Mapping[str, Any],
    document: Mapping[str, Any] | None,
    current_numbers: Mapping[int, int],
    chunk_texts: Mapping[str, str],
) -> tuple[str, bool]:
    if document is None:
        return "Its document no longer exists.", True
    if document["deleted_at"] is not None:
        return f"Its document was deleted on {document['deleted_at']:%Y-%m-%d %H:%M}.", True
    current = document["current_version_id"]
    if current != passage.get("version_id"):
        number = current_numbers.get(current)
        now = f"version {number}" if number else "no version"
        return f"Its document has changed: answers now use {now}.", True
    point = _uuid(passage.get("point_id"))
    stored = chunk_texts.get(str(point)) if point is not None else None
    if stored is None:
        return "The passage is no longer stored.", True
    if text_sha256(stored) != passage.get("content_sha256"):
        return "The stored passage text differs from what the model was shown.", True
    return "Unchanged: this version is still the one answers use.", False


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _prompt_messages(details: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages_sent = details.get("prompt_messages") or details.get("prompt") or []
    if isinstance(messages_sent, str):
        return [{"role": "user", "content": messages_sent}]
    return [m for m in messages_sent if isinstance(m, Mapping)]


ANSWER_KEYS_SHOWN = frozenset(
    {
        "question",
        "searched_query",
        "answer",
        "reasoning",
        "passages",
        "citations",
        "prompt",
        "prompt_messages",
        "summary",
    }
)


def _other_details(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Everything the page does not lay out by itself, as readable text."""
    shown = []
    for key in sorted(details):
        if key in ANSWER_KEYS_SHOWN:
            continue
        value = details[key]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        shown.append((key, text))
    return shown


@dataclass(frozen=True)
class FlagShown:
    record: AuditRecord
    note: str


def _flags_on(record: AuditRecord, scope: Q) -> list[FlagShown]:
    flags = audit_flags_in(scope).filter(target=record).select_related("record").order_by("record")
    return [
        FlagShown(flag.record, str(json.loads(flag.record.details).get("note", "")))
        for flag in flags
    ]


@dataclass(frozen=True)
class Neighbours:
    previous: int | None
    following: int | None


def _neighbours(record: AuditRecord, scope: Q) -> Neighbours:
    """The same user's records, among those the reader may see, just before and after this one."""
    if record.actor_id is None:
        return Neighbours(None, None)
    same_user = AuditRecord.objects.filter(scope, actor_id=record.actor_id)
    return Neighbours(
        previous=same_user.filter(sequence__lt=record.sequence)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
        .first(),
        following=same_user.filter(sequence__gt=record.sequence)
        .order_by("sequence")
        .values_list("sequence", flat=True)
        .first(),
    )
