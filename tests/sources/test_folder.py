"""Folder sources on real temporary folders: changes, deletions, renames, an unmounted share."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from assistant.retrieval import passages_for_user
from audit.models import AuditRecord
from ingestion.models import Document, VersionStatus
from sources.models import RunStatus, Source, SourceItem, SourceRun
from sources.services import source_add
from tests.sources.conftest import Sync

pytestmark = pytest.mark.django_db

PARKING = "# Parking\n\nVisitors park on level minus two of the north garage.\n"
PARKING_MOVED = "# Parking\n\nVisitors now park on the roof of the south garage.\n"
CANTEEN = "The canteen opens at half past eleven and serves soup on Fridays.\n"
TRAVEL = "Train travel above four hours may be booked in first class.\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def staff() -> User:
    user = User.objects.create_user("employee")
    user.groups.add(Group.objects.create(name="staff"))
    return user


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    write(root / "parking.md", PARKING)
    write(root / "kitchen" / "canteen.txt", CANTEEN)
    write(root / "travel.txt", TRAVEL)
    write(root / "build.log", "not a document")
    write(root / ".hidden.txt", "not a document either")
    return root


def folder_source(root: Path, **options: str) -> Source:
    return source_add(
        name="share",
        kind="folder",
        location=str(root),
        options={"exclude": "*.log", **options},
        groups=[Group.objects.get_or_create(name="staff")[0]],
    )


def live_titles() -> set[str]:
    return set(Document.objects.filter(deleted_at__isnull=True).values_list("title", flat=True))


def test_a_folder_brings_new_changed_and_deleted_files_into_search(
    share: Path, staff: User, sync: Sync
) -> None:
    source = folder_source(share)
    first = sync(source)
    assert first.status == RunStatus.OK
    assert first.counts() == {"new": 3, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    assert passages_for_user(user=staff, query="where do visitors park")[0].text.endswith(
        "north garage."
    )

    write(share / "parking.md", PARKING_MOVED)
    (share / "kitchen" / "canteen.txt").unlink()
    write(share / "new" / "holidays.txt", "Twenty-eight days of paid holiday a year.\n")
    second = sync(source)
    assert second.counts() == {"new": 1, "changed": 1, "unchanged": 1, "deleted": 1, "failed": 0}

    parking = SourceItem.objects.get(key="parking.md").document
    assert parking is not None
    assert [v.status for v in parking.versions.order_by("number")] == [VersionStatus.READY] * 2
    hits = passages_for_user(user=staff, query="where do visitors park")
    assert "roof of the south garage" in hits[0].text
    assert not any("north garage" in hit.text for hit in hits)
    canteen = SourceItem.objects.get(key="kitchen/canteen.txt")
    assert canteen.deleted_at is not None
    assert canteen.document is not None
    assert canteen.document.deleted_at is not None
    assert not any("canteen" in h.text for h in passages_for_user(user=staff, query="canteen"))
    assert "build" not in live_titles()


def test_each_change_and_each_run_is_a_ledger_record_naming_the_source(
    share: Path, sync: Sync
) -> None:
    source = folder_source(share)
    sync(source, ingest=False)
    (share / "travel.txt").unlink()
    sync(source, ingest=False)
    records = list(AuditRecord.objects.exclude(event="group.changed").order_by("sequence"))
    events = [record.event for record in records]
    assert events == [
        "source.added",
        "document.uploaded",
        "document.uploaded",
        "document.uploaded",
        "source.run",
        "document.deleted",
        "source.run",
    ]
    deleted = json.loads(records[5].details)
    assert deleted["source"]["name"] == "share"
    assert deleted["source"]["item"] == "travel.txt"
    assert "(source “share”)" in records[5].summary
    last_run = json.loads(records[6].details)
    assert (last_run["status"], last_run["deleted"], last_run["unchanged"]) == ("ok", 1, 2)


def test_a_file_whose_size_and_time_did_not_change_is_not_read_again(
    share: Path, sync: Sync
) -> None:
    source = folder_source(share)
    sync(source, ingest=False)
    parking = share / "parking.md"
    before = parking.stat()
    # Same size, same modification time: the sync trusts the signature and reads nothing.
    parking.write_text(PARKING.replace("north", "south"), encoding="utf-8")
    os.utime(parking, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert sync(source, ingest=False).counts()["unchanged"] == 3
    # Touched only: read again, found equal, still unchanged and no new version.
    write(share / "travel.txt", TRAVEL)
    os.utime(share / "travel.txt", ns=(1, 10**18))
    run = sync(source, ingest=False)
    assert (run.changed, run.unchanged) == (0, 3)
    travel = SourceItem.objects.get(key="travel.txt").document
    assert travel is not None
    assert travel.versions.count() == 1


def test_a_renamed_file_leaves_under_its_old_name_and_arrives_under_the_new(
    share: Path, staff: User, sync: Sync
) -> None:
    source = folder_source(share)
    sync(source, ingest=False)
    (share / "travel.txt").rename(share / "travel-policy.txt")
    run = sync(source)
    assert (run.new, run.deleted) == (1, 1)
    assert SourceItem.objects.get(key="travel.txt").deleted_at is not None
    renamed = SourceItem.objects.get(key="travel-policy.txt").document
    assert renamed is not None
    assert renamed.source_path.endswith("travel-policy.txt")
    hits = passages_for_user(user=staff, query="first class train travel")
    assert hits[0].source.endswith("travel-policy.txt")


def test_an_unmounted_share_fails_the_run_and_deletes_nothing(share: Path, sync: Sync) -> None:
    source = folder_source(share)
    sync(source, ingest=False)
    shutil.rmtree(share)
    gone = sync(source, ingest=False)
    assert gone.status == RunStatus.FAILED
    assert "does not exist or is not mounted" in gone.error
    assert gone.deleted == 0

    # The mount point is back but empty, as a share that failed to mount looks.
    share.mkdir()
    empty = sync(source, ingest=False)
    assert empty.status == RunStatus.FAILED
    assert "would delete 3 of its 3 documents" in empty.error
    assert live_titles() == {"parking", "canteen", "travel"}

    confirmed = sync(source, confirm=True, ingest=False)
    assert (confirmed.status, confirmed.deleted) == (RunStatus.OK, 3)
    assert live_titles() == set()


def test_deleting_more_than_the_allowed_share_needs_confirmation(share: Path, sync: Sync) -> None:
    source = folder_source(share, max_delete_share="0.4")
    sync(source, ingest=False)
    (share / "travel.txt").unlink()
    (share / "parking.md").unlink()
    refused = sync(source, ingest=False)
    assert refused.status == RunStatus.FAILED
    assert "more than the 40%" in refused.error
    assert len(live_titles()) == 3


def test_a_file_that_cannot_be_brought_in_fails_alone_and_keeps_its_document(
    share: Path, sync: Sync, settings: object
) -> None:
    source = folder_source(share)
    sync(source, ingest=False)
    write(share / "travel.txt", TRAVEL * 50)
    settings.UPLOAD_MAX_BYTES = 1000  # type: ignore[attr-defined]
    run = sync(source, ingest=False)
    assert (run.status, run.failed, run.deleted) == (RunStatus.OK, 1, 0)
    assert run.failures == [
        {"item": "travel.txt", "reason": "travel.txt is larger than the upload limit."}
    ]
    assert "travel" in live_titles()


def test_subfolders_map_to_groups_and_posix_groups_name_readers(tmp_path: Path, sync: Sync) -> None:
    root = tmp_path / "share"
    write(root / "HR" / "salaries.txt", "Salary bands are reviewed every March.\n")
    write(root / "all.txt", CANTEEN)
    hr_member = User.objects.create_user("hr-member")
    hr_member.groups.add(Group.objects.create(name="hr"))
    source = folder_source(root, folder_groups="HR:hr")
    sync(source, ingest=False)
    salaries = SourceItem.objects.get(key="HR/salaries.txt").document
    canteen = SourceItem.objects.get(key="all.txt").document
    assert salaries is not None
    assert canteen is not None
    assert list(salaries.groups.values_list("name", flat=True)) == ["hr"]
    assert list(canteen.groups.values_list("name", flat=True)) == ["staff"]

    # The mapping changes: the document's readers follow, without a new version.
    Source.objects.filter(pk=source.pk).update(options={"folder_groups": "HR:hr,auditors"})
    source.refresh_from_db()
    sync(source, ingest=False)
    salaries.refresh_from_db()
    assert sorted(salaries.groups.values_list("name", flat=True)) == ["auditors", "hr"]
    assert salaries.versions.count() == 1

    os.chown(root / "all.txt", -1, 1)  # gid 1 is "daemon" on Debian
    posix = source_add(
        name="posix", kind="folder", location=str(root), options={"posix_group": "true"}
    )
    sync(posix, ingest=False)
    by_posix = SourceItem.objects.get(source=posix, key="all.txt").document
    assert by_posix is not None
    assert list(by_posix.groups.values_list("name", flat=True)) == ["daemon"]


NOBODY = 65534


def as_nobody(work: Callable[[], object]) -> object:
    """Run `work` in a forked child that has dropped root, as a share's reader would be: root
    reads any folder, so an unreadable one can only be met without it. The child shares this
    test's database session (the parent waits meanwhile) and sends back what `work` returned
    or raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                outcome: object = work()
            except Exception as error:
                outcome = error
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        outcome = pickle.load(pipe)
    os.waitpid(pid, 0)
    return outcome


@pytest.fixture
def open_share() -> Iterator[Path]:
    """A share anyone may read, outside the test's private temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="share-"))
    root.chmod(0o755)
    write(root / "parking.md", PARKING)
    write(root / "kitchen" / "canteen.txt", CANTEEN)
    write(root / "kitchen" / "menu.txt", "Soup on Fridays.\n")
    for path in (root / "kitchen", *root.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield root
    for path in (root, *root.rglob("*")):
        path.chmod(0o755)
    shutil.rmtree(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="drops root to meet an unreadable folder")
def test_an_unreadable_subfolder_is_neither_read_nor_deleted(open_share: Path, sync: Sync) -> None:
    source = folder_source(open_share)
    sync(source, ingest=False)
    (open_share / "kitchen").chmod(0o700)  # root's alone now

    run = as_nobody(lambda: sync(source, ingest=False))
    assert isinstance(run, SourceRun), run
    assert (run.status, run.deleted, run.unchanged, run.failed) == (RunStatus.OK, 0, 1, 1)
    assert "kitchen" in run.failures[0]["reason"]
    assert "Permission denied" in run.failures[0]["reason"]
    assert live_titles() == {"parking", "canteen", "menu"}

    open_share.chmod(0o700)
    whole = as_nobody(lambda: sync(source, ingest=False))
    assert isinstance(whole, SourceRun), whole
    assert whole.status == RunStatus.FAILED
    assert "cannot be read: Permission denied" in whole.error
    assert live_titles() == {"parking", "canteen", "menu"}
