"""What the ledger records of documents, and the documents it keeps from being purged."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db.models import signals
from django.db.models.deletion import ProtectedError

from audit.models import AuditEvent, AuditReference, AuditReferenceKind
from ingestion.models import Document, DocumentVersion


def access_details(*, is_public: bool, groups: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """Who may read a document as the ledger records it; `groups` are (id, name) pairs."""
    return {
        "is_public": is_public,
        "groups": [{"id": group_id, "name": name} for group_id, name in sorted(set(groups))],
    }


def document_access(document: Document) -> dict[str, Any]:
    """Who may read a document, as stored now."""
    stored = Document.objects.filter(pk=document.pk).values_list("is_public", flat=True)
    return access_details(is_public=stored.get(), groups=document.groups.values_list("id", "name"))


_DOCUMENT_SUMMARIES = {
    AuditEvent.DOCUMENT_UPLOADED: "Uploaded {title}",
    AuditEvent.DOCUMENT_VERSION_ADDED: "New version {number} of {title}",
    AuditEvent.DOCUMENT_ACCESS_CHANGED: "Changed who may read {title}",
    AuditEvent.DOCUMENT_REVIEW_CHANGED: "Changed the owner or review date of {title}",
    AuditEvent.DOCUMENT_DELETED: "Deleted {title}",
}


def document_review(document: Document) -> dict[str, Any]:
    """Who answers for a document and when it should be read again, as stored now."""
    owner = document.owner
    return {
        "owner": {"id": owner.pk, "username": owner.get_username()} if owner else None,
        "review_by": document.review_by.isoformat() if document.review_by else None,
    }


def document_act_details(
    event: AuditEvent,
    document: Document,
    *,
    version: DocumentVersion | None = None,
    access_before: dict[str, Any] | None = None,
    origin: Mapping[str, Any] | None = None,
    review_before: dict[str, Any] | None = None,
    access: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The details of an administrative act on a document; `origin` names the source whose
    sync did it (sources/sync.py). `access` is `document_access(document)` when the caller
    has just written it, which spares reading it back."""
    details: dict[str, Any] = {
        "document_id": document.pk,
        "title": document.title,
        "source_path": document.source_path,
        **(access if access is not None else document_access(document)),
        "summary": _DOCUMENT_SUMMARIES[event].format(
            title=f"“{document.title}”", number=version.number if version else ""
        ),
    }
    if version is not None:
        details["version"] = {
            "id": version.pk,
            "number": version.number,
            "sha256": version.sha256,
            "original_name": version.original_name,
            "size_bytes": version.size_bytes,
        }
    if access_before is not None:
        details["before"] = access_before
    if origin is not None:
        details["source"] = dict(origin)
        details["summary"] += f" (source “{origin.get('name', '')}”)"
    if review_before is not None:
        details["review"] = document_review(document)
        details["review_before"] = review_before
    return details


def _refuse_deleting_documents_on_record(
    sender: type[Document | DocumentVersion], instance: Document | DocumentVersion, **kwargs: Any
) -> None:
    """Soft deletion is the way out of search; a hard delete must not take evidence with it."""
    document_id = instance.pk if isinstance(instance, Document) else instance.document_id
    reason = document_kept_reason(document_id)
    if reason:
        raise ProtectedError(
            f"Document {document_id} is kept ({reason}); it can be deleted (out of search) "
            "but not purged.",
            {instance},
        )


def document_kept_reason(document_id: int) -> str:
    """Why a document may not be hard-deleted, or "" when nothing keeps it.

    A legal hold keeps it whatever the ledger says; otherwise the first record citing it does.
    """
    if Document.objects.filter(pk=document_id, legal_hold=True).exists():
        return "legal hold"
    citing = (
        AuditReference.objects.filter(kind=AuditReferenceKind.DOCUMENT_CITED, target_id=document_id)
        .order_by("record_id")
        .values_list("record_id", flat=True)
        .first()
    )
    return "" if citing is None else f"cited by audit record {citing}"


def connect_signals() -> None:
    for model in (Document, DocumentVersion):
        signals.pre_delete.connect(
            _refuse_deleting_documents_on_record,
            sender=model,
            dispatch_uid=f"audit-keep-{model.__name__}",
        )
