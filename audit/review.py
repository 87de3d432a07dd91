"""Reading the ledger: the review filters and the streamed exports."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection as default_connection
from django.db.models import BooleanField, Q, QuerySet
from django.db.models.expressions import RawSQL

from audit.anchor import checkpoint_newest_line
from audit.hashing import HASHED_COLUMNS, json_ready, record_content, time_text
from audit.models import AuditFlag, AuditRecord, AuditReference, AuditReferenceKind
from audit.verify import VERIFY_CHUNK


@dataclass(frozen=True)
class AuditFilters:
    username: str = ""
    group_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str = ""
    document_id: int | None = None
    model_name: str = ""
    event: str = ""
    flagged: bool | None = None
    text: str = ""
    sort: str = "-sequence"
    # The answers of one conversation (their records: started and answered).
    answer_ids: tuple[int, ...] | None = None

    def as_details(self) -> dict[str, Any]:
        """The filters that are set, for the record of who looked at what."""
        values: dict[str, Any] = json_ready(self.__dict__)
        return {key: value for key, value in values.items() if value not in (None, "")}


SORTS = {
    "-sequence": ("-sequence",),
    "sequence": ("sequence",),
    "actor_username": ("actor_username", "-sequence"),
    "-actor_username": ("-actor_username", "-sequence"),
    "event": ("event", "-sequence"),
    "-event": ("-event", "-sequence"),
    "status": ("status", "-sequence"),
    "-status": ("-status", "-sequence"),
    "model_name": ("model_name", "-sequence"),
    "-model_name": ("-model_name", "-sequence"),
}


def audit_flags_in(scope: Q) -> QuerySet[AuditFlag]:
    """The flags a reader of `scope` may know of: those whose flag record is in it."""
    if not scope:
        return AuditFlag.objects.all()
    return AuditFlag.objects.filter(record__in=AuditRecord.objects.filter(scope).values("pk"))


def audit_records_filtered(
    filters: AuditFilters, *, scope: Q | None = None
) -> QuerySet[AuditRecord]:
    """The records matching the filters, within `scope` (see `audit_scope_for`).

    Without a scope every record is read: that is for the operator's commands only.
    """
    scope = Q() if scope is None else scope
    records = AuditRecord.objects.filter(scope)
    if filters.username:
        records = records.filter(actor_username=filters.username)
    if filters.group_id is not None:
        records = records.filter(
            _referencing(
                [AuditReferenceKind.GROUP_ACL, AuditReferenceKind.GROUP_SUBJECT], filters.group_id
            )
        )
    if filters.document_id is not None:
        records = records.filter(
            _referencing(
                [AuditReferenceKind.DOCUMENT_CITED, AuditReferenceKind.DOCUMENT_SUBJECT],
                filters.document_id,
            )
        )
    if filters.since is not None:
        records = records.filter(created_at__gte=filters.since)
    if filters.until is not None:
        records = records.filter(created_at__lt=filters.until)
    if filters.status:
        records = records.filter(status=filters.status)
    if filters.model_name:
        records = records.filter(model_name=filters.model_name)
    if filters.event:
        records = records.filter(event=filters.event)
    if filters.flagged is not None:
        flagged = Q(sequence__in=audit_flags_in(scope).values("target_id"))
        records = records.filter(flagged if filters.flagged else ~flagged)
    if filters.text:
        records = records.filter(_text_matches(filters.text))
    if filters.answer_ids is not None:
        records = records.filter(answer_id__in=filters.answer_ids)
    return records.order_by(*SORTS.get(filters.sort, SORTS["-sequence"]))


def _referencing(kinds: list[AuditReferenceKind], target_id: int) -> Q:
    # A subquery led by the (kind, target_id) index; SQLite would scan every record for EXISTS.
    referencing = AuditReference.objects.filter(kind__in=kinds, target_id=target_id)
    return Q(sequence__in=referencing.values("record_id"))


def _text_matches(text: str) -> Q | RawSQL:
    if default_connection.vendor == "postgresql":
        # The same expression as the GIN index of migration 0003, so that the index answers it.
        return RawSQL(
            "to_tsvector('english'::regconfig, search_text) "
            "@@ websearch_to_tsquery('english'::regconfig, %s)",
            [text],
            output_field=BooleanField(),
        )
    if default_connection.vendor == "sqlite":
        # The FTS5 index of migration 0003; every word must occur, each quoted as a phrase.
        words = re.findall(r"\w+", text)
        if not words:
            return Q(pk__in=[])
        match = " ".join(f'"{word}"' for word in words)
        return Q(
            sequence__in=RawSQL(
                "SELECT rowid FROM assistant_auditsearch WHERE assistant_auditsearch MATCH %s",
                [match],
            )
        )
    return Q(search_text__icontains=text)


_EXPORT_FIELDS = HASHED_COLUMNS
CSV_COLUMNS = (
    "sequence",
    "time",
    "event",
    "actor_id",
    "actor_username",
    "status",
    "model_name",
    "summary",
    "prev_hash",
    "hash",
    "details",
)


def export_lines(records: QuerySet[AuditRecord], *, export_format: str) -> Iterator[str]:
    """Records as JSONL (one canonical record with its hash per line) or CSV, streamed.

    A JSONL export starts with the newest signed checkpoint of the anchor, when there is one
    (`{"checkpoint": {...}}`), so that deploy/verify_audit_export.py can hold the exported
    records against a head signed outside the database.
    """
    if export_format == "csv":
        yield from _csv_lines(records)
        return
    checkpoint = checkpoint_newest_line()
    if checkpoint:
        yield f'{{"checkpoint":{checkpoint}}}\n'
    rows = records.values_list(*_EXPORT_FIELDS).iterator(chunk_size=VERIFY_CHUNK)
    for sequence, created_at, event, actor_id, username, details_json, prev_hash, digest in rows:
        yield (
            record_content(
                sequence=sequence,
                time=time_text(created_at),
                event=event,
                actor_id=actor_id,
                actor_username=username,
                details_json=details_json,
                prev_hash=prev_hash,
                hash=digest,
            )
            + "\n"
        )


def _csv_lines(records: QuerySet[AuditRecord]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: Iterable[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(CSV_COLUMNS)
    fields = (
        *_EXPORT_FIELDS[:5],
        "status",
        "model_name",
        "summary",
        "prev_hash",
        "hash",
        "details",
    )
    for row in records.values_list(*fields).iterator(chunk_size=VERIFY_CHUNK):
        sequence, created_at, *rest = row
        yield line([sequence, time_text(created_at), *rest])
