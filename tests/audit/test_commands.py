"""audit_verify and audit_export with the standalone verifier, as run by operators."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from audit.ledger import ledger_append
from audit.models import AuditEvent, AuditHead, AuditRecord

pytestmark = pytest.mark.django_db

VERIFIER = Path(settings.BASE_DIR) / "deploy" / "verify_audit_export.py"


def append_records(count: int) -> None:
    with transaction.atomic():
        for number in range(count):
            ledger_append(
                event=AuditEvent.ANSWER,
                actor=None,
                details={
                    "question": f"Question {number} — ça va?",
                    "answer": f"Answer {number} [1]",
                    "status": "answered",
                    "passages": [{"n": 1, "document_id": 5, "text": f"Passage {number}"}],
                    "citations": [1],
                    "total_ms": 1234.5 + number,
                },
            )


def export(tmp_path: Path, *args: str) -> Path:
    out = io.StringIO()
    call_command("audit_export", *args, stdout=out)
    extension = "csv" if "csv" in args else "jsonl"
    path = tmp_path / f"export.{extension}"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def run_verifier(*args: str | Path) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, str(VERIFIER), *map(str, args)], capture_output=True, text=True
    )
    return done.returncode, done.stdout.strip().splitlines()[-1]


def test_verifying_an_empty_ledger_succeeds() -> None:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().strip() == "No records to check: the chain is intact."


def test_verify_reports_the_range_it_checked_and_the_head_hash() -> None:
    append_records(5)
    out = io.StringIO()
    call_command("audit_verify", "--from", "3", stdout=out)
    head = AuditHead.objects.get()
    first, last = out.getvalue().strip().splitlines()
    assert first.startswith("Checked records 3 to 5 (3)")
    assert last == f"The chain is intact; record 5 has hash {head.hash}."


def test_an_export_verifies_outside_the_application_and_names_tampering(tmp_path: Path) -> None:
    append_records(4)
    today = timezone.localdate().isoformat()
    path = export(tmp_path, "--since", today)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["sequence"] for line in lines] == [1, 2, 3, 4, 5]
    assert json.loads(lines[-1])["event"] == "audit.exported"
    head = AuditHead.objects.get().hash

    status, verdict = run_verifier(path, "--head-hash", head)
    assert status == 0
    assert verdict.startswith("INTACT")

    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([*lines[:2], lines[2].replace("Answer 2", "Answer 7"), *lines[3:]]))
    assert run_verifier(edited) == (
        1,
        "BROKEN: record 3 was edited: its content does not match its hash",
    )

    missing = tmp_path / "missing.jsonl"
    missing.write_text("\n".join([*lines[:1], *lines[2:]]))
    assert run_verifier(missing) == (
        1,
        "BROKEN: record 2 is missing or out of place: record 3 follows record 1 "
        "(deleted or reordered)",
    )

    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-1]))
    status, verdict = run_verifier(cut, "--head-hash", head)
    assert status == 1
    assert "cut from the end" in verdict


def test_an_export_that_starts_later_is_anchored_by_the_previous_hash(tmp_path: Path) -> None:
    append_records(3)
    second = AuditRecord.objects.get(sequence=2)
    path = export(tmp_path, "--since", timezone.localdate().isoformat())
    later = tmp_path / "later.jsonl"
    later.write_text("\n".join(path.read_text(encoding="utf-8").splitlines()[2:]))
    assert run_verifier(later, "--prev-hash", second.hash)[0] == 0
    assert run_verifier(later, "--prev-hash", "f" * 64)[0] == 1


def test_a_csv_export_verifies_too(tmp_path: Path) -> None:
    append_records(3)
    path = export(tmp_path, "--since", timezone.localdate().isoformat(), "--format", "csv")
    assert path.read_text(encoding="utf-8").startswith("sequence,time,event,")
    status, verdict = run_verifier(path)
    assert status == 0
    assert verdict.startswith("INTACT")


def test_export_dates_select_records_and_the_export_is_recorded(tmp_path: Path) -> None:
    append_records(2)
    today = timezone.localdate()
    tomorrow = (today + timedelta(days=1)).isoformat()
    assert export(tmp_path, "--since", tomorrow).read_text() == ""
    yesterday = (today - timedelta(days=1)).isoformat()
    assert export(tmp_path, "--since", yesterday, "--until", yesterday).read_text() == ""
    through_today = export(tmp_path, "--since", yesterday, "--until", today.isoformat())
    assert len(through_today.read_text().splitlines()) == 2 + 3
    exports = list(AuditRecord.objects.filter(event=AuditEvent.AUDIT_EXPORTED).order_by("sequence"))
    assert len(exports) == 3
    assert json.loads(exports[-1].details)["filters"]["since"].startswith(yesterday)


def test_export_refuses_a_date_it_cannot_read() -> None:
    with pytest.raises(Exception, match="is not a date"):
        call_command("audit_export", "--since", "last tuesday", stdout=io.StringIO())
