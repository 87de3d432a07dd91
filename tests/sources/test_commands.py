"""source_add, source_list and source_sync as an operator uses them, and a killed run."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from sources.models import Source

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str) -> tuple[str, int]:
    out = io.StringIO()
    try:
        call_command(*args, stdout=out, stderr=io.StringIO())
    except SystemExit as exit:
        return out.getvalue(), int(exit.code or 0)
    return out.getvalue(), 0


def test_an_operator_adds_lists_and_syncs_a_folder(tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "parking.md").write_text("Visitors park in the north garage.\n")
    (share / "canteen.txt").write_text("The canteen opens at noon.\n")
    manage(
        "source_add",
        "share",
        "--kind",
        "folder",
        "--path",
        str(share),
        "--groups",
        "staff,hr",
        "--option",
        "exclude=*.tmp",
        "--schedule",
        "*/30 * * * *",
    )
    source = Source.objects.get(name="share")
    assert sorted(source.groups.values_list("name", flat=True)) == ["hr", "staff"]
    assert source.options == {"exclude": "*.tmp"}
    assert source.next_run_at is not None

    output, code = manage("source_sync", "share", "--json")
    assert code == 0
    result = json.loads(output.strip().splitlines()[-1])
    assert {key: result[key] for key in ("new", "changed", "unchanged", "deleted", "failed")} == {
        "new": 2,
        "changed": 0,
        "unchanged": 0,
        "deleted": 0,
        "failed": 0,
    }
    assert result["status"] == "ok"

    listed = json.loads(manage("source_list", "--json")[0])
    assert [(s["name"], s["kind"], s["documents"], s["schedule"]) for s in listed] == [
        ("share", "folder", 2, "*/30 * * * *")
    ]
    assert listed[0]["last_run"]["new"] == 2
    text, _ = manage("source_list")
    assert "share" in text
    assert "2 new" in text


def test_a_failed_run_exits_non_zero_with_its_error(tmp_path: Path) -> None:
    manage("source_add", "gone", "--kind", "folder", "--path", str(tmp_path / "nowhere"))
    output, code = manage("source_sync", "gone", "--json")
    assert code == 1
    result = json.loads(output.strip().splitlines()[-1])
    assert result["status"] == "failed"
    assert "does not exist or is not mounted" in result["error"]


def test_bad_settings_and_clear_secrets_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="password_file"):
        manage(
            "source_add",
            "mail",
            "--kind",
            "imap",
            "--url",
            "imap://127.0.0.1/INBOX",
            "--option",
            "password=hunter2",
        )
    with pytest.raises(CommandError, match="five cron fields"):
        manage(
            "source_add", "s", "--kind", "folder", "--path", str(tmp_path), "--schedule", "daily"
        )
    with pytest.raises(CommandError, match="No source named"):
        manage("source_sync", "nothing")
    assert not Source.objects.exists()


@pytest.mark.slow
def test_a_run_killed_midway_is_resumed_without_duplicates(tmp_path: Path) -> None:
    """A run killed mid-way (SIGKILL, as a worker dies) is resumed by the next source_sync:
    every file ends up once, and the run counts each file once."""
    share = tmp_path / "share"
    share.mkdir()
    files = 300
    for number in range(files):
        (share / f"note-{number:03}.txt").write_text(f"Note number {number} of the archive.\n")
    data = tmp_path / "data"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "ASSISTANT_MODE", "QDRANT_PATH", "QDRANT_URL")
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings", ASSISTANT_DATA_DIR=str(data))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    assert run("migrate", "-v", "0").returncode == 0
    assert run("source_add", "share", "--kind", "folder", "--path", str(share)).returncode == 0
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "source_sync", "share"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    database = data / "db.sqlite3"

    def count(sql: str) -> int:
        with sqlite3.connect(database, timeout=30) as connection:
            return int(connection.execute(sql).fetchone()[0])

    deadline = time.monotonic() + 120
    while count("SELECT count(*) FROM sources_sourceitem") < 30:
        assert worker.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    done_before = count("SELECT count(*) FROM sources_sourceitem")
    assert done_before < files
    assert count("SELECT count(*) FROM sources_sourcerun WHERE status = 'running'") == 1

    resumed = run("source_sync", "share", "--json")
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert (result["status"], result["new"], result["unchanged"]) == ("ok", files, 0)
    assert count("SELECT count(*) FROM sources_sourcerun") == 1
    assert count("SELECT count(*) FROM ingestion_document") == files
    assert count("SELECT count(*) FROM ingestion_documentversion") == files
    assert (
        count("SELECT count(*) FROM assistant_auditrecord WHERE event = 'document.uploaded'")
        == files
    )


def test_source_sync_wait_returns_once_the_documents_are_searchable(tmp_path: Path) -> None:
    from django.contrib.auth.models import Group, User

    from assistant.retrieval import passages_for_user

    share = tmp_path / "share"
    share.mkdir()
    (share / "parking.md").write_text("Visitors park in the north garage.\n")
    manage("source_add", "share", "--kind", "folder", "--path", str(share), "--groups", "staff")
    output, code = manage("source_sync", "share", "--wait", "--json")
    assert code == 0
    assert json.loads(output.strip().splitlines()[-1])["new"] == 1
    reader = User.objects.create_user("reader")
    reader.groups.add(Group.objects.get(name="staff"))
    assert "north garage" in passages_for_user(user=reader, query="where to park")[0].text
