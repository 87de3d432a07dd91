"""PDFs whose tables are known: HTML pages holding tables, printed to PDF by Chromium.

The HTML is the ground truth. Reading the printed PDF back and comparing its Markdown tables
cell by cell with the HTML's measures how well tables in PDFs are read.
"""

from __future__ import annotations

import html
import random
import re
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


@dataclass(frozen=True)
class TableQuestion:
    """A question whose answer is one cell of a known table."""

    question: str
    answer: str  # the cell's value
    row_label: str  # the cell of its row that names what the value belongs to
    column: str  # the header over the cell

    def answered_by(self, passage: str) -> bool:
        """The cell's value and its row's label in one passage: the numbers kept their rows."""
        return _holds(passage, self.answer) and self.row_label in passage

    def answered_in_place_by(self, passage: str) -> bool:
        """Stricter: the value on its row's line, under its column's name in the same passage."""
        row_lines = (line for line in passage.splitlines() if self.row_label in line)
        return self.column in passage and any(_holds(line, self.answer) for line in row_lines)


def _holds(text: str, value: str) -> bool:
    """`value` as a whole cell of `text`: a stock of 37 is not found in 1,370.5."""
    return re.search(rf"(?<![\w.,]){re.escape(value)}(?![\w]|[.,]\d)", text) is not None


def _cell(table: KnownTable, row_label: str, column: str) -> str:
    row = next(row for row in table.rows[1:] if row[0] == row_label)
    return row[table.rows[0].index(column)]


def table_questions(
    income: KnownTable, rota: KnownTable, price_lists: list[KnownTable]
) -> list[TableQuestion]:
    """Questions a person asks of these tables, worded as people word them; answers from the HTML.

    The price lists are asked about by model, and only of models found in one row of them
    all, so that a question has one answer (item names repeat, model numbers may too).
    """
    asked: list[tuple[str, KnownTable, str, str]] = [
        ("What was revenue in the quarter ended July 1, 2023?", income, "July 1, 2023", "Revenue"),
        (
            "Net income for the quarter ending December 30, 2023?",
            income,
            "December 30, 2023",
            "Net income",
        ),
        (
            "How much operating income was reported for the quarter ended April 1, 2023?",
            income,
            "April 1, 2023",
            "Operating income",
        ),
        ("revenue quarter ended September 30, 2023", income, "September 30, 2023", "Revenue"),
        (
            "What was the operating income in the quarter that ended on December 30, 2023?",
            income,
            "December 30, 2023",
            "Operating income",
        ),
        ("Net income, quarter ended July 1, 2023", income, "July 1, 2023", "Net income"),
        ("Who is on call on Tuesday night?", rota, "Tuesday", "Night shift"),
        ("Who works the early shift on Monday?", rota, "Monday", "Early shift"),
        ("Who has the late shift on Thursday?", rota, "Thursday", "Late shift"),
        ("Which colleague covers the night shift on Friday?", rota, "Friday", "Night shift"),
        ("Wednesday early shift: who is in?", rota, "Wednesday", "Early shift"),
        ("Who works late on Tuesday?", rota, "Tuesday", "Late shift"),
    ]
    models = [row[1] for prices in price_lists for row in prices.rows[1:]]
    per_list = 12 // len(price_lists)
    picked: list[list[str]] = []
    for prices in price_lists:
        rows = [row for row in prices.rows[1:] if models.count(row[1]) == 1]
        # Rows spread over the list, so that questions reach its later pages too.
        picked += [rows[index * (len(rows) - 1) // (per_list - 1)] for index in range(per_list)]
    wordings = [
        "What does the {item} {model} cost?",
        "How many {model} are in stock?",
        "Which warehouse holds the {item} model {model}?",
        "Unit price of model {model}?",
        "{model} price in euros",
        "Stock level for {item} {model}",
    ]
    # The column each wording asks for.
    columns = [
        "Unit price (EUR)",
        "In stock",
        "Warehouse",
        "Unit price (EUR)",
        "Unit price (EUR)",
        "In stock",
    ]
    questions = [
        TableQuestion(question, _cell(table, row_label, column), row_label, column)
        for question, table, row_label, column in asked
    ]
    header = price_lists[0].rows[0]
    for number, row in enumerate(dict.fromkeys(map(tuple, picked))):
        wording = wordings[number % len(wordings)]
        column = columns[number % len(wordings)]
        questions.append(
            TableQuestion(
                wording.format(item=row[0], model=row[1]),
                row[header.index(column)],
                row[1],
                column,
            )
        )
    return questions
