"""Purging deleted documents past the retention, on the real services, files and ledger."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from audit.ledger import ledger_append
from audit.models import AuditEvent, AuditRecord
from audit.verify import ledger_verify
from ingestion.models import Chunk, Document, DocumentVersion
from ingestion.runner import run_pending_once
from ingestion.services import document_delete, document_upload_bytes, documents_purge

pytestmark = pytest.mark.django_db

RETENTION = timedelta(days=365)
CaptureOnCommit = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


@dataclass(frozen=True)
class DeletedDocuments:
    old: Document
    cited: Document
    held: Document
    recent: Document
    citing_record: AuditRecord


def upload(name: str, text: str) -> Document:
    outcome = document_upload_bytes(name=name, data=text.encode(), is_public=True)
    assert outcome.version is not None
    return outcome.version.document


def stored_files(document: Document) -> list[Path]:
    names = document.versions.values_list("file", flat=True)
    return [Path(settings.MEDIA_ROOT) / name for name in names]


def cite(document: Document) -> AuditRecord:
    chunk = Chunk.objects.filter(version__document=document).first()
    assert chunk is not None
    passage = {
        "n": 1,
        "point_id": str(chunk.point_id),
        "document_id": document.pk,
        "version_id": chunk.version_id,
        "score": 0.8,
        "text": chunk.text,
    }
    details = {"question": "Where do visitors park?", "passages": [passage], "citations": [1]}
    with transaction.atomic():
        return ledger_append(
            event=AuditEvent.ANSWER, actor=User.objects.create_user("erin"), details=details
        )


@pytest.fixture
def deleted() -> DeletedDocuments:
    old = upload("parking.md", "# Parking\n\nVisitors park on level minus two.\n")
    cited = upload("canteen.md", "# Canteen\n\nThe canteen opens at half past eleven.\n")
    held = upload("contract.md", "# Contract\n\nThe lease runs until the end of 2031.\n")
    recent = upload("badges.md", "# Badges\n\nLost badges are replaced at the front desk.\n")
    run_pending_once()
    citing_record = cite(cited)
    held.legal_hold = True
    held.save(update_fields=["legal_hold"])
    for document in (old, cited, held, recent):
        document_delete(document=document)
    long_ago = timezone.now() - RETENTION - timedelta(days=30)
    Document.objects.filter(pk__in=[old.pk, cited.pk, held.pk]).update(deleted_at=long_ago)
    return DeletedDocuments(old, cited, held, recent, citing_record)


def test_an_old_uncited_deleted_document_is_purged_with_its_files_and_passages(
    deleted: DeletedDocuments, django_capture_on_commit_callbacks: CaptureOnCommit
) -> None:
    files = stored_files(deleted.old)
    assert files
    assert all(path.exists() for path in files)
    assert Chunk.objects.filter(version__document=deleted.old).exists()

    with django_capture_on_commit_callbacks(execute=True):
        report = documents_purge(older_than=RETENTION, dry_run=False)

    assert [outcome.document_id for outcome in report.purged] == [deleted.old.pk]
    assert not Document.objects.filter(pk=deleted.old.pk).exists()
    assert not DocumentVersion.objects.filter(document_id=deleted.old.pk).exists()
    assert not Chunk.objects.filter(version__document_id=deleted.old.pk).exists()
    assert not any(path.exists() for path in files)
    sequence = report.purged[0].record_sequence
    assert sequence is not None
    record = AuditRecord.objects.get(sequence=sequence)
    assert record.event == "document.purged"
    assert json.loads(record.details)["document_id"] == deleted.old.pk
    assert record.summary.startswith("Purged “Parking”")
    assert ledger_verify().intact


def test_cited_held_and_recent_documents_are_kept_and_the_reason_is_said(
    deleted: DeletedDocuments, django_capture_on_commit_callbacks: CaptureOnCommit
) -> None:
    kept = [deleted.cited, deleted.held, deleted.recent]
    files = [path for document in kept for path in stored_files(document)]
    output = io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("documents_purge", "--older-than", "365", stdout=output)

    printed = output.getvalue()
    assert f"kept: cited by audit record {deleted.citing_record.sequence}" in printed
    assert f"kept: legal hold: document {deleted.held.pk}" in printed
    assert "1 purged, 2 kept, 1 deleted within the last 365 days left alone." in printed
    assert Document.objects.filter(pk__in=[document.pk for document in kept]).count() == 3
    assert Chunk.objects.filter(version__document=deleted.cited).exists()
    assert all(path.exists() for path in files)


def test_a_dry_run_changes_nothing(
    deleted: DeletedDocuments, django_capture_on_commit_callbacks: CaptureOnCommit
) -> None:
    files = stored_files(deleted.old)
    records_before = AuditRecord.objects.count()
    output = io.StringIO()

    with django_capture_on_commit_callbacks(execute=True):
        call_command("documents_purge", "--dry-run", stdout=output)

    assert f"would purge: document {deleted.old.pk}" in output.getvalue()
    assert "dry run: nothing changed" in output.getvalue()
    assert Document.objects.filter(pk=deleted.old.pk).exists()
    assert Chunk.objects.filter(version__document=deleted.old).exists()
    assert all(path.exists() for path in files)
    assert AuditRecord.objects.count() == records_before
