"""Writes: uploading, replacing, re-permissioning, deleting and purging documents.

The work a queued version goes through (parse, chunk, embed, index) is ingestion/pipeline.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage
from django.db import transaction
from django.utils import timezone

from audit.ledger import ledger_append
from audit.models import AuditEvent
from config.request_context import current_actor
from ingestion.access import document_access_tags, manageable_documents
from ingestion.dispatch import ingestion_dispatch
from ingestion.ledger_details import document_access, document_act_details, document_kept_reason
from ingestion.models import (
    RETRYABLE_STATUSES,
    UNFINISHED_STATUSES,
    Chunk,
    Document,
    DocumentVersion,
    VersionStatus,
)
from ingestion.parsing import ParseError, detect_type_of_file, safe_filename
from ingestion.vector_index.configured import vector_index

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadOutcome:
    name: str
    version: DocumentVersion | None
    created: bool
    error: str = ""
    # What else the uploader should know: the file matched a stored version, or was kept
    # apart from a document they manage that has its name or content but other readers.
    note: str = ""

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


def upload_size_refusal(size: int) -> str:
    """Why a file of `size` bytes may not be uploaded; empty when it may."""
    if size <= settings.UPLOAD_MAX_BYTES:
        return ""
    limit_mb = settings.UPLOAD_MAX_BYTES / (1024 * 1024)
    return f"The file is larger than the upload limit of {limit_mb:g} MB."


@dataclass(frozen=True)
class _Readers:
    group_ids: frozenset[int]
    is_public: bool

    @classmethod
    def of(cls, document: Document) -> _Readers:
        return cls(frozenset(document.groups.values_list("id", flat=True)), document.is_public)

    def described(self) -> str:
        names = sorted(Group.objects.filter(id__in=self.group_ids).values_list("name", flat=True))
        if self.is_public:
            names.insert(0, "everyone")
        return ", ".join(names) or "no group"


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
    """Store a file as a new document or a new version of the document it belongs to.

    A document is known by its source path and its readers: the file joins the live document
    with both, or becomes a new document. The same bytes as a version of a document with the
    same readers are that version, not a new one; a failed or cancelled one is queued again.
    With a `manager` (a person uploading, not the operator) only the documents they manage are
    looked at: the others are neither joined nor named, so an upload never tells anyone what
    other groups hold. The file is checked before it is stored.
    """
    try:
        clean_name = safe_filename(name)
    except ParseError as error:
        return UploadOutcome(name=name, version=None, created=False, error=str(error))
    size = file.size or 0
    refusal = upload_size_refusal(size)
    if refusal:
        return UploadOutcome(name=name, version=None, created=False, error=f"{refusal} Not stored.")
    try:
        # Refused here, as the README promises, rather than stored and failed: no retry helps.
        detect_type_of_file(file, clean_name)
    except ParseError as error:
        return UploadOutcome(name=name, version=None, created=False, error=f"{error} Not stored.")
    sha256 = _sha256_of(file)
    source = source_path or clean_name
    readers = _Readers(frozenset(group.pk for group in groups), is_public)
    scope = (
        manageable_documents(manager)
        if manager is not None
        else Document.objects.filter(deleted_at__isnull=True)
    )
    with transaction.atomic():
        same_bytes = list(
            DocumentVersion.objects.filter(sha256=sha256, document__in=scope.values("id"))
            .select_related("document")
            .order_by("-created_at")
        )
        for existing in same_bytes:
            if _Readers.of(existing.document) == readers:
                return _upload_matched(name, existing)
        # Locked, so that two uploads of one name do not both take the same version number.
        same_name = list(
            Document.objects.select_for_update().filter(
                id__in=scope.values("id"), source_path=source
            )
        )
        document = next((d for d in same_name if _Readers.of(d) == readers), None)
        note = ""
        if document is None:
            document = Document.objects.create(
                title=Path(clean_name).stem.replace("_", " ").strip() or clean_name,
                source_path=source,
                is_public=is_public,
                created_by=user if user is not None and user.is_authenticated else None,
            )
            document.groups.set(groups)
            number = 1
            note = _kept_apart_note(same_bytes=same_bytes, same_name=same_name)
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
        suffix = Path(clean_name).suffix.lower()
        stored = _stored_file_name(sha256, suffix, storage=version.file.storage)
        if stored:
            version.file.name = stored
        else:
            version.file.save(f"{sha256[:2]}/{sha256}{suffix}", file, save=False)
        version.save()
        version_queue(version)
        event = AuditEvent.DOCUMENT_UPLOADED if number == 1 else AuditEvent.DOCUMENT_VERSION_ADDED
        details = document_act_details(event, document, version=version)
        ledger_append(event=event, actor=user or current_actor(), details=details)
    return UploadOutcome(name=name, version=version, created=True, note=note)


def _upload_matched(name: str, existing: DocumentVersion) -> UploadOutcome:
    """A file whose bytes are already `existing`: nothing stored; a failed one is retried."""
    stored_as = f"{existing.number} of “{existing.document.title}”"
    unchanged = (
        f"The same content is already stored as version {stored_as}; nothing new was stored."
    )
    if not existing.is_retryable:
        return UploadOutcome(name=name, version=existing, created=False, note=unchanged)
    ended = (
        f"its ingestion had failed ({existing.status_message})"
        if existing.status == VersionStatus.FAILED
        else "its ingestion had been cancelled"
    )
    # False only when someone retried it a moment ago: its status then says where it is.
    retried = version_retry(existing)
    existing.refresh_from_db()
    note = f"Version {stored_as} holds the same content and {ended}; it is queued again."
    return UploadOutcome(
        name=name, version=existing, created=False, note=note if retried else unchanged
    )


def _kept_apart_note(*, same_bytes: list[DocumentVersion], same_name: list[Document]) -> str:
    """Tell the uploader of the documents they manage that a new document was kept apart from.

    Only documents the uploader manages are passed here: naming others would tell them what
    another group holds.
    """
    if same_bytes:
        document = same_bytes[0].document
        return (
            f"The same content is already stored as “{document.title}”, read by "
            f"{_Readers.of(document).described()}; this file is stored as a new document for "
            "the readers you chose."
        )
    if same_name:
        document = same_name[0]
        return (
            f"“{document.title}”, read by {_Readers.of(document).described()}, has the same "
            "name; this file is stored as a new document for the readers you chose. To add a "
            "version to it instead, upload with its readers."
        )
    return ""


def _stored_file_name(sha256: str, suffix: str, *, storage: Storage) -> str:
    """A stored file with these bytes, kept by a live document, to share rather than copy.

    Only live documents' files: a purge removes a file once no version names it, and purges
    only documents deleted long ago.
    """
    names = DocumentVersion.objects.filter(
        sha256=sha256, document__deleted_at__isnull=True, file__endswith=suffix
    ).values_list("file", flat=True)
    for name in names:
        if name and storage.exists(name):
            return str(name)
    return ""


def document_upload_bytes(*, name: str, data: bytes, **kwargs: object) -> UploadOutcome:
    return document_upload(name=name, file=ContentFile(data, name=name), **kwargs)  # type: ignore[arg-type]


def version_queue(version: DocumentVersion) -> None:
    """Hand the version to the workers once the transaction that created it commits."""
    version_id = version.id
    transaction.on_commit(lambda: ingestion_dispatch([version_id]))


def version_retry(version: DocumentVersion) -> bool:
    """Queue a failed or cancelled version again; False, and nothing done, for any other."""
    with transaction.atomic():
        updated = DocumentVersion.objects.filter(
            id=version.id, status__in=RETRYABLE_STATUSES
        ).update(status=VersionStatus.QUEUED, status_message="", chunks_done=0, chunks_total=0)
        if updated:
            version_queue(version)
    return bool(updated)


def version_retry_refusal(*, noun: str) -> str:
    """Why `version_retry` did nothing, the version called what the page calls it."""
    return f"Only a failed or cancelled {noun} can be retried."


def version_cancel(version: DocumentVersion) -> bool:
    """Stop a queued or running ingestion; a running task notices between batches.

    False, and nothing done, for a version whose ingestion has already ended.
    """
    updated = DocumentVersion.objects.filter(id=version.id, status__in=UNFINISHED_STATUSES).update(
        status=VersionStatus.CANCELLED,
        status_message="Cancelled by an administrator.",
        finished_at=timezone.now(),
    )
    if updated:
        vector_index().delete(version_id=version.id)
    return bool(updated)


def version_cancel_refusal(*, noun: str) -> str:
    """Why `version_cancel` did nothing, the version called what the page calls it."""
    return f"Only a queued or running {noun} can be cancelled."


def document_set_access(*, document: Document, groups: Iterable[Group], is_public: bool) -> None:
    """Who may read a document changes in the index at once, for every version's passages."""
    with transaction.atomic():
        access_before = document_access(document)
        document.groups.set(list(groups))
        document.is_public = is_public
        document.save(update_fields=["is_public", "updated_at"])
        tags = document_access_tags(document)
        event = AuditEvent.DOCUMENT_ACCESS_CHANGED
        details = document_act_details(event, document, access_before=access_before)
        ledger_append(event=event, actor=current_actor(), details=details)
    vector_index().set_payload(values={"groups": tags}, document_id=document.id)


def document_delete(*, document: Document) -> None:
    """Take a document out of search; its rows stay on record."""
    with transaction.atomic():
        document.deleted_at = timezone.now()
        document.save(update_fields=["deleted_at", "updated_at"])
        document.versions.filter(status__in=UNFINISHED_STATUSES).update(
            status=VersionStatus.CANCELLED, status_message="The document was deleted."
        )
        event = AuditEvent.DOCUMENT_DELETED
        details = document_act_details(event, document)
        ledger_append(event=event, actor=current_actor(), details=details)
    vector_index().delete(document_id=document.id)


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
        # Versions with the same bytes share one stored file: it goes with the last of them.
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
