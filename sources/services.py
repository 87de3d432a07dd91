"""Writes: adding, pausing and removing sources, and asking for a run now."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.utils import timezone

from audit.ledger import ledger_append
from audit.models import AuditEvent
from ingestion.services import document_delete
from sources.dispatch import run_dispatch
from sources.kinds import source_reader
from sources.models import Source, SourceItem, SourceKind, SourceRun
from sources.options import OptionError, options_check
from sources.schedule import next_run_after, schedule_parse
from sources.sync import run_request


class SourceRefused(ValueError):
    """A source cannot be added or changed as asked; the reason, in words for the admin."""


def source_description(source: Source) -> dict[str, Any]:
    """What the ledger and the pages say of a source: options are names of files and
    variables, never secrets themselves."""
    return {
        "id": source.pk,
        "name": source.name,
        "kind": source.kind,
        "location": source.location,
        "options": dict(source.options),
        "groups": sorted(source.groups.values_list("name", flat=True)),
        "is_public": source.is_public,
        "schedule": source.schedule,
        "paused": source.paused,
    }


def source_add(
    *,
    name: str,
    kind: str,
    location: str = "",
    options: Mapping[str, Any] | None = None,
    groups: Sequence[Group] = (),
    is_public: bool = False,
    schedule: str = "",
    user: User | None = None,
) -> Source:
    """Add a source after checking its settings; the ledger records who added what."""
    name = name.strip()
    options = dict(options or {})
    if not name:
        raise SourceRefused("A source needs a name.")
    if kind not in SourceKind.values:
        raise SourceRefused(f"The kind is one of {', '.join(SourceKind.values)}, not “{kind}”.")
    if Source.objects.filter(name=name).exists():
        raise SourceRefused(f"A source named “{name}” exists already.")
    source = Source(
        name=name,
        kind=kind,
        location=location.strip(),
        options=options,
        is_public=is_public,
        schedule=" ".join(schedule.split()),
        created_by=user if user is not None and user.is_authenticated else None,
    )
    try:
        options_check(options)
        if source.schedule:
            schedule_parse(source.schedule)
        source_reader(source)
    except OptionError as error:
        raise SourceRefused(str(error)) from error
    source.next_run_at = next_run_after(source.schedule, timezone.now())
    with transaction.atomic():
        source.save()
        source.groups.set(groups)
        ledger_append(
            event=AuditEvent.SOURCE_ADDED,
            actor=user,
            details={
                "source": source_description(source),
                "summary": f"Added source “{source.name}” ({source.kind})",
            },
        )
    return source


def source_set_paused(*, source: Source, paused: bool, user: User | None = None) -> None:
    with transaction.atomic():
        source.paused = paused
        if not paused:
            source.next_run_at = next_run_after(source.schedule, timezone.now())
        source.save(update_fields=["paused", "next_run_at"])
        ledger_append(
            event=AuditEvent.SOURCE_CHANGED,
            actor=user,
            details={
                "source": source_description(source),
                "summary": f"{'Paused' if paused else 'Resumed'} source “{source.name}”",
            },
        )


def source_run_now(
    *, source: Source, user: User | None = None, confirm_deletions: bool = False
) -> SourceRun:
    """Queue a run (or return the one in progress) and hand it to the workers."""
    run, _ = run_request(source=source, user=user, confirm_deletions=confirm_deletions)
    run_dispatch(run.pk)
    return run


def source_remove(*, source: Source, delete_documents: bool, user: User | None = None) -> int:
    """Remove a source; its documents are deleted (out of search) or kept as ordinary
    documents, as the admin chose. Returns how many documents were deleted."""
    with transaction.atomic():
        description = source_description(source)
        deleted = 0
        if delete_documents:
            items = SourceItem.objects.filter(
                source=source, document__isnull=False, document__deleted_at__isnull=True
            ).select_related("document")
            origin = {"id": source.pk, "name": source.name, "kind": source.kind}
            for item in items:
                assert item.document is not None
                document_delete(document=item.document, actor=user, origin=origin)
                deleted += 1
        source.delete()
        kept = "deleted" if delete_documents else "kept"
        ledger_append(
            event=AuditEvent.SOURCE_REMOVED,
            actor=user,
            details={
                "source": description,
                "documents": kept,
                "documents_deleted": deleted,
                "summary": f"Removed source “{description['name']}”, its documents {kept}",
            },
        )
    return deleted
