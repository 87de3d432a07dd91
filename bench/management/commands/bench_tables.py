"""How well tables in PDFs are read: HTML pages of known tables printed by Chromium, read back."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

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
)
from ingestion.parsing import parse_document

# Printed with the header row repeated on each page (the browser's default), and without;
# and with no rules at all, which is not detected (such tables stay words).
_NO_REPEATED_HEADER = "thead{display:table-row-group}"
_NO_RULES = "th,td{border:none !important}"


class Command(BaseCommand):
    help = (
        "Print HTML pages of known tables to PDF with headless Chromium, read the PDFs back "
        "and print each table cell's accuracy against the HTML, as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=150, help="rows of the long price list")

    def handle(self, *args: Any, **options: Any) -> None:
        if chromium() is None:
            raise CommandError("Chromium is needed to print the test pages (bin/setup --dev).")
        cases: dict[str, tuple[list[KnownTable], str]] = {}
        tables = [income_statement(), shift_schedule(), price_list(options["rows"])]
        cases["headers_repeated"] = (tables, table_page_html(tables))
        long_table = [price_list(options["rows"], seed=11)]
        cases["header_not_repeated"] = (
            long_table,
            table_page_html(long_table).replace("</style>", f"{_NO_REPEATED_HEADER}</style>"),
        )
        cases["borderless"] = (
            [shift_schedule()],
            table_page_html([shift_schedule()]).replace("</style>", f"{_NO_RULES}</style>"),
        )
        report: dict[str, Any] = {"processor": processor_name(), "machine": machine_load()}
        cells = correct = 0
        with tempfile.TemporaryDirectory() as folder:
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
        report["cell_accuracy_ruled_tables"] = round(correct / cells, 4)
        self.stdout.write(json.dumps(report, indent=2))
