from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.verify import VerifyResult, ledger_verify


class Command(BaseCommand):
    help = (
        "Walk the audit ledger's hash chain and compare it with the signed checkpoints of its "
        "anchor and with the answers it vouches for. Exits 0 when it is intact and 1 when a "
        "record was edited, deleted, inserted or reordered, or the ledger was truncated, "
        "recomputed, appended to without the key or emptied; the last line names the break."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="from_sequence",
            type=int,
            default=1,
            metavar="ID",
            help="start at this record (its link to the record before is checked too)",
        )
        parser.add_argument(
            "--anchors",
            type=Path,
            action="append",
            default=None,
            metavar="FILE",
            help="signed checkpoints to compare with (default: AUDIT_ANCHOR_FILE); give it once "
            "per file, e.g. each process's anchor file or the syslog collector's log",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["from_sequence"] < 1:
            raise CommandError("--from takes a record number, 1 or more.")
        started = time.perf_counter()
        result = ledger_verify(
            from_sequence=options["from_sequence"], anchor_files=options["anchors"]
        )
        elapsed = time.perf_counter() - started
        rate = f"{result.checked / elapsed:,.0f} records/s" if elapsed > 0 else ""
        if result.intact:
            if result.checked == 0:
                self.stdout.write("No records to check: the chain is intact.")
                return
            self.stdout.write(
                f"Checked records {result.first_sequence} to {result.last_sequence} "
                f"({result.checked:,}) in {elapsed:.1f} s, {rate}. {self._anchor_line(result)}"
            )
            self.stdout.write(
                f"The chain is intact; record {result.last_sequence} has hash {result.last_hash}."
            )
            return
        problem = result.problem
        assert problem is not None
        self.stdout.write(f"Checked {result.checked:,} records before the break ({elapsed:.1f} s).")
        self.stdout.write(
            f"Broken at record {problem.sequence} ({problem.kind}): {problem.message}"
        )
        raise SystemExit(1)

    @staticmethod
    def _anchor_line(result: VerifyResult) -> str:
        if not result.checkpoints:
            return (
                "No signed checkpoints were found: the chain is checked against itself only, "
                "which someone who can write the database could recompute."
            )
        return (
            f"{result.checkpoints:,} signed checkpoints agree with the chain, the newest covers "
            f"record {result.anchored_through}."
        )
