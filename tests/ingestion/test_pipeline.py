"""What a person watching a long document being ingested sees move."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from django.db import connection

from assistant.retrieval import passages_for_user
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


def handbook_uploaded(settings: object) -> int:
    """The long handbook stored and queued, embedded 4 passages a batch; its version id."""
    settings.INGEST_EMBED_BATCH = 4  # type: ignore[attr-defined]
    upload = document_upload_bytes(name="handbook.md", data=long_handbook(), is_public=True)
    assert upload.version is not None
    return upload.version.id


@dataclass(frozen=True)
class Ingesting:
    """`versions_ingest` running in a thread of its own, as the runner runs it."""

    thread: threading.Thread
    outcome: dict[int, str]
    errors: list[BaseException]


def ingest_in_background(version_id: int, *, join_queued: bool = False) -> Ingesting:
    outcome: dict[int, str] = {}
    errors: list[BaseException] = []

    def ingest() -> None:
        try:
            outcome.update(versions_ingest([version_id], join_queued=join_queued))
        except BaseException as error:  # reported by the test thread
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=ingest)
    thread.start()
    return Ingesting(thread, outcome, errors)


@pytest.mark.django_db(transaction=True)
def test_progress_moves_batch_by_batch_while_a_long_document_is_embedded(
    settings: object,
) -> None:
    version_id = handbook_uploaded(settings)
    seen: set[tuple[str, int, int]] = set()
    ingesting = ingest_in_background(version_id)
    while ingesting.thread.is_alive():
        row = DocumentVersion.objects.values_list("status", "chunks_done", "chunks_total").get(
            id=version_id
        )
        seen.add(row)
        time.sleep(0.02)
    ingesting.thread.join()

    assert not ingesting.errors
    final = DocumentVersion.objects.get(id=version_id)
    assert final.status == VersionStatus.READY
    assert final.chunks_total > 3 * 4
    partial = {done for status, done, total in seen if status == "EMBEDDING" and 0 < done < total}
    # Several distinct steps between none and all: the page's bar moves as batches land.
    assert len(partial) >= 2, seen
    assert all(done % 4 == 0 for done in partial)


@pytest.mark.django_db(transaction=True)
def test_files_queued_while_the_runner_ingests_join_its_run_and_become_ready(
    settings: object,
) -> None:
    first_id = handbook_uploaded(settings)
    ingesting = ingest_in_background(first_id, join_queued=True)
    while DocumentVersion.objects.get(id=first_id).status != VersionStatus.EMBEDDING:
        time.sleep(0.01)
    later = [
        document_upload_bytes(
            name=f"note{number}.md",
            data=f"# Note {number}\n\nThe canteen opens at {number + 7} o'clock.\n".encode(),
            is_public=True,
        ).version
        for number in range(2)
    ]
    ingesting.thread.join()

    assert not ingesting.errors
    ids = [first_id, *(version.id for version in later if version is not None)]
    # One run took all three: the files uploaded meanwhile did not wait for another.
    assert ingesting.outcome == dict.fromkeys(ids, "READY")
    assert set(DocumentVersion.objects.values_list("status", flat=True)) == {"READY"}


@pytest.mark.django_db
def test_two_versions_finished_in_one_batch_leave_only_the_newer_searchable() -> None:
    # A second version uploaded while the first still waits: one run embeds both together.
    first = document_upload_bytes(
        name="parking.md",
        data=b"# Parking\n\nStaff park in the north garage on level minus two.\n",
        source_path="facilities/parking.md",
        is_public=True,
    )
    second = document_upload_bytes(
        name="parking.md",
        data=b"# Parking\n\nStaff park in the riverside car park behind the canteen.\n",
        source_path="facilities/parking.md",
        is_public=True,
    )
    assert first.version is not None
    assert second.version is not None
    document = second.version.document
    assert first.version.document_id == document.id

    outcome = versions_ingest([first.version.id, second.version.id])

    assert outcome == {first.version.id: "READY", second.version.id: "READY"}
    document.refresh_from_db()
    assert document.current_version_id == second.version.id
    reader = User.objects.create_user("reader")
    texts = [p.text for p in passages_for_user(user=reader, query="where do staff park", k=10)]
    assert any("riverside car park" in text for text in texts), texts
    assert not any("north garage" in text for text in texts), texts
