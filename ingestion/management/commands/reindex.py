from __future__ import annotations

import re
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.reindex import index_rebuild
from ingestion.vector_index import VectorIndexError

# Fine enough to watch a long rebuild move, coarse enough not to flood a log.
PROGRESS_EVERY_S = 5.0


class Command(BaseCommand):
    help = (
        "Rebuild the whole vector index from the stored passages with the configured embedding "
        "model, into a new collection (server) or shard folder (edge), then switch to it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--collection",
            metavar="NAME",
            help="name of the new collection (server) or shard folder suffix (edge); "
            "default: made from the current time",
        )
        parser.add_argument(
            "--keep-previous",
            action="store_true",
            help="keep the previous collection or shard folder after the switch",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str | None = options["collection"]
        if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
            raise CommandError("--collection takes letters, digits, '.', '_' and '-' only.")
        model = settings.EMBEDDING_MODEL_PATH or "the bundled all-MiniLM-L6-v2"
        if settings.EMBEDDING_PRECISION == "int8":
            model += " quantized to int8"
        self.stdout.write(f"Re-indexing on the {settings.VECTOR_BACKEND} backend with {model}.")
        last_report = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last_report
            now = time.monotonic()
            if done in (0, total) or now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self.stdout.write(f"  {done} of {total} passages embedded and written")

        try:
            report = index_rebuild(
                collection=name, keep_previous=options["keep_previous"], progress=progress
            )
        except VectorIndexError as error:
            raise CommandError(error.message) from error
        self.stdout.write(
            f"Indexed {report.passages} passages of {report.versions} versions into "
            f"{report.target} in {report.seconds:g} s."
        )
        if report.caught_up_documents:
            self.stdout.write(
                f"Applied {report.caught_up_documents} document change(s) made meanwhile."
            )
        if report.previous is not None:
            fate = "removed" if report.previous_removed else "kept"
            self.stdout.write(f"Previous index {report.previous}: {fate}.")
