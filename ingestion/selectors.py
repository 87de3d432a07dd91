"""Reads for the document pages, the REST API and the Django admin."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.paginator import Page, Paginator
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.shortcuts import get_object_or_404

from ingestion.access import documents_seen_by, manageable_documents
from ingestion.models import Chunk, Document, DocumentVersion, VersionStatus
from ingestion.review import REVIEW_FILTER_OVERDUE, documents_overdue, review_today

DOCUMENTS_PER_PAGE = 25
CHUNKS_PER_PAGE = 50
# A status poll names the versions it watches; more than this is not a page's worth.
MAX_STATUS_IDS = 500
# Overdue documents listed above the documents page's list; the filter shows them all.
OVERDUE_SHOWN = 10


@dataclass(frozen=True)
class DocumentRow:
    """A document as the list shows it: the state of its newest upload and its passages."""

    document: Document
    latest_version: DocumentVersion | None
    chunk_count: int


@dataclass(frozen=True)
class DocumentListPage:
    rows: list[DocumentRow]
    page: Page[Document]


@dataclass(frozen=True)
class ChunkListPage:
    """The passages of one version of a document, a page at a time."""

    version: DocumentVersion | None
    page: Page[Chunk] | None


def documents_annotate_status(documents: QuerySet[Document]) -> QuerySet[Document]:
    """Add the newest version's id and status, and how many passages search serves."""
    newest = DocumentVersion.objects.filter(document=OuterRef("pk")).order_by("-number")
    served_chunks = (
        Chunk.objects.filter(version_id=OuterRef("current_version_id"))
        .order_by()
        .values("version_id")
        .annotate(count=Count("id"))
        .values("count")
    )
    return documents.select_related("owner").annotate(
        latest_version_id=Subquery(newest.values("id")[:1]),
        latest_status=Subquery(newest.values("status")[:1]),
        chunk_count=Coalesce(Subquery(served_chunks, output_field=IntegerField()), 0),
    )


def _as_listed(documents: QuerySet[Document]) -> QuerySet[Document]:
    """Newest change first, with their status (see above) and groups."""
    return (
        documents_annotate_status(documents)
        .prefetch_related("groups")
        .order_by("-updated_at", "-id")
    )


def documents_managed_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Document]:
    return _as_listed(manageable_documents(user))


def documents_search(
    documents: QuerySet[Document], *, query: str = "", status: str = "", review: str = ""
) -> QuerySet[Document]:
    """Narrow documents by words in their title or source path, by their newest status, and
    to those overdue for review (`review="overdue"`)."""
    # PostgreSQL refuses NUL in any text parameter, and no stored title or path holds one.
    query = query.replace("\x00", "").strip()
    if query:
        documents = documents.filter(Q(title__icontains=query) | Q(source_path__icontains=query))
    if status in VersionStatus.values:
        documents = documents.filter(Q(latest_status=status))
    if review == REVIEW_FILTER_OVERDUE:
        documents = documents.filter(deleted_at__isnull=True, review_by__lt=review_today())
    return documents


def documents_for_admin(
    user: AbstractBaseUser | AnonymousUser,
    *,
    query: str = "",
    status: str = "",
    review: str = "",
    page: int | str = 1,
) -> DocumentListPage:
    """The documents the user manages, a page at a time."""
    documents = documents_search(
        documents_managed_by(user), query=query, status=status, review=review
    )
    documents_page = Paginator(documents, DOCUMENTS_PER_PAGE).get_page(page)
    latest_ids = [document.latest_version_id for document in documents_page]  # type: ignore[attr-defined]
    latest_by_id = DocumentVersion.objects.in_bulk([vid for vid in latest_ids if vid is not None])
    rows = [
        DocumentRow(
            document=document,
            latest_version=latest_by_id.get(document.latest_version_id),  # type: ignore[attr-defined]
            chunk_count=document.chunk_count,  # type: ignore[attr-defined]
        )
        for document in documents_page
    ]
    return DocumentListPage(rows=rows, page=documents_page)


def documents_overdue_for_admin(
    user: AbstractBaseUser | AnonymousUser, *, limit: int = OVERDUE_SHOWN
) -> tuple[list[Document], int]:
    """The documents the user manages whose review date has passed (the first `limit`), and
    how many there are."""
    overdue = documents_overdue(manageable_documents(user)).select_related("owner")
    return list(overdue[:limit]), overdue.count()


def documents_readable_by(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Document]:
    return _as_listed(documents_seen_by(user))


def document_managed_by(user: AbstractBaseUser | AnonymousUser, *, document_id: int) -> Document:
    """A document the user manages; 404 otherwise, as if it did not exist."""
    return get_object_or_404(
        manageable_documents(user).prefetch_related("groups"),
        id=document_id,
    )


def document_mail_links(
    user: AbstractBaseUser | AnonymousUser, *, document: Document
) -> tuple[Document | None, list[Document]]:
    """The message a document is attached to and the documents attached to it, as the user
    manages them (attachments share the message's readers, but readers may change apart)."""
    managed = manageable_documents(user)
    message = (
        managed.filter(id=document.attached_to_id).first()
        if document.attached_to_id is not None
        else None
    )
    attachments = list(managed.filter(attached_to=document).order_by("source_path"))
    return message, attachments


def document_versions(document: Document) -> list[DocumentVersion]:
    """Every version, newest first, with the uploader and how many passages each holds."""
    return list(
        document.versions.select_related("uploaded_by")
        .annotate(chunk_count=Count("chunks"))
        .order_by("-number")
    )


def document_chunks(
    *, document: Document, version_id: int | None = None, page: int | str = 1
) -> ChunkListPage:
    """The passages of the asked version, else of the one search serves, else of the newest."""
    version: DocumentVersion | None
    if version_id is not None:
        version = get_object_or_404(DocumentVersion, id=version_id, document=document)
    else:
        version = document.current_version or document.latest_version()
    if version is None:
        return ChunkListPage(version=None, page=None)
    chunks = Chunk.objects.filter(version=version).order_by("index")
    return ChunkListPage(version=version, page=Paginator(chunks, CHUNKS_PER_PAGE).get_page(page))


def versions_managed_by(
    user: AbstractBaseUser | AnonymousUser, *, ids: Iterable[int]
) -> list[DocumentVersion]:
    """Versions of documents the user manages; unknown, deleted and others' are left out."""
    wanted = list(dict.fromkeys(ids))[:MAX_STATUS_IDS]
    return list(
        DocumentVersion.objects.filter(
            id__in=wanted, document__in=manageable_documents(user).values("id")
        ).order_by("id")
    )


def version_managed_by(
    user: AbstractBaseUser | AnonymousUser, *, version_id: int
) -> DocumentVersion:
    """A version of a document the user manages; 404 otherwise, as if it did not exist."""
    return get_object_or_404(
        DocumentVersion.objects.select_related("document", "uploaded_by"),
        id=version_id,
        document__in=manageable_documents(user).values("id"),
    )


def version_readable_by(
    user: AbstractBaseUser | AnonymousUser, *, version_id: int
) -> DocumentVersion:
    """A version whose document the user may read; 404 otherwise, as if it did not exist."""
    return get_object_or_404(
        DocumentVersion.objects.select_related("document", "uploaded_by"),
        id=version_id,
        document__in=documents_seen_by(user).values("id"),
    )
