"""PDFs whose tables are known: HTML pages holding tables, printed to PDF by Chromium.

The HTML is the ground truth. Reading the printed PDF back and comparing its Markdown tables
cell by cell with the HTML's measures how well tables in PDFs are read.
"""

from __future__ import annotations

import html
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ingestion.parsing.tables import text_and_tables

_QUARTERS = ["April 1, 2023", "July 1, 2023", "September 30, 2023", "December 30, 2023"]
_PRODUCTS = ["Widget", "Gadget", "Sprocket", "Flange", "Bracket", "Gasket", "Valve", "Hinge"]
_CITIES = ["Boston", "Denver", "Austin", "Seattle", "Chicago", "Atlanta", "Phoenix", "Dallas"]


@dataclass(frozen=True)
class KnownTable:
    caption: str
    rows: list[list[str]]  # the header row first

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in self.rows[0])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
            for row in self.rows[1:]
        )
        return (
            f"<table><caption>{html.escape(self.caption)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        )


def income_statement() -> KnownTable:
    rows = [["Quarter ended", "Revenue", "Operating income", "Net income"]]
    for number, quarter in enumerate(_QUARTERS):
        revenue = 1204.5 + 97.3 * number
        rows.append(
            [quarter, f"{revenue:,.1f}", f"{revenue * 0.26:,.1f}", f"{revenue * 0.21:,.1f}"]
        )
    return KnownTable("Condensed income statement (USD millions)", rows)


def price_list(count: int, *, seed: int = 7) -> KnownTable:
    chooser = random.Random(seed)
    rows = [["Item", "Model", "Unit price (EUR)", "In stock", "Warehouse"]]
    for number in range(count):
        rows.append(
            [
                _PRODUCTS[number % len(_PRODUCTS)],
                f"{chooser.choice('ABCDEFGH')}-{100 + number}",
                f"{chooser.uniform(2, 900):.2f}",
                str(chooser.randint(0, 5000)),
                chooser.choice(_CITIES),
            ]
        )
    return KnownTable("Price list 2024", rows)


def shift_schedule() -> KnownTable:
    rows = [["Day", "Early shift", "Late shift", "Night shift"]]
    people = ["Ana Ruiz", "Ben Okafor", "Chen Wei", "Dana Levi", "Eli Park", "Fay Moss"]
    for number, day in enumerate(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]):
        rows.append([day, *(people[(number + shift) % len(people)] for shift in range(3))])
    return KnownTable("Support rota, week 12", rows)


def known_tables() -> list[KnownTable]:
    return [income_statement(), shift_schedule(), price_list(60)]


def table_page_html(tables: list[KnownTable], *, title: str = "Quarterly figures") -> str:
    sections = "".join(
        f"<h2>{html.escape(table.caption.split(' (')[0])}</h2>"
        f"<p>The table below is kept up to date by the finance office.</p>{table.html()}"
        for table in tables
    )
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:11pt} table{border-collapse:collapse;margin:8pt 0}"
        "th,td{border:1px solid #444;padding:3pt 6pt;text-align:left}"
        f"</style></head><body><h1>{html.escape(title)}</h1>{sections}</body></html>"
    )


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def print_html_to_pdf(page_html: str, pdf_path: Path) -> Path:
    """Print an HTML page to PDF with headless Chromium, as a person would "Save as PDF"."""
    browser = chromium()
    if browser is None:
        raise RuntimeError("Chromium is needed to print HTML to PDF (bin/setup --dev installs it).")
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "page.html"
        source.write_text(page_html, encoding="utf-8")
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-pdf-header-footer",
                f"--user-data-dir={folder}/profile",
                f"--print-to-pdf={pdf_path}",
                source.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return pdf_path


def tables_in(text: str) -> list[list[list[str]]]:
    return [part for part in text_and_tables(text) if isinstance(part, list)]


def cell_accuracy(expected: list[KnownTable], text: str) -> dict[str, int]:
    """How many of the known tables' cells were read, each in its row under its column.

    A printed table that runs over pages comes back as one table per page, each with its
    header row; the body rows of all of them are compared with the known rows in order.
    """
    found = tables_in(text)
    cells = correct = 0
    for table in expected:
        header = table.rows[0]
        # The header read wrong, the table's rows are not found under it: all count as wrong.
        read_rows = [row for read in found if read and read[0] == header for row in read[1:]]
        header_read = any(read and read[0] == header for read in found)
        cells += len(header)
        correct += len(header) if header_read else 0
        for number, row in enumerate(table.rows[1:]):
            cells += len(row)
            if number < len(read_rows):
                read = read_rows[number]
                correct += sum(1 for a, b in zip(row, read, strict=False) if a == b)
    return {"cells": cells, "correct": correct}
