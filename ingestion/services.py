"""Writes: uploading, ingesting, replacing, re-permissioning and deleting documents."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.roles import can_manage_document
from assistant.audit import (
    current_actor,
    document_access,
    document_act_details,
    document_kept_reason,
    ledger_append,
)
from assistant.models import AuditEvent
from assistant.operations import record_passages_indexed
from ingestion.chunking import ChunkDraft, WordPieceCounter, chunk_document
from ingestion.index import (
    HEADING_SEPARATOR,
    IndexedPassage,
    dense,
    passage_points,
    vector_index,
)
from ingestion.models import Chunk, Document, DocumentVersion, VersionStatus
from ingestion.parsing import ParsedDocument, ParseError, safe_filename
from ingestion.sandbox import limits_from_settings, parse_document_isolated
from ingestion.vector_index.base import point_id

logger = logging.getLogger(__name__)


NOT_YOURS = (
    "This file is already stored, or its name is taken, in a document you do not manage; "
    "not stored."
)


class UploadRefused(Exception):
    """The file was not stored; the message says why in words a person understands."""


@dataclass(frozen=True)
class UploadOutcome:
    name: str
    version: DocumentVersion | None
    created: bool
    error: str = ""

    @property
    def status(self) -> str:
        if self.error:
            return VersionStatus.FAILED
        assert self.version is not None
        return self.version.status


def _sha256_of(file: File) -> str:  # type: ignore[type-arg]
    digest = hashlib.sha256()
    file.seek(0)
    for block in file.chunks():
        digest.update(block)
    file.seek(0)
    return digest.hexdigest()


def document_upload(
    *,
    name: str,
    file: File,  # type: ignore[type-arg]
    source_path: str | None = None,
    groups: Sequence[Group] = (),
    is_public: bool = False,
    user: User | None = None,
    manager: User | None = None,
) -> UploadOutcome:
    """Store a file as a new document or a new version of the document at its source path.

    The same bytes twice are one version, not two; the file is checked before it is stored.
    With a `manager` (a person uploading, not the operator), a file that would join a document
    they do not manage is refused, and that document is not named.
    """
    try:
        clean_name = safe_filename(name)
    except ParseError as error:
        return UploadOutcome(name=name, version=None, created=False, error=str(error))
    size = file.size or 0
    if size > settings.UPLOAD_MAX_BYTES:
        limit_mb = settings.UPLOAD_MAX_BYTES / (1024 * 1024)
        return UploadOutcome(
            name=name,
            version=None,
            created=False,
            error=f"The file is larger than the upload limit of {limit_mb:g} MB; not stored.",
        )
    sha256 = _sha256_of(file)
    source = source_path or clean_name
    with transaction.atomic():
        existing = (
            DocumentVersion.objects.filter(sha256=sha256, document__deleted_at__isnull=True)
            .select_related("document")
            .first()
        )
        if existing is not None:
            if manager is not None and not can_manage_document(manager, existing.document):
                return UploadOutcome(name=name, version=None, created=False, error=NOT_YOURS)
            return UploadOutcome(name=name, version=existing, created=False)
        document = (
            Document.objects.select_for_update()
            .filter(source_path=source, deleted_at__isnull=True)
            .first()
        )
        if document is None:
            document = Document.objects.create(
                title=Path(clean_name).stem.replace("_", " ").strip() or clean_name,
                source_path=source,
                is_public=is_public,
                created_by=user if user is not None and user.is_authenticated else None,
            )
            document.groups.set(groups)
            number = 1
        elif manager is not None and not can_manage_document(manager, document):
            return UploadOutcome(name=name, version=None, created=False, error=NOT_YOURS)
        else:
            number = (
                document.versions.order_by("-number").values_list("number", flat=True).first() or 0
            ) + 1
        version = DocumentVersion(
            document=document,
            number=number,
            sha256=sha256,
            original_name=clean_name,
            size_bytes=size,
            uploaded_by=user if user is not None and user.is_authenticated else None,
        )
        version.file.save(
            f"{sha256[:2]}/{sha256}{Path(clean_name).suffix.lower()}", file, save=False
        )
        version.save()
        version_queue(version)
        event = AuditEvent.DOCUMENT_UPLOADED if number == 1 else AuditEvent.DOCUMENT_VERSION_ADDED
        details = document_act_details(event, document, version=version)
        ledger_append(event=event, actor=user or current_actor(), details=details)
    return UploadOutcome(name=name, version=version, created=True)


def document_upload_bytes(*, name: str, data: bytes, **kwargs: object) -> UploadOutcome:
    return document_upload(name=name, file=ContentFile(data, name=name), **kwargs)  # type: ignore[arg-type]


def version_queue(version: DocumentVersion) -> None:
    """Hand the version to the workers once the transaction that created it commits."""
    from ingestion.dispatch import ingestion_dispatch

    version_id = version.id
    transaction.on_commit(lambda: ingestion_dispatch([version_id]))


def version_retry(version: DocumentVersion) -> None:
    with transaction.atomic():
        updated = DocumentVersion.objects.filter(
            id=version.id, status__in=[VersionStatus.FAILED, VersionStatus.CANCELLED]
        ).update(status=VersionStatus.QUEUED, status_message="", chunks_done=0, chunks_total=0)
        if updated:
            version_queue(version)


def version_cancel(version: DocumentVersion) -> bool:
    """Stop a queued or running ingestion; a running task notices between batches."""
    updated = DocumentVersion.objects.filter(
        id=version.id,
        status__in=[VersionStatus.QUEUED, VersionStatus.PARSING, VersionStatus.EMBEDDING],
    ).update(
        status=VersionStatus.CANCELLED,
        status_message="Cancelled by an administrator.",
        finished_at=timezone.now(),
    )
    if updated:
        vector_index().delete(version_id=version.id)
    return bool(updated)


def document_set_access(*, document: Document, groups: Iterable[Group], is_public: bool) -> None:
    """Who may read a document changes in the index at once, for every version's passages."""
    with transaction.atomic():
        access_before = document_access(document)
        document.groups.set(list(groups))
        document.is_public = is_public
        document.save(update_fields=["is_public", "updated_at"])
        tags = document.access_tags()
        event = AuditEvent.DOCUMENT_ACCESS_CHANGED
        details = document_act_details(event, document, access_before=access_before)
        ledger_append(event=event, actor=current_actor(), details=details)
    vector_index().set_payload(values={"groups": tags}, document_id=document.id)


def document_delete(*, document: Document) -> None:
    """Take a document out of search; its rows stay on record."""
    with transaction.atomic():
        document.deleted_at = timezone.now()
        document.save(update_fields=["deleted_at", "updated_at"])
        document.versions.filter(
            status__in=[VersionStatus.QUEUED, VersionStatus.PARSING, VersionStatus.EMBEDDING]
        ).update(status=VersionStatus.CANCELLED, status_message="The document was deleted.")
        event = AuditEvent.DOCUMENT_DELETED
        details = document_act_details(event, document)
        ledger_append(event=event, actor=current_actor(), details=details)
    vector_index().delete(document_id=document.id)


@cache
def _token_counter() -> WordPieceCounter:
    return WordPieceCounter(dense().model_path)


def _set_status(
    version_id: int, status: VersionStatus, message: str = "", **fields: object
) -> None:
    if status in (VersionStatus.READY, VersionStatus.FAILED, VersionStatus.CANCELLED):
        fields.setdefault("finished_at", timezone.now())
    DocumentVersion.objects.filter(id=version_id).update(
        status=status, status_message=message, **fields
    )


def _parse_and_chunk(version: DocumentVersion) -> list[ChunkDraft] | None:
    """Parse the stored file and save its chunks; None when the file failed (recorded)."""
    _set_status(
        version.id,
        VersionStatus.PARSING,
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
        chunks_done=0,
    )
    try:
        with version.file.open("rb") as stored:
            data = stored.read()
        # In a child process under memory and time limits: a hostile file fails alone.
        limits, sandbox = limits_from_settings()
        parsed = parse_document_isolated(
            data, version.original_name, limits=limits, sandbox=sandbox
        )
        drafts = chunk_document(
            parsed,
            _token_counter(),
            max_tokens=settings.CHUNK_MAX_TOKENS,
            overlap_tokens=settings.CHUNK_OVERLAP_TOKENS,
        )
        if not drafts:
            raise ParseError("The file has no extractable text.")
    except ParseError as error:
        _set_status(version.id, VersionStatus.FAILED, str(error))
        return None
    except FileNotFoundError:
        _set_status(version.id, VersionStatus.FAILED, "The stored file is missing.")
        return None
    with transaction.atomic():
        # A re-delivered task starts over; deterministic point ids make the index side harmless.
        Chunk.objects.filter(version=version).delete()
        Chunk.objects.bulk_create(
            Chunk(
                version=version,
                index=draft.index,
                point_id=point_id(version.id, draft.index),
                text=draft.text,
                page=draft.page,
                heading=HEADING_SEPARATOR.join(draft.heading_path),
                token_count=draft.token_count,
            )
            for draft in drafts
        )
        document = version.document
        if version.number == 1 and parsed.title and document.title != parsed.title:
            document.title = parsed.title[:500]
            document.save(update_fields=["title", "updated_at"])
        DocumentVersion.objects.filter(id=version.id).update(
            detected_type=parsed.detected_type,
            chunks_total=len(drafts),
            search_context=search_context(parsed),
        )
        _set_status(version.id, VersionStatus.EMBEDDING, chunks_total=len(drafts))
    return drafts


# The opening words of a document that every passage carries into lexical search.
LEAD_WORDS = 30


def search_context(parsed: ParsedDocument) -> str:
    """Running headers and the opening words: what the whole document is, for every passage."""
    lead: list[str] = []
    for section in parsed.sections:
        lead.extend(section.text.split()[: LEAD_WORDS - len(lead)])
        if len(lead) >= LEAD_WORDS:
            break
    return "\n".join(part for part in (parsed.running_text, " ".join(lead)) if part)


def _versions_activate(indexed_with_tags: dict[int, list[str]]) -> None:
    """Make fully indexed versions the ones search serves, then drop older passages.

    `indexed_with_tags` maps each version to the access tags its passages were written
    with; if the document's readers changed meanwhile, the passages are corrected here.
    A version is READY only once search serves it: whoever sees READY and asks at once
    finds its passages.
    """
    finished: dict[int, int] = {}
    activate: list[int] = []
    retag: dict[int, list[str]] = {}
    stale_versions: list[int] = []
    deleted_documents: list[int] = []
    for version_id, indexed_tags in indexed_with_tags.items():
        with transaction.atomic():
            version = DocumentVersion.objects.select_for_update().get(id=version_id)
            document = Document.objects.select_for_update().get(id=version.document_id)
            if version.status == VersionStatus.READY and document.current_version_id == version.id:
                # Another delivery of this task finished it first, and this one wrote its
                # passages again (switched off): switch them back on.
                activate.append(version.id)
                continue
            if version.status != VersionStatus.EMBEDDING:
                continue
            finished[version.id] = version.chunks_total
            if document.deleted_at is not None:
                deleted_documents.append(document.id)
                continue
            current = document.current_version
            if current is not None and current.number > version.number:
                # An older version finished after a newer one: it is kept on record only.
                stale_versions.append(version.id)
                continue
            document.current_version = version
            document.save(update_fields=["current_version", "updated_at"])
            activate.append(version.id)
            tags = document.access_tags()
            if tags != indexed_tags:
                retag[version.id] = tags
            # Older versions served until now, or finished a moment ago in this same call.
            stale_versions.extend(
                document.versions.exclude(id=version.id)
                .filter(Q(status=VersionStatus.READY) | Q(id__in=list(finished)))
                .values_list("id", flat=True)
            )
    index = vector_index()
    for version_id, tags in retag.items():
        index.set_payload(
            values={"groups": tags},
            document_id=DocumentVersion.objects.get(id=version_id).document_id,
            version_id=version_id,
        )
    index.activate_versions(activate)
    for version_id in stale_versions:
        index.delete(version_id=version_id)
    for document_id in deleted_documents:
        index.delete(document_id=document_id)
    for version_id, chunks_total in finished.items():
        # A version cancelled meanwhile stays cancelled.
        DocumentVersion.objects.filter(id=version_id, status=VersionStatus.EMBEDDING).update(
            status=VersionStatus.READY, chunks_done=chunks_total, finished_at=timezone.now()
        )


def versions_ingest(version_ids: Sequence[int]) -> dict[int, str]:
    """Parse, chunk, embed and index versions; chunks of many small files share batches.

    Every file fails alone: a broken one ends FAILED with its reason and the rest go on.
    Returns each version's final status.
    """
    versions = list(
        DocumentVersion.objects.filter(id__in=version_ids).select_related("document").order_by("id")
    )
    work: list[tuple[DocumentVersion, ChunkDraft]] = []
    for version in versions:
        if version.is_final:
            continue
        drafts = _parse_and_chunk(version)
        if drafts is not None:
            work.extend((version, draft) for draft in drafts)

    # Passages of similar length share a batch, so little of each batch is padding.
    work.sort(key=lambda item: item[1].token_count)
    remaining = {version.id: 0 for version, _ in work}
    for version, _ in work:
        remaining[version.id] += 1
    tags_of = {version.id: version.document.access_tags() for version, _ in work}
    # Re-read: parsing set the title and the search context after these rows were loaded.
    described = {
        row.id: row
        for row in DocumentVersion.objects.filter(id__in=tags_of).select_related("document")
    }
    cancelled: set[int] = set()
    finished_elsewhere: set[int] = set()
    index = vector_index()
    batch_size = settings.INGEST_EMBED_BATCH
    for start in range(0, len(work), batch_size):
        batch = work[start : start + batch_size]
        batch_ids = {version.id for version, _ in batch}
        stopped = dict(
            DocumentVersion.objects.filter(id__in=batch_ids)
            .exclude(status=VersionStatus.EMBEDDING)
            .values_list("id", "status")
        )
        # READY means another delivery of this task finished the version: its passages
        # are served and must stay; anything else stopped it (cancelled, failed).
        cancelled |= {version_id for version_id, status in stopped.items() if status != "READY"}
        finished_elsewhere |= {
            version_id for version_id, status in stopped.items() if status == "READY"
        }
        batch = [
            (version, draft)
            for version, draft in batch
            if version.id not in cancelled and version.id not in finished_elsewhere
        ]
        if not batch:
            continue
        points = passage_points(
            [
                IndexedPassage(
                    document_id=version.document_id,
                    version_id=version.id,
                    chunk_index=draft.index,
                    title=described[version.id].document.title,
                    source=version.document.source_path,
                    groups=tags_of[version.id],
                    page=draft.page,
                    heading=HEADING_SEPARATOR.join(draft.heading_path),
                    text=draft.text,
                    active=False,
                    file_name=version.original_name,
                    context=described[version.id].search_context,
                )
                for version, draft in batch
            ]
        )
        index.upsert(points)
        record_passages_indexed(len(points))
        done_in_batch: dict[int, int] = {}
        for version, _ in batch:
            done_in_batch[version.id] = done_in_batch.get(version.id, 0) + 1
        completed: dict[int, list[str]] = {}
        for version_id, done in done_in_batch.items():
            DocumentVersion.objects.filter(id=version_id, status=VersionStatus.EMBEDDING).update(
                chunks_done=F("chunks_done") + done
            )
            remaining[version_id] -= done
            if remaining[version_id] == 0:
                completed[version_id] = tags_of[version_id]
        _versions_activate(completed)

    # Passages this delivery wrote again (switched off) for a version finished elsewhere.
    _versions_activate({version_id: tags_of[version_id] for version_id in finished_elsewhere})
    for version_id in cancelled:
        index.delete(version_id=version_id)
    return dict(DocumentVersion.objects.filter(id__in=version_ids).values_list("id", "status"))


def version_mark_failed(version_id: int, message: str) -> None:
    """Bookkeeping when a task gives up: the file is FAILED with a reason, nothing else moves."""
    DocumentVersion.objects.filter(id=version_id).exclude(
        status__in=[VersionStatus.READY, VersionStatus.CANCELLED]
    ).update(status=VersionStatus.FAILED, status_message=message, finished_at=timezone.now())


# The ledger event of a purge; its "document." prefix puts it among the document admins' records.


@dataclass(frozen=True)
class PurgeOutcome:
    """What became of one deleted document past the retention: purged, or kept and why."""

    document_id: int
    title: str
    kept_reason: str = ""
    record_sequence: int | None = None
    files_removed: int = 0

    @property
    def purged(self) -> bool:
        return not self.kept_reason


@dataclass
class PurgeReport:
    dry_run: bool
    outcomes: list[PurgeOutcome] = field(default_factory=list)
    # Deleted documents still inside the retention period; nothing is done to them.
    waiting: int = 0

    @property
    def purged(self) -> list[PurgeOutcome]:
        return [outcome for outcome in self.outcomes if outcome.purged]

    @property
    def kept(self) -> list[PurgeOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.purged]


def documents_purge(*, older_than: timedelta, dry_run: bool) -> PurgeReport:
    """Remove for good the documents deleted longer ago than `older_than`, with files and chunks.

    A document under legal hold, or cited by an audit record, is kept and reported with the
    reason. Each purge is one transaction with its "document.purged" ledger record; stored
    files go once it commits. A dry run reports the same outcomes and changes nothing.
    """
    cutoff = timezone.now() - older_than
    report = PurgeReport(dry_run=dry_run)
    report.waiting = Document.objects.filter(deleted_at__gte=cutoff).count()
    candidates = Document.objects.filter(deleted_at__lt=cutoff).order_by("deleted_at", "id")
    for document_id in candidates.values_list("id", flat=True):
        outcome = _document_purge(
            document_id, cutoff=cutoff, older_than=older_than, dry_run=dry_run
        )
        if outcome is not None:
            report.outcomes.append(outcome)
    return report


def _document_purge(
    document_id: int, *, cutoff: datetime, older_than: timedelta, dry_run: bool
) -> PurgeOutcome | None:
    with transaction.atomic():
        # Locked, so that a legal hold set meanwhile waits for this purge or prevents it.
        document = (
            Document.objects.select_for_update()
            .filter(id=document_id, deleted_at__lt=cutoff)
            .first()
        )
        if document is None:
            return None
        kept_reason = document_kept_reason(document.pk)
        if kept_reason or dry_run:
            return PurgeOutcome(document.pk, document.title, kept_reason=kept_reason)
        title = document.title
        versions = list(document.versions.order_by("number"))
        chunk_count = Chunk.objects.filter(version__document=document).count()
        details = {
            "document_id": document.pk,
            "title": title,
            "source_path": document.source_path,
            "deleted_at": document.deleted_at,
            "retention_days": older_than.days,
            "versions": [
                {
                    "id": version.pk,
                    "number": version.number,
                    "sha256": version.sha256,
                    "original_name": version.original_name,
                    "size_bytes": version.size_bytes,
                }
                for version in versions
            ],
            "chunks": chunk_count,
            "summary": f"Purged “{title}” and its {len(versions)} version(s)",
        }
        document.delete()
        # A file is shared only when the same bytes were stored again under the same name.
        stored_files = [
            (version.file.storage, version.file.name)
            for version in versions
            if version.file.name
            and not DocumentVersion.objects.filter(file=version.file.name).exists()
        ]
        record = ledger_append(
            event=AuditEvent.DOCUMENT_PURGED, actor=current_actor(), details=details
        )
        transaction.on_commit(lambda: _stored_files_remove(stored_files))
    return PurgeOutcome(
        document_id,
        title,
        record_sequence=record.sequence,
        files_removed=len(stored_files),
    )


def _stored_files_remove(stored_files: Sequence[tuple[Storage, str]]) -> None:
    for storage, name in stored_files:
        storage.delete(name)
