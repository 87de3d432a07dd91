"""What a person watching a long document being ingested sees move."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from ingestion.models import DocumentVersion, VersionStatus
from ingestion.pipeline import versions_ingest
from ingestion.services import document_upload_bytes

SECTIONS = 30


def long_handbook() -> bytes:
    sections = [
        f"## Rule {number}\n\n"
        + " ".join(f"Employees follow rule {number} step {step} carefully." for step in range(12))
        for number in range(SECTIONS)
    ]
    return ("# Handbook\n\n" + "\n\n".join(sections)).encode()


@pytest.mark.django_db(transaction=True)
def test_progress_moves_batch_by_batch_while_a_long_document_is_embedded(
    settings: object,
) -> None:
    settings.INGEST_EMBED_BATCH = 4  # type: ignore[attr-defined]
    upload = document_upload_bytes(name="handbook.md", data=long_handbook(), is_public=True)
    assert upload.version is not None
    version_id = upload.version.id
    seen: set[tuple[str, int, int]] = set()
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            versions_ingest([version_id])
        except BaseException as error:  # reported by the test thread
            errors.append(error)
        finally:
            connection.close()

    worker = threading.Thread(target=ingest)
    worker.start()
    while worker.is_alive():
        row = DocumentVersion.objects.values_list("status", "chunks_done", "chunks_total").get(
            id=version_id
        )
        seen.add(row)
        time.sleep(0.02)
    worker.join()

    assert not errors
    final = DocumentVersion.objects.get(id=version_id)
    assert final.status == VersionStatus.READY
    assert final.chunks_total > 3 * 4
    partial = {done for status, done, total in seen if status == "EMBEDDING" and 0 < done < total}
    # Several distinct steps between none and all: the page's bar moves as batches land.
    assert len(partial) >= 2, seen
    assert all(done % 4 == 0 for done in partial)
