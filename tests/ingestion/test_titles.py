from __future__ import annotations

import pytest

from ingestion.titles import (
    best_title,
    file_label,
    file_name_words,
    title_is_junk,
    without_site_name,
)


@pytest.mark.parametrize(
    "title",
    [
        "0000320193-22-000070",
        "20071229X02007",
        "Microsoft Word - draft3.docx",
        "untitled",
        "Untitled document",
        "Document1",
        "Scan0001",
        "HP Scan",
        "KONICA MINOLTA bizhub C364",
        "report_final_v2.pdf",
        "3f2a9c0d-77b1-4e61-9a3e-0c2b5d8e1f40",
        "",
        "Q3",
    ],
)
def test_titles_that_say_nothing_are_junk(title: str) -> None:
    assert title_is_junk(title)


@pytest.mark.parametrize(
    "title",
    [
        "Travel policy",
        "Filesystem Hierarchy Standard",
        "Annual report 2023",
        "CREATE TABLE",
        "Form 10-Q for the quarter ended July 1, 2023",
    ],
)
def test_real_titles_are_kept(title: str) -> None:
    assert not title_is_junk(title)


def test_the_first_candidate_that_is_not_junk_wins() -> None:
    assert best_title(["0000320193-22-000070", "Apple Inc. Form 10-Q"], stem="x") == (
        "Apple Inc. Form 10-Q"
    )


def test_an_office_prefix_and_extension_are_cut_from_a_useful_title() -> None:
    assert best_title(["Microsoft Word - Annual report 2023.docx"], stem="a1") == (
        "Annual report 2023"
    )


def test_the_file_name_is_the_fallback_and_junk_only_when_nothing_else_is_left() -> None:
    assert best_title(["untitled", ""], stem="travel_policy-2024") == "travel policy-2024"
    assert best_title(["untitled"], stem="20071229X02007") == "untitled"


def test_the_site_name_after_the_page_heading_is_dropped() -> None:
    page = "Uploading Files \u2014 Flask Documentation (2.2.x)"
    assert without_site_name(page, "Uploading Files") == "Uploading Files"
    long_heading = "functools \u2014 Higher-order functions"
    assert without_site_name(f"{long_heading} \u2014 Python 3.11 documentation", long_heading) == (
        long_heading
    )
    # Without the page's heading before the separator, the separator may be the title's own.
    assert without_site_name("Q3 - results", "Summary") == "Q3 - results"


def test_a_file_label_is_given_only_when_it_adds_to_the_title() -> None:
    assert file_label("amazon_10q_2023-q2.pdf", "Form 10-Q") == "amazon 10q 2023 q2"
    assert file_label("20071229X02007.pdf", "Aviation Accident Final Report") == ""
    assert file_label("amzn-20230630.pdf", "Form 10-Q") == "amzn 20230630"
    assert file_label("Scan0001.pdf", "Quarterly report") == ""
    assert file_label("travel-policy.md", "Travel policy") == ""


def test_file_name_words_keep_the_name_as_typed_and_its_words() -> None:
    assert file_name_words("20071229X02007.pdf") == "20071229X02007"
    assert file_name_words("swarm_unlock-key.md") == "swarm_unlock-key swarm unlock key"
