from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.services import documents_purge


class Command(BaseCommand):
    help = (
        "Remove for good the documents deleted longer ago than the retention, with their stored "
        "files and passages. Documents under legal hold or cited by an audit record are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=int,
            default=settings.DOCUMENT_RETENTION_DAYS,
            metavar="DAYS",
            help="days since deletion (default: DOCUMENT_RETENTION_DAYS, "
            f"now {settings.DOCUMENT_RETENTION_DAYS})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be purged; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days: int = options["older_than"]
        if days < 0:
            raise CommandError("--older-than is a number of days, 0 or more.")
        report = documents_purge(older_than=timedelta(days=days), dry_run=options["dry_run"])
        for outcome in report.outcomes:
            name = f"document {outcome.document_id} “{outcome.title}”"
            if not outcome.purged:
                self.stdout.write(f"kept: {outcome.kept_reason}: {name}")
            elif report.dry_run:
                self.stdout.write(f"would purge: {name}")
            else:
                self.stdout.write(
                    f"purged: {name} ({outcome.files_removed} file(s); "
                    f"audit record {outcome.record_sequence})"
                )
        verb = "would purge" if report.dry_run else "purged"
        self.stdout.write(
            f"{len(report.purged)} {verb}, {len(report.kept)} kept, "
            f"{report.waiting} deleted within the last {days} days left alone"
            f"{' (dry run: nothing changed)' if report.dry_run else ''}."
        )
