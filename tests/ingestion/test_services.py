"""The ingestion services end to end: real parsing, the real model, the real embedded index."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.base import ContentFile
from django.test import override_settings
from pypdf import PdfWriter

from assistant.retrieval import passages_for_user
from audit.models import AuditEvent, AuditRecord
from audit.verify import ledger_verify
from ingestion.models import Chunk, Document, DocumentVersion, VersionStatus
from ingestion.runner import run_pending_once
from ingestion.services import (
    UploadItem,
    document_delete,
    document_set_access,
    document_upload_bytes,
    documents_upload,
    version_cancel,
    version_retry,
)
from ingestion.vector_index.configured import vector_index

pytestmark = pytest.mark.django_db

GOOD = b"# Parking\n\nVisitors park on level minus two of the north garage.\n"
# A PDF by its content that no parser can read: it is stored, and fails.
BROKEN_PDF = b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog"


def word_document() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


WORD_DOCUMENT = word_document()


def blank_pdf() -> bytes:
    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def encrypted_pdf(shared_data: Path) -> bytes:
    writer = PdfWriter(clone_from=shared_data / "samples" / "pdf" / "fhs-3.0.pdf")
    writer.encrypt(user_password="secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(600):
                member.write(block)
    return out.getvalue()


@pytest.fixture
def reader() -> User:
    user = User.objects.create_user("reader")
    user.groups.add(Group.objects.create(name="staff-all"))
    return user


def test_each_bad_file_fails_alone_with_its_reason(shared_data: Path, reader: User) -> None:
    bad_files = {
        "broken.pdf": (b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog", "PDF"),
        "locked.pdf": (encrypted_pdf(shared_data), "encrypted"),
        "scan.pdf": (blank_pdf(), "no extractable text"),
        "bomb.docx": (docx_bomb(), "zip bomb"),
    }
    outcomes = {
        name: document_upload_bytes(name=name, data=data, is_public=True)
        for name, (data, _) in bad_files.items()
    }
    good = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)
    latin1 = document_upload_bytes(
        name="kantine.txt",
        data="Die Kantine öffnet um 11:30 Uhr; Grüße an alle Mitarbeiter.".encode("latin-1"),
        is_public=True,
    )
    run_pending_once()

    for name, (_, reason) in bad_files.items():
        version = DocumentVersion.objects.get(id=outcomes[name].version.id)  # type: ignore[union-attr]
        assert version.status == VersionStatus.FAILED, name
        assert reason.lower() in version.status_message.lower(), (name, version.status_message)
    assert DocumentVersion.objects.get(id=good.version.id).status == VersionStatus.READY  # type: ignore[union-attr]
    kantine = DocumentVersion.objects.get(id=latin1.version.id)  # type: ignore[union-attr]
    assert kantine.status == VersionStatus.READY
    assert "öffnet" in kantine.chunks.get().text
    hits = passages_for_user(user=reader, query="where do visitors park")
    assert hits[0].source == "parking.md"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.txt", b"", "The file is empty. Not stored."),
        (
            "report.pdf",
            b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,
            "The file's content is not a PDF (it looks like a PNG image). Not stored.",
        ),
        (
            "budget.xlsx",
            WORD_DOCUMENT,
            "The file's content is not an Excel workbook (XLSX) (it looks like a Word document "
            "(DOCX)). Not stored.",
        ),
    ],
)
def test_a_file_whose_content_does_not_match_its_type_is_refused_before_storage(
    name: str, data: bytes, reason: str
) -> None:
    outcome = document_upload_bytes(name=name, data=data, is_public=True)

    assert (outcome.version, outcome.created, outcome.error) == (None, False, reason)
    assert not DocumentVersion.objects.exists()


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.txt", "tab\there.txt", "nul\x00.txt"])
def test_a_bad_file_name_is_refused_before_storage(name: str) -> None:
    outcome = document_upload_bytes(name=name, data=GOOD, is_public=True)
    assert outcome.status == VersionStatus.FAILED
    assert outcome.error
    assert not DocumentVersion.objects.exists()


@override_settings(UPLOAD_MAX_BYTES=1000)
def test_an_oversize_file_is_refused_before_storage() -> None:
    outcome = document_upload_bytes(name="big.txt", data=b"word " * 400, is_public=True)
    assert outcome.status == VersionStatus.FAILED
    assert "larger than the upload limit" in outcome.error
    assert not DocumentVersion.objects.exists()


def test_the_same_bytes_twice_are_one_version() -> None:
    first = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)
    again = document_upload_bytes(name="parking-copy.md", data=GOOD, is_public=True)
    assert first.created
    assert not again.created
    assert again.version == first.version
    assert again.note == (
        "The same content is already stored as version 1 of “parking”; nothing new was stored."
    )
    assert Document.objects.count() == 1


HR_HANDBOOK = b"# Handbook\n\nSalary bands are reviewed every March by the HR committee.\n"


@pytest.fixture
def hr() -> Group:
    return Group.objects.create(name="HR")


@pytest.fixture
def finance() -> Group:
    return Group.objects.create(name="Finance")


@pytest.fixture
def finance_admin(finance: Group) -> User:
    """A document admin of Finance only: the documents of HR are none of their business."""
    admin = User.objects.create_user("fiona")
    admin.groups.add(Group.objects.create(name="Finance-admins"))
    return admin


@pytest.fixture
def superuser() -> User:
    return User.objects.create_user("root", is_superuser=True)


def test_a_name_held_by_a_document_the_uploader_does_not_manage_is_their_own_document(
    hr: Group, finance: Group, finance_admin: User
) -> None:
    hr_handbook = document_upload_bytes(name="handbook.md", data=HR_HANDBOOK, groups=[hr])

    outcome = document_upload_bytes(
        name="handbook.md",
        data=b"# Handbook\n\nFinance closes the books on the third working day.\n",
        groups=[finance],
        user=finance_admin,
        manager=finance_admin,
    )

    assert outcome.error == ""
    assert outcome.note == ""
    assert outcome.created
    assert outcome.version is not None
    own = outcome.version.document
    assert own != hr_handbook.version.document  # type: ignore[union-attr]
    assert (own.source_path, list(own.groups.all())) == ("handbook.md", [finance])
    assert hr_handbook.version.document.versions.count() == 1  # type: ignore[union-attr]


def test_the_bytes_of_a_document_the_uploader_does_not_manage_are_their_own_document(
    hr: Group, finance: Group, finance_admin: User, reader: User
) -> None:
    hr_handbook = document_upload_bytes(name="handbook.md", data=HR_HANDBOOK, groups=[hr])
    run_pending_once()

    outcome = document_upload_bytes(
        name="copy.md",
        data=HR_HANDBOOK,
        groups=[finance],
        user=finance_admin,
        manager=finance_admin,
    )

    assert (outcome.error, outcome.note, outcome.created) == ("", "", True)
    assert outcome.version is not None
    assert list(outcome.version.document.groups.all()) == [finance]
    # One stored file serves both documents.
    assert outcome.version.file.name == hr_handbook.version.file.name  # type: ignore[union-attr]
    run_pending_once()
    reader.groups.add(finance)
    hits = passages_for_user(user=reader, query="when are salary bands reviewed")
    assert [hit.source for hit in hits] == ["copy.md"]


def test_a_superuser_storing_the_same_bytes_for_other_readers_gets_a_new_document_and_is_told(
    hr: Group, finance: Group, superuser: User
) -> None:
    first = document_upload_bytes(
        name="handbook.md", data=HR_HANDBOOK, groups=[hr], user=superuser, manager=superuser
    )

    again = document_upload_bytes(
        name="handbook.md", data=HR_HANDBOOK, groups=[finance], user=superuser, manager=superuser
    )

    assert again.created
    assert again.version is not None
    assert again.version.document != first.version.document  # type: ignore[union-attr]
    assert list(again.version.document.groups.all()) == [finance]
    assert again.note == (
        "The same content is already stored as “handbook”, read by HR; this file is stored "
        "as a new document for the readers you chose."
    )
    assert list(first.version.document.groups.all()) == [hr]  # type: ignore[union-attr]


def test_a_name_kept_by_a_managed_document_for_other_readers_starts_a_new_document(
    hr: Group, finance: Group, superuser: User
) -> None:
    first = document_upload_bytes(
        name="handbook.md", data=HR_HANDBOOK, groups=[hr], user=superuser, manager=superuser
    )

    other = document_upload_bytes(
        name="handbook.md", data=GOOD, groups=[hr, finance], user=superuser, manager=superuser
    )

    assert other.created
    assert other.version is not None
    assert other.version.number == 1
    assert other.version.document != first.version.document  # type: ignore[union-attr]
    assert other.note == (
        "“handbook”, read by HR, has the same name; this file is stored as a new document "
        "for the readers you chose. To add a version to it instead, upload with its readers."
    )
    same_readers = document_upload_bytes(
        name="handbook.md", data=GOOD + b"More.\n", groups=[hr], user=superuser, manager=superuser
    )
    assert same_readers.version is not None
    assert same_readers.version.document == first.version.document  # type: ignore[union-attr]
    assert same_readers.version.number == 2


def test_the_bytes_of_a_failed_version_uploaded_again_queue_it_again(reader: User) -> None:
    first = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)
    assert first.version is not None
    # A worker that died mid-way: the file itself is fine.
    DocumentVersion.objects.filter(id=first.version.id).update(
        status=VersionStatus.FAILED, status_message="The worker stopped."
    )

    again = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)

    assert (again.error, again.created) == ("", False)
    assert again.version == first.version
    assert again.status == VersionStatus.QUEUED
    assert again.note == (
        "Version 1 of “parking” holds the same content and its ingestion had failed "
        "(The worker stopped.); it is queued again."
    )
    run_pending_once()
    assert DocumentVersion.objects.get(id=first.version.id).status == VersionStatus.READY
    assert passages_for_user(user=reader, query="where do visitors park")[0].source == "parking.md"


def test_the_bytes_of_a_cancelled_version_uploaded_again_queue_it_again() -> None:
    first = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)
    assert first.version is not None
    version_cancel(first.version)

    again = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)

    assert again.status == VersionStatus.QUEUED
    assert again.note == (
        "Version 1 of “parking” holds the same content and its ingestion had been cancelled; "
        "it is queued again."
    )


def test_a_file_that_fails_again_says_why_it_failed_before() -> None:
    first = document_upload_bytes(name="minutes.pdf", data=BROKEN_PDF, is_public=True)
    run_pending_once()

    again = document_upload_bytes(name="minutes.pdf", data=BROKEN_PDF, is_public=True)

    assert again.version == first.version
    assert again.status == VersionStatus.QUEUED
    assert "PDF" in again.note
    assert again.note.endswith("it is queued again.")


def test_a_new_version_replaces_the_old_only_once_indexed(reader: User) -> None:
    document_upload_bytes(name="parking.md", data=GOOD, is_public=True)
    run_pending_once()
    newer = document_upload_bytes(
        name="parking.md",
        data=b"# Parking\n\nVisitors now park in the south garage, bay C.\n",
        is_public=True,
    )
    assert newer.version is not None
    assert newer.version.number == 2
    # Queued, not yet indexed: search still serves version 1.
    hits = passages_for_user(user=reader, query="where do visitors park")
    assert "north garage" in hits[0].text
    run_pending_once()
    hits = passages_for_user(user=reader, query="where do visitors park")
    assert "south garage" in hits[0].text
    assert all("north garage" not in hit.text for hit in hits)
    document = Document.objects.get()
    assert document.current_version == newer.version
    assert document.versions.count() == 2  # the old version stays on record


def test_changing_groups_and_deleting_apply_to_search_at_once(reader: User) -> None:
    outcome = document_upload_bytes(name="parking.md", data=GOOD)
    run_pending_once()
    assert passages_for_user(user=reader, query="visitors park") == []
    document = outcome.version.document  # type: ignore[union-attr]
    document_set_access(document=document, groups=reader.groups.all(), is_public=False)
    assert passages_for_user(user=reader, query="visitors park")[0].source == "parking.md"
    document_delete(document=document)
    assert passages_for_user(user=reader, query="visitors park") == []
    assert vector_index().count(document_id=document.id) == 0
    assert Chunk.objects.filter(version__document=document).exists()  # kept for the record


def test_a_cancelled_version_leaves_nothing_in_search_and_can_be_retried(reader: User) -> None:
    outcome = document_upload_bytes(name="parking.md", data=GOOD, is_public=True)
    version = outcome.version
    assert version is not None
    assert version_cancel(version)
    run_pending_once()
    version.refresh_from_db()
    assert version.status == VersionStatus.CANCELLED
    assert passages_for_user(user=reader, query="visitors park") == []
    version_retry(version)
    run_pending_once()
    version.refresh_from_db()
    assert version.status == VersionStatus.READY
    assert passages_for_user(user=reader, query="visitors park")[0].source == "parking.md"


def test_running_a_version_twice_leaves_no_duplicate_passages() -> None:
    from ingestion.pipeline import versions_ingest

    outcome = document_upload_bytes(name="parking.md", data=GOOD * 30, is_public=True)
    version = outcome.version
    assert version is not None
    run_pending_once()
    version.refresh_from_db()
    total = version.chunks_total
    # A re-delivered task: the same version ingested again from the start.
    DocumentVersion.objects.filter(id=version.id).update(status=VersionStatus.QUEUED)
    versions_ingest([version.id])
    assert vector_index().count(version_id=version.id) == total
    assert Chunk.objects.filter(version=version).count() == total


def uploads(*files: tuple[str, bytes]) -> list[UploadItem]:
    return [UploadItem(name=name, file=ContentFile(data, name=name)) for name, data in files]


def test_many_files_at_once_each_get_what_one_by_one_would_give(hr: Group, reader: User) -> None:
    stored = document_upload_bytes(name="parking.md", data=GOOD, groups=[hr])
    handbook_v2 = HR_HANDBOOK.replace(b"March", b"April")
    outcomes = documents_upload(
        uploads(
            ("handbook.md", HR_HANDBOOK),
            ("parking-copy.md", GOOD),  # bytes already stored for the same readers
            ("nul\x00.md", b"# Refused\n"),  # a name no file may have
            ("canteen.md", b"# Canteen\n\nThe canteen opens at half past eleven.\n"),
            ("handbook.md", handbook_v2),  # the name of an earlier file of the same call
            ("canteen-copy.md", b"# Canteen\n\nThe canteen opens at half past eleven.\n"),
        ),
        groups=[hr],
    )

    handbook, copy, refused, canteen, handbook_again, canteen_copy = outcomes
    assert [o.created for o in outcomes] == [True, False, False, True, True, False]
    assert copy.version == stored.version
    assert "already stored as version 1 of “parking”" in copy.note
    assert refused.version is None
    assert refused.error
    assert handbook_again.version is not None
    assert handbook.version is not None
    assert handbook_again.version.document_id == handbook.version.document_id
    assert handbook_again.version.number == 2
    assert canteen_copy.version == canteen.version
    assert Document.objects.count() == 3

    records = list(AuditRecord.objects.order_by("sequence").values_list("event", flat=True))
    assert records.count(AuditEvent.DOCUMENT_UPLOADED) == 3  # parking, handbook, canteen
    assert records.count(AuditEvent.DOCUMENT_VERSION_ADDED) == 1
    assert ledger_verify().intact

    run_pending_once()
    assert set(DocumentVersion.objects.values_list("status", flat=True)) == {VersionStatus.READY}
    hits = passages_for_user(user=reader, query="when does the canteen open")
    assert reader.groups.filter(name="HR").exists() is False
    assert hits == []  # the files are HR's: a reader outside HR finds none of them
    reader.groups.add(hr)
    hits = passages_for_user(
        user=User.objects.get(pk=reader.pk), query="when does the canteen open"
    )
    assert hits[0].source == "canteen.md"
    assert "April" in passages_for_user(user=reader, query="when are salary bands reviewed")[0].text
