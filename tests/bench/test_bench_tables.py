"""The table benchmark, run small: cell accuracy, and table questions searched end to end."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command

from bench.table_pdfs import TableQuestion


def test_a_table_answer_counts_only_with_its_row_and_as_a_whole_cell() -> None:
    in_stock = TableQuestion("How many B-113 are in stock?", "37", "B-113", "In stock")
    assert in_stock.answered_by("| Widget | B-113 | 12.50 | 37 | Denver |")
    # The number with another row's label, or inside a bigger number, is not the answer.
    assert not in_stock.answered_by("| Widget | B-114 | 12.50 | 37 | Denver |")
    assert not in_stock.answered_by("| Widget | B-113 | 12.50 | 1,370.5 | Denver |")
    # In place: on its row's line, with its column's name in the passage.
    table = "| Item | Model | Unit price (EUR) | In stock |\n| Widget | B-113 | 12.50 | 37 |"
    assert in_stock.answered_in_place_by(table)
    assert not in_stock.answered_in_place_by("Widget B-113 12.50\n37 Denver In stock")


@pytest.mark.slow
def test_bench_tables_reports_retrieval_on_table_questions_against_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    call_command("bench_tables", "--rows", "12")

    report = json.loads(capsys.readouterr().out)
    assert report["cell_accuracy_ruled_tables"] == 1.0
    assert report["table_questions"] >= 15
    for key in ("table_hit@1", "table_hit@5", "table_hit_in_place@1", "table_hit_in_place@5"):
        tables, words = report[key], report[f"baseline_{key}"]
        assert 0 < words <= 1
        assert 0 < tables <= 1
        # Tables kept as tables are found at least as well as the same tables read as words.
        assert tables >= words, key
        assert report[f"difference_{key}"] == pytest.approx(tables - words, abs=1e-4)
    assert report["table_hit@5"] >= 0.9
    # Read as words, a number loses its column's name; kept as a table, it does not.
    assert report["table_hit_in_place@5"] > report["baseline_table_hit_in_place@5"]
