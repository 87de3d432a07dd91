"""The OCR and table benchmarks, run small: they must finish and report their figures."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from pypdf import PdfReader, PdfWriter

from bench.ocr_pages import character_error_rate, edit_distance


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "abc", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("same", "same", 0)],
)
def test_edit_distance_counts_the_fewest_edits(a: str, b: str, distance: int) -> None:
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_the_error_rate_ignores_how_dashes_bullets_and_spacing_were_printed() -> None:
    assert character_error_rate("\u2022 Use dh \u2013 now", "Use  dh - now") == 0.0
    assert character_error_rate("python support", "pyth0n support") == pytest.approx(1 / 14)


def test_bench_ocr_reports_the_error_rate_and_speed_of_each_condition(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer = PdfWriter()
    writer.add_page(PdfReader(shared_data / "samples" / "pdf" / "fhs-3.0.pdf").pages[12])
    out = io.BytesIO()
    writer.write(out)
    (tmp_path / "root-fs.pdf").write_bytes(out.getvalue())

    call_command("bench_ocr", "--samples", str(tmp_path))

    report = json.loads(capsys.readouterr().out)
    assert report["pages"] == 1
    conditions = report["collections"][tmp_path.name]
    assert set(conditions) == {"300dpi", "150dpi", "degraded_150dpi_rotated_jpeg"}
    # A clean 300 dpi rendering of a plain page is read almost without a mistake.
    assert conditions["300dpi"]["cer_mean"] < 0.05
    assert conditions["300dpi"]["word_recall_mean"] > 0.95
    assert conditions["300dpi"]["pages_per_second"] > 0
