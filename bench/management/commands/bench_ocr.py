"""How well and how fast scans are read: OCR of rendered sample pages against their text layer."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation.throwaway_runs import shared_data_dir
from bench.measures import machine_load, processor_name
from bench.ocr_pages import CONDITIONS, character_error_rate, ocr, page_picture, page_text_layer
from ingestion.parsing import ParseLimits
from ingestion.parsing.ocr import ocr_unavailable_reason, ocr_version

# Pages with less text than this (a cover, a blank page) say little about recognition.
MIN_PAGE_CHARS = 300


class Command(BaseCommand):
    help = (
        "Render pages of the sample PDFs as scans (300 dpi, 150 dpi, degraded), read them by "
        "OCR and print the character error rate against each page's text layer, as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--samples",
            default="",
            help="folder of PDFs, searched recursively (default: the shared samples)",
        )
        parser.add_argument("--pages-per-pdf", type=int, default=1)
        parser.add_argument("--max-pdfs", type=int, default=12)

    def handle(self, *args: Any, **options: Any) -> None:
        import pypdfium2

        limits = ParseLimits(ocr_languages=settings.OCR_LANGUAGES)
        reason = ocr_unavailable_reason(limits.ocr_languages)
        if reason:
            raise CommandError(f"{reason}.")
        folder = Path(options["samples"]) if options["samples"] else shared_data_dir() / "samples"
        pdfs = _spread(sorted(folder.rglob("*.pdf")), options["max_pdfs"])
        if not pdfs:
            raise CommandError(f"No PDFs under {folder}.")
        load = machine_load()
        results: dict[str, dict[str, list[float]]] = {
            condition.name: {"cer": [], "cer_no_spaces": [], "seconds": []}
            for condition in CONDITIONS
        }
        pages_read: list[str] = []
        for path in pdfs:
            pdf = pypdfium2.PdfDocument(path)
            try:
                worded = [
                    index
                    for index in range(len(pdf))
                    if len(page_text_layer(pdf, index).strip()) >= MIN_PAGE_CHARS
                ]
                for index in _spread(worded, options["pages_per_pdf"]):
                    reference = page_text_layer(pdf, index)
                    pages_read.append(f"{path.name}#{index + 1}")
                    for condition in CONDITIONS:
                        picture = page_picture(pdf, index, condition)
                        started = time.perf_counter()
                        read = ocr(picture, limits)
                        results[condition.name]["seconds"].append(time.perf_counter() - started)
                        measured = results[condition.name]
                        measured["cer"].append(character_error_rate(reference, read))
                        measured["cer_no_spaces"].append(
                            character_error_rate(reference, read, spaces=False)
                        )
            finally:
                pdf.close()
        report = {
            "processor": processor_name(),
            "machine": load,
            "tesseract": ocr_version(),
            "languages": limits.ocr_languages,
            "pages": len(pages_read),
            "pdfs": len(pdfs),
            "conditions": {name: _summary(measured) for name, measured in results.items()},
            "pages_read": pages_read,
        }
        self.stdout.write(json.dumps(report, indent=2))


def _spread(items: list[Any], count: int) -> list[Any]:
    """`count` items spread evenly over the list, first and last included."""
    if count <= 0 or len(items) <= count:
        return list(items)
    if count == 1:
        return [items[len(items) // 2]]
    step = (len(items) - 1) / (count - 1)
    return [items[round(number * step)] for number in range(count)]


def _summary(measured: dict[str, list[float]]) -> dict[str, float]:
    """Mean, median and worst page's error rate (spacing collapsed, and spacing ignored), and
    the pages read per second by one Tesseract."""
    rates, bare, seconds = measured["cer"], measured["cer_no_spaces"], measured["seconds"]
    return {
        "cer_mean": round(statistics.fmean(rates), 4),
        "cer_median": round(statistics.median(rates), 4),
        "cer_worst": round(max(rates), 4),
        "cer_ignoring_spaces_mean": round(statistics.fmean(bare), 4),
        "pages_per_second": round(len(seconds) / sum(seconds), 3),
    }
