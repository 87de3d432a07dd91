from __future__ import annotations

import json
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.models import FINAL_STATUSES, DocumentVersion
from ingestion.vector_index.base import IndexLockedError
from sources.models import Source, SourceRun
from sources.selectors import run_summary
from sources.sync import run_execute, run_request

POLL_S = 0.5


class Command(BaseCommand):
    help = (
        "Sync a source now. Prints the run's counts; --wait also waits until what it brought "
        "in is searchable. Exits non-zero when the run failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument(
            "--wait", action="store_true", help="return once new and changed documents are indexed"
        )
        parser.add_argument("--json", action="store_true", help="end with one JSON object")
        parser.add_argument(
            "--confirm-deletions",
            action="store_true",
            help="delete even more than the share a run may delete unaided",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = Source.objects.filter(name=options["name"]).first()
        if source is None:
            raise CommandError(f"No source named “{options['name']}”.")
        run, _ = run_request(source=source, confirm_deletions=options["confirm_deletions"])
        runs_here = self._holds_the_index()
        if runs_here:
            # Nobody else can be running it: this process holds the index (standalone).
            run_execute(run.pk, stale_after_s=0)
        else:
            from sources.dispatch import run_dispatch

            run_dispatch(run.pk)
            self._wait_for_run(run.pk)
        run.refresh_from_db()
        if options["wait"] and run.status == "ok":
            self._wait_for_indexing(run, runs_here=runs_here)
        elif runs_here and run.status == "ok":
            self.stderr.write(
                "What the run brought in is indexed when the assistant server starts "
                "(or now, with --wait)."
            )
        summary = run_summary(run)
        if options["json"]:
            self.stdout.write(json.dumps(summary))
        else:
            self._report(summary)
        if summary["status"] != "ok":
            sys.exit(1)

    def _holds_the_index(self) -> bool:
        if not settings.STANDALONE:
            return False
        from ingestion.vector_index.configured import vector_index

        try:
            vector_index()
        except IndexLockedError:
            self.stderr.write("The running assistant server carries out the run.")
            return False
        return True

    def _wait_for_run(self, run_id: int) -> None:
        while not SourceRun.objects.get(pk=run_id).is_final:
            time.sleep(POLL_S)

    def _wait_for_indexing(self, run: SourceRun, *, runs_here: bool) -> None:
        versions = DocumentVersion.objects.filter(
            document__source_items__last_run=run, document__deleted_at__isnull=True
        ).exclude(status__in=FINAL_STATUSES)
        if runs_here:
            from ingestion.runner import run_pending_once, runner_recover

            # This process holds the index: versions left mid-way by one that died are ours.
            runner_recover()
            run_pending_once()
        while versions.exists():
            time.sleep(POLL_S)

    def _report(self, summary: dict[str, Any]) -> None:
        self.stdout.write(
            f"{summary['status']}: {summary['new']} new, {summary['changed']} changed, "
            f"{summary['unchanged']} unchanged, {summary['deleted']} deleted, "
            f"{summary['failed']} failed"
        )
        for failure in summary.get("failures", []):
            self.stdout.write(f"FAILED     {failure['item']}: {failure['reason']}")
        if summary.get("error"):
            self.stdout.write(f"The run failed: {summary['error']}")
