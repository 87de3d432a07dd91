from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.local_files import NoSuchPath, files_under, local_files_upload
from ingestion.models import FINAL_STATUSES, DocumentVersion, VersionStatus
from ingestion.services import UploadOutcome
from ingestion.vector_index.base import IndexLockedError

PROGRESS_EVERY_S = 2.0


class Command(BaseCommand):
    help = "Ingest files and folders (recursively) into the knowledge base."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--groups", default="", help="comma-separated groups that may read")
        parser.add_argument("--everyone", action="store_true", help="everyone may read them")
        parser.add_argument("--user", default="", help="record this user as the uploader")
        parser.add_argument(
            "--wait", action="store_true", help="return when every file reached a final state"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            files = files_under(options["paths"])
        except NoSuchPath as error:
            raise CommandError(str(error)) from error
        if not files:
            raise CommandError("No files found.")
        group_names = [g.strip() for g in options["groups"].split(",") if g.strip()]
        groups = [Group.objects.get_or_create(name=name)[0] for name in group_names]
        if not groups and not options["everyone"]:
            self.stderr.write(
                "Note: no --groups and no --everyone: only administrators will see these files."
            )
        user = None
        if options["user"]:
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"No such user: {options['user']}")

        runs_here = settings.STANDALONE and self._holds_the_index()
        if runs_here:
            from ingestion.runner import runner_start, runner_stop

            # Files are read and embedded while the rest are still being stored.
            runner_start()
        try:
            outcomes = self._upload(files, groups, user, everyone=options["everyone"])
            version_ids = [o.version.id for o in outcomes if o.version is not None]
            self.stderr.write(f"{len(version_ids)} of {len(outcomes)} files accepted.")
            if runs_here or options["wait"]:
                self._wait_for(version_ids)
        finally:
            if runs_here:
                runner_stop()
        self._report(outcomes, final=runs_here or options["wait"])

    def _holds_the_index(self) -> bool:
        """Whether this process may write the embedded index (no server holds it)."""
        from ingestion.vector_index.configured import vector_index

        try:
            vector_index()
        except IndexLockedError as error:
            self.stderr.write(
                f"{error}\nThe running assistant server will ingest the queued files."
            )
            return False
        return True

    def _upload(
        self, files: list[tuple[Path, str]], groups: list[Group], user: Any, *, everyone: bool
    ) -> list[UploadOutcome]:
        return local_files_upload(files, groups=groups, is_public=everyone, user=user)

    def _wait_for(self, version_ids: list[int]) -> None:
        last_line = ""
        last_print = 0.0
        while True:
            rows = list(
                DocumentVersion.objects.filter(id__in=version_ids).values_list(
                    "status", "chunks_done", "chunks_total"
                )
            )
            final = sum(1 for status, _, _ in rows if status in FINAL_STATUSES)
            done = sum(d for _, d, _ in rows)
            total = sum(t for _, _, t in rows)
            line = f"{final}/{len(rows)} files finished, {done}/{total} passages indexed"
            now = time.monotonic()
            if (line != last_line and now - last_print >= PROGRESS_EVERY_S) or final == len(rows):
                self.stderr.write(line)
                last_line, last_print = line, now
            if final == len(rows):
                return
            time.sleep(0.5)

    def _report(self, outcomes: list[UploadOutcome], *, final: bool) -> None:
        failed = 0
        for outcome in outcomes:
            if outcome.version is None:
                failed += 1
                self.stdout.write(f"FAILED     {outcome.name}: {outcome.error}")
                continue
            version = DocumentVersion.objects.select_related("document").get(id=outcome.version.id)
            source = version.document.source_path
            note = "" if outcome.created else " (same bytes as an existing version)"
            if version.status == VersionStatus.FAILED:
                failed += 1
                self.stdout.write(f"FAILED     {source}: {version.status_message}")
            elif version.status == VersionStatus.READY:
                self.stdout.write(f"READY      {source} ({version.chunks_total} passages){note}")
            else:
                self.stdout.write(f"{version.status:<10} {source}{note}")
        if final:
            self.stdout.write(f"{len(outcomes) - failed} ready, {failed} failed.")
        if failed:
            sys.exit(1)
