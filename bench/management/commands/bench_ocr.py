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
from bench.ocr_pages import (
    CONDITIONS,
    character_error_rate,
    ocr,
    page_picture,
    page_text_layer,
    word_recall,
)
from ingestion.parsing import ParseLimits
from ingestion.parsing.ocr import ocr_unavailable_reason, ocr_version

# Pages with less text than this (a cover, a blank page) say little about recognition.
MIN_PAGE_CHARS = 300


class Command(BaseCommand):
    help = (
        "Render pages of the sample PDFs as scans (300 dpi, 150 dpi, degraded), read them by "
        "OCR and print, per folder of PDFs and condition, the character error rate against "
        "each page's text layer, the share of its words read, and pages per second, as JSON."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--samples",
            default="",
            help="folder of PDFs, searched recursively (default: the shared samples)",
        )
        parser.add_argument("--pages-per-pdf", type=int, default=1)
        parser.add_argument(
            "--write-scans",
            default="",
            metavar="DIR",
            help="instead, make DIR a copy of the shared data folder whose sample PDFs are "
            "scans (pages as 300 dpi pictures, no text layer), for `evaluate --kit --data DIR`",
        )
        parser.add_argument(
            "--max-pdfs", type=int, default=8, help="PDFs read from each folder, spread evenly"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import pypdfium2

        if options["write_scans"]:
            written = write_scanned_copy(shared_data_dir(), Path(options["write_scans"]))
            self.stdout.write(json.dumps({"scanned_pdfs": written}))
            return
        limits = ParseLimits(ocr_languages=settings.OCR_LANGUAGES)
        reason = ocr_unavailable_reason(limits.ocr_languages)
        if reason:
            raise CommandError(f"{reason}.")
        folder = Path(options["samples"]) if options["samples"] else shared_data_dir() / "samples"
        folders = sorted({path.parent for path in folder.rglob("*.pdf")})
        pdfs = [
            pdf
            for each in folders
            for pdf in _spread(sorted(each.glob("*.pdf")), options["max_pdfs"])
        ]
        if not pdfs:
            raise CommandError(f"No PDFs under {folder}.")
        load = machine_load()
        # Per collection (the folder a PDF is in: forms read apart from prose), per condition.
        results: dict[str, dict[str, dict[str, list[float]]]] = {}
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
                    collection = results.setdefault(path.parent.name, {})
                    for condition in CONDITIONS:
                        picture = page_picture(pdf, index, condition)
                        started = time.perf_counter()
                        read = ocr(picture, limits)
                        measured = collection.setdefault(
                            condition.name,
                            {"cer": [], "cer_no_spaces": [], "word_recall": [], "seconds": []},
                        )
                        measured["seconds"].append(time.perf_counter() - started)
                        measured["word_recall"].append(word_recall(reference, read))
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
            "collections": {
                collection: {name: _summary(measured) for name, measured in conditions.items()}
                for collection, conditions in results.items()
            },
            "pages_read": pages_read,
        }
        self.stdout.write(json.dumps(report, indent=2))


def write_scanned_copy(source: Path, target: Path) -> int:
    """A copy of `source` in `target` whose PDFs under samples/ are scans; the rest is linked.

    File names stay, so the kit's golden questions name the same documents.
    """
    import pypdfium2

    scans = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        copy = target / relative
        if path.is_dir() or copy.exists():
            continue
        copy.parent.mkdir(parents=True, exist_ok=True)
        if relative.parts[0] != "samples" or path.suffix.lower() != ".pdf":
            copy.symlink_to(path.resolve())
            continue
        pdf = pypdfium2.PdfDocument(path)
        try:
            pages = [page_picture(pdf, index, CONDITIONS[0]) for index in range(len(pdf))]
        finally:
            pdf.close()
        pages[0].save(
            copy, "PDF", resolution=CONDITIONS[0].dpi, save_all=True, append_images=pages[1:]
        )
        scans += 1
    return scans


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
        "pages": len(rates),
        "cer_mean": round(statistics.fmean(rates), 4),
        "cer_median": round(statistics.median(rates), 4),
        "cer_worst": round(max(rates), 4),
        "cer_ignoring_spaces_mean": round(statistics.fmean(bare), 4),
        "word_recall_mean": round(statistics.fmean(measured["word_recall"]), 4),
        "pages_per_second": round(len(seconds) / sum(seconds), 3),
    }
