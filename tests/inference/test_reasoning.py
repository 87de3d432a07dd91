from __future__ import annotations

from inference.reasoning import CLOSE_TAG, Piece, ReasoningSplitter


def split(deltas: list[str]) -> tuple[str, str, list[Piece]]:
    splitter = ReasoningSplitter()
    pieces: list[Piece] = []
    for delta in deltas:
        pieces += splitter.feed(content=delta)
    pieces += splitter.finish()
    reasoning = "".join(piece.text for piece in pieces if piece.kind == "reasoning")
    answer = "".join(piece.text for piece in pieces if piece.kind == "answer")
    assert (splitter.reasoning, splitter.answer) == (reasoning, answer)
    return reasoning, answer, pieces


def test_it_separates_the_think_block_from_the_answer() -> None:
    reasoning, answer, _ = split(["<think>\nSource 1 fits.\n</think>\n\nIt is 25 days [1]."])
    assert reasoning == "Source 1 fits."
    assert answer == "It is 25 days [1]."


def test_it_finds_tags_split_across_deltas() -> None:
    deltas = ["<thi", "nk>", "Source 1 ", "fits.</th", "ink", ">\n\nIt is ", "25 days [1]."]
    reasoning, answer, _ = split(deltas)
    assert (reasoning, answer) == ("Source 1 fits.", "It is 25 days [1].")


def test_it_gives_the_same_split_one_character_at_a_time() -> None:
    text = "<think>\nSource 1 fits.\n</think>\n\nIt is 25 days [1]."
    assert split(list(text))[:2] == ("Source 1 fits.", "It is 25 days [1].")


def test_text_before_the_closing_tag_is_reasoning_when_the_template_opened_the_block() -> None:
    reasoning, answer, _ = split(["Source 1 ", "fits.\n</", "think>\n\nIt is 25 days [1]."])
    assert (reasoning, answer) == ("Source 1 fits.", "It is 25 days [1].")


def test_text_without_any_tag_becomes_the_answer_when_the_stream_ends() -> None:
    splitter = ReasoningSplitter()
    streamed = splitter.feed(content="It is 25 days ") + splitter.feed(content="[1].")
    assert [piece.kind for piece in streamed] == ["reasoning", "reasoning"]
    assert splitter.finish() == [Piece("answer", "It is 25 days [1].")]
    assert splitter.reclassified
    assert (splitter.reasoning, splitter.answer) == ("", "It is 25 days [1].")


def test_a_think_block_cut_short_stays_reasoning() -> None:
    reasoning, answer, _ = split(["<think>Source 1 fits", " but I am still"])
    assert (reasoning, answer) == ("Source 1 fits but I am still", "")


def test_it_holds_back_no_more_than_a_tag_while_streaming() -> None:
    splitter = ReasoningSplitter()
    text = "Reading source 1 carefully, it covers annual leave </thin"
    released = "".join(piece.text for piece in splitter.feed(content="<think>" + text))
    assert text.startswith(released)
    assert len(text) - len(released) < len(CLOSE_TAG)


def test_reasoning_fields_are_reasoning_and_content_is_the_answer() -> None:
    splitter = ReasoningSplitter()
    pieces = splitter.feed(content="")
    pieces += splitter.feed(reasoning="\nSource 1 ")
    pieces += splitter.feed(reasoning="fits.\n")
    pieces += splitter.feed(content="\n\nIt is 25 days [1].")
    pieces += splitter.finish()
    assert pieces == [
        Piece("reasoning", "Source 1"),
        Piece("reasoning", " fits."),
        Piece("answer", "It is 25 days [1]."),
    ]
