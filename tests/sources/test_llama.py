"""llama_index sources with a real reader: llama-index-core's SimpleDirectoryReader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from assistant.retrieval import passages_for_user
from sources.models import RunStatus, Source, SourceItem
from sources.services import SourceRefused, source_add
from tests.sources.conftest import Sync

pytestmark = pytest.mark.django_db

READER = "llama_index.core.SimpleDirectoryReader"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "expenses.txt").write_text("Expense reports are due by the fifth of each month.\n")
    (root / "security.md").write_text("# Badges\n\nVisitors wear a red badge at all times.\n")
    (root / "printing.txt").write_text("The printers on floor three print double-sided.\n")
    return root


def reader_source(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Source:
    monkeypatch.setenv("DOCS_DIR", str(folder))
    return source_add(
        name="reader",
        kind="llama_index",
        options={
            "reader": READER,
            "reader_kwargs": json.dumps(
                {"input_dir": {"$env": "DOCS_DIR"}, "filename_as_id": True}
            ),
        },
        groups=[Group.objects.get_or_create(name="staff")[0]],
    )


def test_a_reader_s_documents_are_synced_by_id_and_hash(
    folder: Path, monkeypatch: pytest.MonkeyPatch, sync: Sync
) -> None:
    staff = User.objects.create_user("employee")
    staff.groups.add(Group.objects.get_or_create(name="staff")[0])
    source = reader_source(monkeypatch, folder)
    first = sync(source)
    assert first.counts() == {"new": 3, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    hits = passages_for_user(user=staff, query="when are expense reports due")
    assert "fifth of each month" in hits[0].text

    assert sync(source, ingest=False).counts()["unchanged"] == 3
    (folder / "expenses.txt").write_text("Expense reports are due by the tenth of each month.\n")
    (folder / "printing.txt").unlink()
    run = sync(source)
    assert run.counts() == {"new": 0, "changed": 1, "unchanged": 1, "deleted": 1, "failed": 0}
    hits = passages_for_user(user=staff, query="when are expense reports due")
    assert "tenth of each month" in hits[0].text
    assert SourceItem.objects.filter(deleted_at__isnull=True).count() == 2
    assert str(folder) not in json.dumps(Source.objects.get().options)


def test_a_reader_that_fails_fails_the_run_and_deletes_nothing(
    folder: Path, monkeypatch: pytest.MonkeyPatch, sync: Sync
) -> None:
    source = reader_source(monkeypatch, folder)
    sync(source, ingest=False)
    monkeypatch.setenv("DOCS_DIR", str(folder / "missing"))
    run = sync(source, ingest=False)
    assert run.status == RunStatus.FAILED
    assert "SimpleDirectoryReader failed" in run.error
    assert SourceItem.objects.filter(deleted_at__isnull=True).count() == 3


def test_only_reader_classes_of_llama_index_are_accepted() -> None:
    with pytest.raises(SourceRefused, match="Reader classes come from llama_index"):
        source_add(name="x", kind="llama_index", options={"reader": "os.system"})
    with pytest.raises(SourceRefused, match="looks like a secret"):
        source_add(
            name="y",
            kind="llama_index",
            options={"reader": READER, "reader_kwargs": '{"api_key": "sk-clear"}'},
        )
