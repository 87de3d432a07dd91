"""How well tables in PDFs are read: HTML pages of known tables printed by Chromium, read back."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation.throwaway_runs import INNER_FLAG, throwaway_env
from bench.measures import machine_load, processor_name
from bench.table_pdfs import (
    KnownTable,
    cell_accuracy,
    chromium,
    income_statement,
    price_list,
    print_html_to_pdf,
    shift_schedule,
    table_page_html,
    table_questions,
)
from ingestion.parsing import parse_document

# Printed with the header row repeated on each page (the browser's default), and without;
# and with no rules at all, which is not detected (such tables stay words).
_NO_REPEATED_HEADER = "thead{display:table-row-group}"
_NO_RULES = "th,td{border:none !important}"
# The printed PDFs the table questions are asked of (the rest of the knowledge base is empty).
_SEARCHED_CASES = ("headers_repeated", "header_not_repeated")
_RANKS = (1, 5)


class Command(BaseCommand):
    help = (
        "Print HTML pages of known tables to PDF with headless Chromium, read the PDFs back "
        "and print each table cell's accuracy against the HTML; then ingest them in a "
        "throw-away data folder and search questions whose answers are cells, with tables "
        "found and read as words (PARSE_PDF_TABLES=false), as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=150, help="rows of the long price list")
        parser.add_argument(INNER_FLAG, default="", help="(internal) folder of printed PDFs")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["inner_run"]:
            self._ask_table_questions(Path(options["inner_run"]), options["rows"])
            return
        if chromium() is None:
            raise CommandError("Chromium is needed to print the test pages (bin/setup --dev).")
        cases: dict[str, tuple[list[KnownTable], str]] = {}
        tables = [income_statement(), shift_schedule(), price_list(options["rows"])]
        cases["headers_repeated"] = (tables, table_page_html(tables))
        long_table = [price_list(options["rows"], seed=11)]
        cases["header_not_repeated"] = (
            long_table,
            table_page_html(long_table, title="Spare parts").replace(
                "</style>", f"{_NO_REPEATED_HEADER}</style>"
            ),
        )
        cases["borderless"] = (
            [shift_schedule()],
            table_page_html([shift_schedule()]).replace("</style>", f"{_NO_RULES}</style>"),
        )
        report: dict[str, Any] = {"processor": processor_name(), "machine": machine_load()}
        cells = correct = 0
        with tempfile.TemporaryDirectory() as folder:
            searched = Path(folder) / "searched"
            searched.mkdir()
            for name, (known, page) in cases.items():
                pdf = print_html_to_pdf(page, Path(folder) / f"{name}.pdf").read_bytes()
                started = time.perf_counter()
                document = parse_document(pdf, f"{name}.pdf")
                seconds = time.perf_counter() - started
                text = "\n\n".join(section.text for section in document.sections)
                scored = cell_accuracy(known, text)
                pages = len({section.page for section in document.sections})
                report[name] = {
                    **scored,
                    "accuracy": round(scored["correct"] / scored["cells"], 4),
                    "pages": pages,
                    "parse_seconds": round(seconds, 3),
                }
                if name != "borderless":
                    cells += scored["cells"]
                    correct += scored["correct"]
                if name in _SEARCHED_CASES:
                    (searched / f"{name}.pdf").write_bytes(pdf)
            report["cell_accuracy_ruled_tables"] = round(correct / cells, 4)
            # The same questions of the same PDFs, with tables found and read as words.
            tables_read = self._retrieval_isolated(searched, options["rows"], pdf_tables=True)
            as_words = self._retrieval_isolated(searched, options["rows"], pdf_tables=False)
        report["table_questions"] = tables_read["questions"]
        for measure in ("hit", "hit_in_place"):
            for k in _RANKS:
                key = f"table_{measure}@{k}"
                report[key] = tables_read[key]
                report[f"baseline_{key}"] = as_words[key]
                report[f"difference_{key}"] = round(tables_read[key] - as_words[key], 4)
        report["table_passages"] = tables_read["passages"]
        report["baseline_table_passages"] = as_words["passages"]
        report["table_missed_at_1"] = tables_read["missed_at_1"]
        report["baseline_table_missed_at_1"] = as_words["missed_at_1"]
        self.stdout.write(json.dumps(report, indent=2))

    def _retrieval_isolated(self, pdfs: Path, rows: int, *, pdf_tables: bool) -> dict[str, Any]:
        """Ingest the PDFs and ask the table questions in a throw-away installation."""
        with tempfile.TemporaryDirectory(prefix="bench_tables-") as data_dir:
            env = throwaway_env(data_dir)
            env["PARSE_PDF_TABLES"] = "true" if pdf_tables else "false"
            done = subprocess.run(
                [
                    sys.executable,
                    "manage.py",
                    "bench_tables",
                    f"{INNER_FLAG}={pdfs}",
                    f"--rows={rows}",
                ],
                cwd=settings.BASE_DIR,
                env=env,
                capture_output=True,
                text=True,
            )
        if done.returncode:
            raise CommandError(f"The table questions failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def _ask_table_questions(self, pdfs: Path, rows: int) -> None:
        """In the throw-away installation: ingest, search as a reader would, score the passages."""
        from django.contrib.auth.models import User
        from django.core.files import File
        from django.core.management import call_command

        from assistant.retrieval import passages_for_user
        from ingestion.models import Chunk, DocumentVersion, VersionStatus
        from ingestion.runner import run_pending_once
        from ingestion.services import document_upload

        call_command("migrate", interactive=False, verbosity=0)
        for path in sorted(pdfs.glob("*.pdf")):
            with path.open("rb") as handle:
                document_upload(name=path.name, file=File(handle, name=path.name), is_public=True)
        run_pending_once()
        not_ready = DocumentVersion.objects.exclude(status=VersionStatus.READY).count()
        if not_ready:
            raise CommandError(f"{not_ready} of the printed PDFs were not ingested.")
        reader = User.objects.create_user("reader")
        questions = table_questions(
            income_statement(), shift_schedule(), [price_list(rows), price_list(rows, seed=11)]
        )
        hits = {f"{measure}@{k}": 0 for measure in ("hit", "hit_in_place") for k in _RANKS}
        missed_first: list[str] = []
        for question in questions:
            found = [
                passage.text
                for passage in passages_for_user(
                    user=reader, query=question.question, k=max(_RANKS)
                )
            ]
            for k in _RANKS:
                hits[f"hit@{k}"] += any(question.answered_by(text) for text in found[:k])
                hits[f"hit_in_place@{k}"] += any(
                    question.answered_in_place_by(text) for text in found[:k]
                )
            if not found or not question.answered_by(found[0]):
                missed_first.append(question.question)
        result: dict[str, Any] = {
            "questions": len(questions),
            "passages": Chunk.objects.count(),
            **{f"table_{key}": round(count / len(questions), 4) for key, count in hits.items()},
            "missed_at_1": missed_first,
        }
        self.stdout.write(json.dumps(result))
