"""Files given to `manage.py ingest`: source paths say what was ingested, not where it lay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestion.local_files import NoSuchPath, files_under, local_files_upload
from ingestion.models import Document


@pytest.fixture
def share(tmp_path: Path) -> Path:
    handbook = tmp_path / "srv" / "share" / "handbook"
    (handbook / "hr").mkdir(parents=True)
    (handbook / "hr" / "leave.md").write_text("# Leave\n")
    (handbook / ".drafts").mkdir()
    (handbook / ".drafts" / "secret.md").write_text("# Draft\n")
    (tmp_path / "srv" / "share" / "travel.pdf").write_bytes(b"%PDF-1.7\n")
    return tmp_path / "srv" / "share"


def sources(paths: list[str]) -> list[str]:
    return [source for _, source in files_under(paths)]


def test_an_absolute_folder_or_file_is_named_from_itself_not_from_the_server_s_disk(
    share: Path,
) -> None:
    assert sources([str(share / "handbook"), str(share / "travel.pdf")]) == [
        "handbook/hr/leave.md",
        "travel.pdf",
    ]


def test_relative_paths_are_kept_as_given_and_climbing_ones_are_named_from_themselves(
    share: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(share)
    assert sources(["handbook/", "./travel.pdf"]) == ["handbook/hr/leave.md", "travel.pdf"]
    monkeypatch.chdir(share / "handbook" / "hr")
    assert sources([os.path.join("..", "..", "travel.pdf"), "."]) == ["travel.pdf", "leave.md"]


def test_a_missing_path_is_named(share: Path) -> None:
    with pytest.raises(NoSuchPath, match="No such file or folder: nowhere"):
        files_under(["nowhere"])


@pytest.mark.django_db
def test_a_file_gone_since_it_was_listed_fails_alone_in_its_place(share: Path) -> None:
    files = files_under([str(share)])
    (share / "handbook" / "hr" / "leave.md").unlink()  # moved away while ingest was starting
    (share / "notes.md").write_text("# Notes\n\nThe library opens at nine.\n")
    files.append((share / "notes.md", "share/notes.md"))

    outcomes = local_files_upload(files, is_public=True)

    assert [outcome.name for outcome in outcomes] == ["leave.md", "travel.pdf", "notes.md"]
    gone, travel, notes = outcomes
    assert gone.version is None
    assert gone.error == "The file could not be read (No such file or directory). Not stored."
    assert travel.created
    assert notes.created
    assert Document.objects.count() == 2
