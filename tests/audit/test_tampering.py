"""Every kind of tampering with the ledger's database is caught and named, on both databases.

The owner of the database can switch the append-only triggers off, recompute hashes and move
the chain head; what they cannot do is sign a checkpoint. tests/audit/tampering.py lists the
tamperings and the break `audit_verify` must name for each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from audit.anchor import checkpoints_read, public_key_path
from audit.ledger import anchor_adopt_unanchored_head, ledger_append
from audit.models import AuditRecord
from audit.review import export_lines
from audit.verify import ledger_verify
from tests.audit.tampering import (
    TAMPERINGS,
    Ledger,
    edit_and_recompute_the_tail,
    ledger_build,
    tampering_outcome,
    triggers_off,
)

PROJECT = Path(__file__).resolve().parents[2]
VERIFIER = PROJECT / "deploy" / "verify_audit_export.py"

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger() -> Ledger:
    built = ledger_build()
    assert ledger_verify().intact, "the untouched ledger verifies"
    assert len(checkpoints_read()) == built.last, "every append was signed"
    return built


@pytest.mark.skipif(
    "postgresql" not in settings.DATABASES["default"]["ENGINE"], reason="the PostgreSQL run"
)
@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_postgresql_tampering_is_caught_and_named(ledger: Ledger, name: str) -> None:
    _, expected = TAMPERINGS[name]
    assert tampering_outcome(name, ledger) == expected


SQLITE_RUN = """
import json, django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from audit.verify import ledger_verify
from tests.audit.tampering import TAMPERINGS, ledger_build, tampering_outcome
ledger = ledger_build()
outcomes = {"untouched": ledger_verify().problem is None}
outcomes.update({name: tampering_outcome(name, ledger) for name in TAMPERINGS})
print(json.dumps(outcomes))
"""


@pytest.mark.django_db(False)
def test_sqlite_tampering_is_caught_and_named(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(ASSISTANT_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    done = subprocess.run(
        [sys.executable, "-c", SQLITE_RUN],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcomes.pop("untouched") is True
    expected = {name: kind for name, (_, kind) in TAMPERINGS.items()}
    assert outcomes == expected


def test_a_forged_or_edited_checkpoint_is_refused(ledger: Ledger) -> None:
    anchors = Path(settings.AUDIT_ANCHOR_FILE)
    lines = anchors.read_text(encoding="utf-8").splitlines()
    checkpoint = json.loads(lines[-1])
    checkpoint["sequence"] += 1
    anchors.write_text("\n".join([*lines, json.dumps(checkpoint)]) + "\n", encoding="utf-8")
    problem = ledger_verify().problem
    assert problem is not None
    assert problem.kind == "forged checkpoint"


def test_the_sqlite_ledger_refuses_edits_like_postgresql(tmp_path: Path) -> None:
    script = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import DatabaseError, connection, transaction
from audit.ledger import ledger_append
with transaction.atomic():
    ledger_append(event="settings.changed", actor=None, details={"summary": "x"})
refused = []
for statement in ("UPDATE assistant_auditrecord SET summary = 'y'",
                  "DELETE FROM assistant_auditrecord",
                  "DELETE FROM assistant_audithead"):
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    except DatabaseError as error:
        refused.append("append-only" in str(error))
print(refused)
"""
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(ASSISTANT_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[True, True, True]"


def export_file(path: Path) -> Path:
    records = AuditRecord.objects.order_by("sequence")
    path.write_text("".join(export_lines(records, export_format="jsonl")), encoding="utf-8")
    return path


def verify_export(export: Path) -> subprocess.CompletedProcess[str]:
    public_key = public_key_path(Path(settings.AUDIT_SIGNING_KEY_FILE))
    return subprocess.run(
        [sys.executable, str(VERIFIER), str(export), "--public-key", str(public_key)],
        capture_output=True,
        text=True,
    )


def test_an_export_carries_the_signed_head_that_a_recomputed_chain_fails(
    ledger: Ledger, tmp_path: Path
) -> None:
    intact = verify_export(export_file(tmp_path / "intact.jsonl"))
    assert intact.returncode == 0, intact.stdout
    assert "INTACT" in intact.stdout
    with transaction.atomic():
        triggers_off()
        edit_and_recompute_the_tail(ledger)
        recomputed = export_file(tmp_path / "recomputed.jsonl")
        transaction.set_rollback(True)
    refused = verify_export(recomputed)
    assert refused.returncode == 1
    assert "signed checkpoint" in refused.stdout


def test_a_ledger_older_than_its_anchor_is_adopted_once() -> None:
    with transaction.atomic():
        ledger_append(event="settings.changed", actor=None, details={"summary": "before"})
    # Appended in a test transaction that never commits: no checkpoint was written.
    assert checkpoints_read() == []
    assert anchor_adopt_unanchored_head() is True
    assert ledger_verify().anchored_through == 1
    assert anchor_adopt_unanchored_head() is False
