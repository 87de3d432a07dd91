from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.ledger import ledger_append
from audit.models import AuditEvent
from audit.review import AuditFilters, audit_records_filtered, export_lines


def _moment(text: str, *, end_of_day: bool) -> datetime:
    """A date or a date and time; a bare date as `--until` includes that whole day."""
    # A bare date first: datetime parsing would read it as that day's midnight.
    day = parse_date(text)
    moment = parse_datetime(text) if day is None else None
    if day is not None:
        moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    if moment is None:
        raise CommandError(f"{text!r} is not a date (2026-01-31) or a time (2026-01-31T12:00).")
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class Command(BaseCommand):
    help = (
        "Stream audit records with their hashes to standard output, as JSON lines or CSV. "
        "deploy/verify_audit_export.py checks a JSONL export's chain without the application."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", required=True, help="first day or time, inclusive")
        parser.add_argument("--until", default="", help="last day (inclusive) or time (exclusive)")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")

    def handle(self, *args: Any, **options: Any) -> None:
        filters = AuditFilters(
            since=_moment(options["since"], end_of_day=False),
            until=_moment(options["until"], end_of_day=True) if options["until"] else None,
            sort="sequence",
        )
        with transaction.atomic():
            ledger_append(
                event=AuditEvent.AUDIT_EXPORTED,
                actor=None,
                details={
                    "via": "audit_export command",
                    "format": options["format"],
                    "filters": filters.as_details(),
                    "summary": f"Exported records as {options['format'].upper()} (command)",
                },
            )
        for line in export_lines(audit_records_filtered(filters), export_format=options["format"]):
            self.stdout.write(line, ending="")
