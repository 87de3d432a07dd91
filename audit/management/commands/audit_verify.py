from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.verify import ledger_verify


class Command(BaseCommand):
    help = (
        "Walk the audit ledger's hash chain. Exits 0 when it is intact and 1 when a record was "
        "edited, deleted, inserted or reordered; the last line names the first broken record."
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

    def handle(self, *args: Any, **options: Any) -> None:
        if options["from_sequence"] < 1:
            raise CommandError("--from takes a record number, 1 or more.")
        started = time.perf_counter()
        result = ledger_verify(from_sequence=options["from_sequence"])
        elapsed = time.perf_counter() - started
        rate = f"{result.checked / elapsed:,.0f} records/s" if elapsed > 0 else ""
        if result.intact:
            if result.checked == 0:
                self.stdout.write("No records to check: the chain is intact.")
                return
            self.stdout.write(
                f"Checked records {result.first_sequence} to {result.last_sequence} "
                f"({result.checked:,}) in {elapsed:.1f} s, {rate}."
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
