"""Backup and restore as the README describes it: a database dump plus the stored files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    names = (f"backup_{uuid.uuid4().hex[:8]}", f"restore_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
    yield names
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def environment(database: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QDRANT_PATH", "QDRANT_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        ASSISTANT_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
    )
    return env


def test_a_dump_and_the_stored_files_restore_everything(
    databases: tuple[str, str], tmp_path: Path
) -> None:
    original, restored = databases
    source = environment(original, tmp_path / "original")
    manage(source, "migrate", "--noinput")
    manage(source, "adduser", "alice", "--groups", "finance")
    handbook = tmp_path / "expenses.md"
    handbook.write_text("# Expenses\n\nTaxi receipts above 80 euros need a manager's signature.\n")
    manage(source, "ingest", str(handbook), "--groups", "finance", "--wait")
    manage(source, "ask", "Which taxi receipts need a signature?", "--user", "alice")

    dump = tmp_path / "assistant.sql"
    subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-f", str(dump), original], check=True
    )
    subprocess.run(
        ["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", restored, "-f", str(dump)],
        check=True,
        capture_output=True,
    )
    target = environment(restored, tmp_path / "restored")
    shutil.copytree(tmp_path / "original" / "files", tmp_path / "restored" / "files")

    assert "intact" in manage(target, "audit_verify").lower()
    manage(target, "reindex")
    passages = json.loads(
        manage(target, "search", "taxi receipt signature", "--user", "alice", "--json")
    )
    assert passages[0]["source"].endswith("expenses.md")
    assert "80 euros" in passages[0]["text"]
