"""How fast sources re-sync: a large folder with a few files changed, an unchanged site.

Runs in a throw-away standalone installation. The figures are the sync runs themselves
(listing, reading what changed, storing new versions, bookkeeping); the embedding of what
changed happens afterwards in the ingestion runner and is not part of them.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation.throwaway_runs import INNER_FLAG, run_isolated
from bench.intranet_site import IntranetSite


class Command(BaseCommand):
    help = "Benchmark source re-syncs: a folder with 1% changed, a site with nothing changed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--files", type=int, default=10_000)
        parser.add_argument("--changed-share", type=float, default=0.01)
        parser.add_argument("--pages", type=int, default=1_000)
        parser.add_argument("--json", action="store_true", help="print one JSON object only")
        parser.add_argument(INNER_FLAG, action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["files"] < 1 or options["pages"] < 1:
            raise CommandError("--files and --pages must be 1 or more.")
        if not options["inner_run"]:
            arguments = [
                "--files", str(options["files"]),
                "--changed-share", str(options["changed_share"]),
                "--pages", str(options["pages"]),
            ]  # fmt: skip
            run_isolated("bench_sources", [*arguments, "--json"] if options["json"] else arguments)
            return
        call_command("migrate", interactive=False, verbosity=0)
        figures = {"folder": self._folder(options), "web": self._web(options)}
        if options["json"]:
            self.stdout.write(json.dumps(figures))
            return
        folder, web = figures["folder"], figures["web"]
        self.stdout.write(
            f"folder: {folder['files']} files, first sync {folder['first_sync_s']} s; "
            f"{folder['changed_files']} changed, re-sync {folder['resync_changed_s']} s; "
            f"nothing changed, re-sync {folder['resync_unchanged_s']} s"
        )
        self.stdout.write(
            f"web: {web['pages']} pages, first sync {web['first_sync_s']} s; nothing changed, "
            f"re-sync {web['resync_s']} s with {web['resync_body_downloads']} body downloads"
        )
        self.stdout.write(json.dumps(figures))

    def _sync(self, source: Any) -> tuple[Any, float]:
        from sources.sync import run_execute, run_request

        run, _ = run_request(source=source)
        started = time.perf_counter()
        done = run_execute(run.pk, stale_after_s=0)
        elapsed = time.perf_counter() - started
        assert done is not None
        if done.status != "ok":
            raise CommandError(f"The run failed: {done.error}")
        return done, round(elapsed, 2)

    def _folder(self, options: dict[str, Any]) -> dict[str, Any]:
        from sources.services import source_add

        rng = random.Random(11)
        with tempfile.TemporaryDirectory(prefix="bench-share-") as folder:
            root = Path(folder)
            paths = []
            for number in range(options["files"]):
                path = root / f"team-{number % 40:02}" / f"note-{number:05}.txt"
                path.parent.mkdir(exist_ok=True)
                path.write_text(f"Note {number}: the {rng.random():.6f} figure of the quarter.\n")
                paths.append(path)
            source = source_add(name="bench-share", kind="folder", location=str(root))
            first, first_s = self._sync(source)
            changed = rng.sample(paths, max(1, int(len(paths) * options["changed_share"])))
            for path in changed:
                path.write_text(path.read_text() + "Revised after the review.\n")
            resync, resync_s = self._sync(source)
            _, unchanged_s = self._sync(source)
        return {
            "files": options["files"],
            "first_sync_s": first_s,
            "first_sync_new": first.new,
            "changed_files": len(changed),
            "resync_changed_s": resync_s,
            "resync_counts": resync.counts(),
            "resync_unchanged_s": unchanged_s,
        }

    def _web(self, options: dict[str, Any]) -> dict[str, Any]:
        from sources.services import source_add

        site = IntranetSite().start()
        try:
            pages = options["pages"]
            for number in range(pages):
                links = (
                    f"/pages/{(number + 1) % pages}.html",
                    f"/pages/{(number * 7) % pages}.html",
                )
                site.html(
                    f"/pages/{number}.html", f"Page {number}", f"Text of page {number}.", links
                )
            source = source_add(
                name="bench-site",
                kind="web",
                location=f"{site.url}/pages/0.html",
                options={"sitemap": f"{site.url}/sitemap.xml"},
            )
            first, first_s = self._sync(source)
            site.reset_counts()
            source.refresh_from_db()
            resync, resync_s = self._sync(source)
            return {
                "pages": pages,
                "first_sync_s": first_s,
                "first_sync_new": first.new,
                "resync_s": resync_s,
                "resync_counts": resync.counts(),
                "resync_body_downloads": site.page_bodies_sent,
                "resync_not_modified": site.not_modified,
            }
        finally:
            site.stop()
