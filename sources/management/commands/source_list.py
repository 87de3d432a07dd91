from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from sources.selectors import source_summaries


class Command(BaseCommand):
    help = "List the sources, their schedules and their last runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="one JSON array")

    def handle(self, *args: Any, **options: Any) -> None:
        summaries = source_summaries()
        if options["json"]:
            self.stdout.write(json.dumps(summaries, default=str))
            return
        if not summaries:
            self.stdout.write("No sources.")
            return
        for summary in summaries:
            last = summary["last_run"]
            if last is None:
                outcome = "never run"
            else:
                outcome = (
                    f"last run {last['status']}: {last['new']} new, {last['changed']} changed, "
                    f"{last['unchanged']} unchanged, {last['deleted']} deleted, "
                    f"{last['failed']} failed"
                )
                if last.get("error"):
                    outcome += f" ({last['error']})"
            paused = " [paused]" if summary["paused"] else ""
            schedule = summary["schedule"] or "on demand"
            self.stdout.write(
                f"{summary['name']:<20} {summary['kind']:<12} {summary['documents']:>6} documents"
                f"  {schedule}{paused}  {outcome}"
            )
