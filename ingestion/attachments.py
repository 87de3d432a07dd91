"""Files attached to a mail message become documents of their own, linked to the message.

Each attachment is read by the message's readers, is parsed like any upload (in the
sandbox, failing alone) and is cited as itself. Its source path is the message's followed
by the attachment's name, so a later version of the message adds versions to its attachments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import PurePath

from django.core.files.base import ContentFile

from audit.ledger import ledger_append
from audit.models import AuditEvent
from ingestion.ledger_details import document_act_details
from ingestion.models import Document, DocumentVersion, VersionStatus
from ingestion.parsing import Attachment
from ingestion.titles import document_title_from_name

# A message attached to a message attached to ... ends somewhere: deeper attachments are left
# out rather than unpacked without end.
MAX_ATTACHMENT_DEPTH = 5


def attachments_store(
    message: DocumentVersion, attachments: Sequence[Attachment]
) -> list[DocumentVersion]:
    """Store each attachment as a queued version of a document attached to the message's.

    Call inside the transaction that records the message's parse. An attachment whose bytes
    its document already holds is not stored again (a retried message adds nothing).
    """
    document = message.document
    if not attachments or _depth(document) >= MAX_ATTACHMENT_DEPTH:
        return []
    groups = list(document.groups.all())
    stored: list[DocumentVersion] = []
    for name, attachment in zip(_distinct_names(attachments), attachments, strict=True):
        sha256 = hashlib.sha256(attachment.data).hexdigest()
        source = f"{document.source_path}/{name}"
        attached = (
            Document.objects.select_for_update()
            .filter(attached_to=document, source_path=source, deleted_at__isnull=True)
            .first()
        )
        if attached is not None and attached.versions.filter(sha256=sha256).exists():
            continue
        if attached is None:
            attached = Document.objects.create(
                title=document_title_from_name(name),
                source_path=source,
                is_public=document.is_public,
                created_by=message.uploaded_by,
                attached_to=document,
            )
            attached.groups.set(groups)
            number = 1
        else:
            latest = attached.versions.order_by("-number").values_list("number", flat=True)
            number = (latest.first() or 0) + 1
        version = DocumentVersion(
            document=attached,
            number=number,
            sha256=sha256,
            original_name=name,
            size_bytes=len(attachment.data),
            uploaded_by=message.uploaded_by,
            status=VersionStatus.QUEUED,
        )
        stored_name = f"{sha256[:2]}/{sha256}{PurePath(name).suffix.lower()}"
        if version.file.storage.exists(stored_name):
            version.file.name = stored_name
        else:
            version.file.save(stored_name, ContentFile(attachment.data), save=False)
        version.save()
        event = AuditEvent.DOCUMENT_UPLOADED if number == 1 else AuditEvent.DOCUMENT_VERSION_ADDED
        ledger_append(
            event=event,
            actor=message.uploaded_by,
            details=document_act_details(event, attached, version=version),
        )
        stored.append(version)
    return stored


def _distinct_names(attachments: Sequence[Attachment]) -> list[str]:
    """Two attachments of one message may share a name; each needs its own source path."""
    seen: dict[str, int] = {}
    names: list[str] = []
    for attachment in attachments:
        count = seen.get(attachment.name.casefold(), 0) + 1
        seen[attachment.name.casefold()] = count
        path = PurePath(attachment.name)
        names.append(attachment.name if count == 1 else f"{path.stem} ({count}){path.suffix}")
    return names


def _depth(document: Document) -> int:
    depth = 0
    parent_id = document.attached_to_id
    while parent_id is not None and depth < MAX_ATTACHMENT_DEPTH:
        depth += 1
        parent_id = (
            Document.objects.filter(id=parent_id).values_list("attached_to_id", flat=True).first()
        )
    return depth
