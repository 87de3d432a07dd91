"""Writes: uploading, replacing, re-permissioning, deleting and purging documents.

The work a queued version goes through (parse, chunk, embed, index) is ingestion/pipeline.py.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile, File
from django.core.files.storage import Storage
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from audit.ledger import LedgerEntry, ledger_append, ledger_append_many
from audit.models import AuditEvent
from config.request_context import current_actor
from ingestion.access import document_access_tags, manageable_documents
from ingestion.dispatch import ingestion_dispatch
from ingestion.ledger_details import (
    access_details,
    document_access,
    document_act_details,
    document_kept_reason,
    document_review,
)
from ingestion.models import (
    RETRYABLE_STATUSES,
    UNFINISHED_STATUSES,
    Chunk,
    Document,
    DocumentVersion,
    VersionStatus,
)
from ingestion.parsing import ParseError, detect_type_of_file, safe_filename
from ingestion.titles import document_title_from_name
from ingestion.vector_index.configured import vector_index

_Row = TypeVar("_Row")
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


@dataclass(frozen=True)
class UploadItem:
    """One file of `documents_upload`: its name, its content and where it came from."""

    name: str
    file: File  # type: ignore[type-arg]
    source_path: str | None = None


@dataclass(frozen=True)
class _CheckedFile:
    clean_name: str
    size: int
    sha256: str


def _upload_check(name: str, file: File) -> _CheckedFile | UploadOutcome:  # type: ignore[type-arg]
    """The file's safe name, size and hash; or why it is refused before anything is stored."""
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
    return _CheckedFile(clean_name=clean_name, size=size, sha256=_sha256_of(file))


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
    checked = _upload_check(name, file)
    if isinstance(checked, UploadOutcome):
        return checked
    return _upload_checked(
        UploadItem(name=name, file=file, source_path=source_path),
        checked,
        groups=groups,
        is_public=is_public,
        user=user,
        manager=manager,
    )


def _upload_checked(
    item: UploadItem,
    checked: _CheckedFile,
    *,
    groups: Sequence[Group],
    is_public: bool,
    user: User | None,
    manager: User | None,
) -> UploadOutcome:
    """`document_upload` of a file `_upload_check` let through."""
    name, file = item.name, item.file
    clean_name, size, sha256 = checked.clean_name, checked.size, checked.sha256
    source = item.source_path or clean_name
    readers = _Readers(frozenset(group.pk for group in groups), is_public)
    scope = (
        manageable_documents(manager)
        if manager is not None
        else Document.objects.filter(deleted_at__isnull=True)
    )
    with transaction.atomic():
        # Found by their indexed columns, then kept to the scope: a subquery of the scope
        # made the database list every live document for each file uploaded.
        by_bytes = list(
            DocumentVersion.objects.filter(sha256=sha256)
            .select_related("document")
            .order_by("-created_at")
        )
        same_bytes = _within(scope, by_bytes, lambda version: version.document_id)
        for existing in same_bytes:
            if _Readers.of(existing.document) == readers:
                return _upload_matched(name, existing)
        # Locked, so that two uploads of one name do not both take the same version number.
        by_name = list(Document.objects.select_for_update().filter(source_path=source))
        same_name = _within(scope, by_name, lambda document: document.pk)
        document = next((d for d in same_name if _Readers.of(d) == readers), None)
        note = ""
        if document is None:
            document = Document.objects.create(
                title=document_title_from_name(clean_name),
                source_path=source,
                is_public=is_public,
                created_by=user if user is not None and user.is_authenticated else None,
            )
            if groups:
                document.groups.add(*groups)
            # Just written in this transaction: what is stored is what was asked for.
            access = access_details(
                is_public=is_public, groups=((group.pk, group.name) for group in groups)
            )
            number = 1
            note = _kept_apart_note(same_bytes=same_bytes, same_name=same_name)
        else:
            access = None
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
        stored = _stored_file_name(suffix, by_bytes, storage=version.file.storage)
        if stored:
            version.file.name = stored
        else:
            version.file.save(f"{sha256[:2]}/{sha256}{suffix}", file, save=False)
        version.save()
        version_queue(version)
        event = AuditEvent.DOCUMENT_UPLOADED if number == 1 else AuditEvent.DOCUMENT_VERSION_ADDED
        details = document_act_details(event, document, version=version, access=access)
        ledger_append(event=event, actor=user or current_actor(), details=details)
    return UploadOutcome(name=name, version=version, created=True, note=note)


# Files that `documents_upload` stores in one transaction.
UPLOAD_BATCH_FILES = 100


def documents_upload(
    items: Sequence[UploadItem],
    *,
    groups: Sequence[Group] = (),
    is_public: bool = False,
    user: User | None = None,
    manager: User | None = None,
) -> list[UploadOutcome]:
    """Store many files, each with the outcome `document_upload` gives it, in their order.

    Files new to the knowledge base (no stored version has their bytes, no document their
    source path, no earlier file of the call either) are stored together, a batch in one
    transaction with one append to the ledger: one by one, the queries and commits cost
    more than storing small files. Then the batch's other files are stored one by one as
    `document_upload` stores them. No new file shares its bytes or source path with an
    earlier file, so each file meets exactly what it would have met one by one.
    """
    outcomes: list[UploadOutcome | None] = [None] * len(items)
    for start in range(0, len(items), UPLOAD_BATCH_FILES):
        batch = list(enumerate(items[start : start + UPLOAD_BATCH_FILES], start=start))
        checked: list[tuple[int, UploadItem, _CheckedFile]] = []
        for index, item in batch:
            result = _upload_check(item.name, item.file)
            if isinstance(result, UploadOutcome):
                outcomes[index] = result
            else:
                checked.append((index, item, result))
        new, others = _new_to_the_knowledge_base(checked)
        for (index, _, _), outcome in zip(
            new,
            _store_new_documents(new, groups=groups, is_public=is_public, user=user),
            strict=True,
        ):
            outcomes[index] = outcome
        for index, item, file in others:
            outcomes[index] = _upload_checked(
                item,
                file,
                groups=groups,
                is_public=is_public,
                user=user,
                manager=manager,
            )
    return [outcome for outcome in outcomes if outcome is not None]


_Checked = tuple[int, UploadItem, _CheckedFile]


def _new_to_the_knowledge_base(checked: list[_Checked]) -> tuple[list[_Checked], list[_Checked]]:
    """The files whose bytes and source path no stored version, document or earlier file
    has; and the rest. Deleted documents count too: `document_upload` decides about them."""
    if not checked or not connections[DEFAULT_DB_ALIAS].features.can_return_rows_from_bulk_insert:
        return [], checked
    sources = [item.source_path or file.clean_name for _, item, file in checked]
    seen = set(
        DocumentVersion.objects.filter(
            sha256__in={file.sha256 for _, _, file in checked}
        ).values_list("sha256", flat=True)
    )
    seen.update(
        Document.objects.filter(source_path__in=set(sources)).values_list("source_path", flat=True)
    )
    new: list[_Checked] = []
    others: list[_Checked] = []
    for entry, source in zip(checked, sources, strict=True):
        keys = {entry[2].sha256, source}
        (others if keys & seen else new).append(entry)
        seen |= keys
    return new, others


def _store_new_documents(
    new: list[_Checked], *, groups: Sequence[Group], is_public: bool, user: User | None
) -> list[UploadOutcome]:
    """Each file as a new document's first version, all in one transaction."""
    if not new:
        return []
    uploader = user if user is not None and user.is_authenticated else None
    access = access_details(
        is_public=is_public, groups=((group.pk, group.name) for group in groups)
    )
    with transaction.atomic():
        documents = Document.objects.bulk_create(
            [
                Document(
                    title=document_title_from_name(file.clean_name),
                    source_path=item.source_path or file.clean_name,
                    is_public=is_public,
                    created_by=uploader,
                )
                for _, item, file in new
            ]
        )
        if groups:
            Document.groups.through.objects.bulk_create(
                [
                    Document.groups.through(document_id=document.pk, group_id=group.pk)
                    for document in documents
                    for group in groups
                ]
            )
        versions = []
        for document, (_, item, file) in zip(documents, new, strict=True):
            version = DocumentVersion(
                document=document,
                number=1,
                sha256=file.sha256,
                original_name=file.clean_name,
                size_bytes=file.size,
                uploaded_by=uploader,
            )
            suffix = Path(file.clean_name).suffix.lower()
            version.file.save(f"{file.sha256[:2]}/{file.sha256}{suffix}", item.file, save=False)
            versions.append(version)
        DocumentVersion.objects.bulk_create(versions)
        event = AuditEvent.DOCUMENT_UPLOADED
        ledger_append_many(
            [
                LedgerEntry(
                    event=event,
                    actor=user or current_actor(),
                    details=document_act_details(event, document, version=version, access=access),
                )
                for document, version in zip(documents, versions, strict=True)
            ]
        )
        version_ids = [version.pk for version in versions]
        transaction.on_commit(lambda: ingestion_dispatch(version_ids))
    return [
        UploadOutcome(name=item.name, version=version, created=True)
        for (_, item, _), version in zip(new, versions, strict=True)
    ]


def _within(
    scope: QuerySet[Document], rows: list[_Row], document_id: Callable[[_Row], int]
) -> list[_Row]:
    """The rows whose document is in `scope`, in their order."""
    ids = {document_id(row) for row in rows}
    if not ids:
        return []
    allowed = set(scope.filter(id__in=ids).values_list("id", flat=True))
    return [row for row in rows if document_id(row) in allowed]


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


def _stored_file_name(
    suffix: str, same_bytes: Iterable[DocumentVersion], *, storage: Storage
) -> str:
    """A stored file of `same_bytes` (the versions with these bytes, their documents loaded),
    kept by a live document, to share rather than copy.

    Only live documents' files: a purge removes a file once no version names it, and purges
    only documents deleted long ago.
    """
    for version in same_bytes:
        name = version.file.name
        if (
            version.document.deleted_at is None
            and name
            and name.endswith(suffix)
            and storage.exists(name)
        ):
            return str(name)
    return ""


def document_upload_bytes(*, name: str, data: bytes, **kwargs: object) -> UploadOutcome:
    return document_upload(name=name, file=ContentFile(data, name=name), **kwargs)  # type: ignore[arg-type]


class StoreRefused(Exception):
    """A synced item cannot become a document version (its name or size); the reason."""


def document_sync_store(
    *,
    document: Document | None,
    name: str,
    data: bytes,
    source_path: str,
    groups: Sequence[Group],
    is_public: bool,
    actor: User | None,
    origin: Mapping[str, Any],
) -> DocumentVersion:
    """A synced item's content as a new document, or as the next version of its `document`.

    Unlike an upload, the item is never joined to another document with the same bytes: a
    source's items and their documents stay one to one, so deleting one never takes another's
    document. The stored file is shared when the bytes are already stored. The version is
    queued once the caller's transaction commits; the ledger record names the source.
    """
    try:
        clean_name = safe_filename(name)
    except ParseError as error:
        raise StoreRefused(str(error)) from error
    refusal = upload_size_refusal(len(data))
    if refusal:
        raise StoreRefused(refusal)
    sha256 = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        if document is None:
            document = Document.objects.create(
                title=document_title_from_name(clean_name),
                source_path=source_path[:1024],
                is_public=is_public,
                created_by=actor,
            )
            document.groups.set(groups)
            number = 1
        else:
            document = Document.objects.select_for_update().get(pk=document.pk)
            number = (
                document.versions.order_by("-number").values_list("number", flat=True).first() or 0
            ) + 1
            if document.source_path != source_path[:1024]:
                document.source_path = source_path[:1024]
                document.save(update_fields=["source_path", "updated_at"])
        version = DocumentVersion(
            document=document,
            number=number,
            sha256=sha256,
            original_name=clean_name,
            size_bytes=len(data),
            uploaded_by=actor,
        )
        suffix = Path(clean_name).suffix.lower()
        same_bytes = DocumentVersion.objects.filter(sha256=sha256).select_related("document")
        stored = _stored_file_name(suffix, same_bytes, storage=version.file.storage)
        if stored:
            version.file.name = stored
        else:
            version.file.save(
                f"{sha256[:2]}/{sha256}{suffix}", ContentFile(data, name=clean_name), save=False
            )
        version.save()
        version_queue(version)
        event = AuditEvent.DOCUMENT_UPLOADED if number == 1 else AuditEvent.DOCUMENT_VERSION_ADDED
        details = document_act_details(event, document, version=version, origin=origin)
        ledger_append(event=event, actor=actor or current_actor(), details=details)
    return version


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


def document_set_access(
    *,
    document: Document,
    groups: Iterable[Group],
    is_public: bool,
    actor: User | None = None,
    origin: Mapping[str, Any] | None = None,
) -> None:
    """Who may read a document changes in the index at once, for every version's passages.

    A mail message's attachments are read by the message's readers, so they change with it.
    """
    groups = list(groups)
    changed: list[tuple[int, list[str]]] = []
    with transaction.atomic():
        for each in [document, *_attached_documents(document)]:
            access_before = document_access(each)
            each.groups.set(groups)
            each.is_public = is_public
            each.save(update_fields=["is_public", "updated_at"])
            changed.append((each.id, document_access_tags(each)))
            event = AuditEvent.DOCUMENT_ACCESS_CHANGED
            details = document_act_details(event, each, access_before=access_before, origin=origin)
            ledger_append(event=event, actor=actor or current_actor(), details=details)
    for document_id, tags in changed:
        vector_index().set_payload(values={"groups": tags}, document_id=document_id)


def _attached_documents(document: Document) -> list[Document]:
    """The live documents attached to `document`, and those attached to them, and so on."""
    found: list[Document] = []
    parents = [document.id]
    seen = {document.id}
    while parents:
        children = list(
            Document.objects.filter(attached_to_id__in=parents, deleted_at__isnull=True).exclude(
                id__in=seen
            )
        )
        found.extend(children)
        seen.update(child.id for child in children)
        parents = [child.id for child in children]
    return found


def document_set_review(*, document: Document, owner: User | None, review_by: date | None) -> None:
    """Who answers for a document and when it should be read again (ingestion/review.py).

    A change is an administrative act on the document, so the ledger records it; setting
    what is already there records nothing.
    """
    review_before = document_review(document)
    document.owner = owner
    document.review_by = review_by
    if document_review(document) == review_before:
        return
    with transaction.atomic():
        document.save(update_fields=["owner", "review_by", "updated_at"])
        event = AuditEvent.DOCUMENT_REVIEW_CHANGED
        details = document_act_details(event, document, review_before=review_before)
        ledger_append(event=event, actor=current_actor(), details=details)


def document_delete(
    *,
    document: Document,
    actor: User | None = None,
    origin: Mapping[str, Any] | None = None,
) -> None:
    """Take a document out of search, with a mail message's attachments; rows stay on record."""
    deleted = [document, *_attached_documents(document)]
    with transaction.atomic():
        for each in deleted:
            each.deleted_at = timezone.now()
            each.save(update_fields=["deleted_at", "updated_at"])
            each.versions.filter(status__in=UNFINISHED_STATUSES).update(
                status=VersionStatus.CANCELLED, status_message="The document was deleted."
            )
            event = AuditEvent.DOCUMENT_DELETED
            details = document_act_details(event, each, origin=origin)
            ledger_append(event=event, actor=actor or current_actor(), details=details)
    for each in deleted:
        vector_index().delete(document_id=each.id)


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
