from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

import openai
import pytest

from inference.llm import EndpointPool, PoolConfig
from inference.prompting import SAMPLING, Source, build_messages
from inference.r1_output import CLOSE_TAG, Piece, R1Output, ReasoningSplitter, strip_think_blocks
from inference.simulator import SIMULATOR_MODEL, run_simulator_in_thread

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

MESSAGES = build_messages(
    "How many days of paid annual leave do employees get?",
    [Source(1, "Leave policy", "hr/leave.pdf", 3, "", "Employees receive 25 days of leave.")],
    [],
)
SERVER_STYLES: dict[str, dict[str, Any]] = {
    "reasoning field": {"reasoning_field": "reasoning"},
    "reasoning_content field": {"reasoning_field": "reasoning_content"},
    "inline": {"reasoning_field": "inline"},
    "inline without opening tag": {"reasoning_field": "inline", "inline_no_open_tag": True},
}


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


def test_a_reclassified_piece_replaces_the_reasoning_read_before() -> None:
    read = R1Output().extended(Piece("reasoning", "It is 25 days [1]."))
    assert read == R1Output("It is 25 days [1].", "")
    reclassified = read.extended(Piece("answer", "It is 25 days [1]."), reclassified=True)
    assert reclassified == R1Output("", "It is 25 days [1].")


def test_think_blocks_are_stripped_wherever_they_sit() -> None:
    assert strip_think_blocks("<think>\nSource 1 fits.\n</think>\n\nIt is 25 days [1].") == (
        "It is 25 days [1]."
    )
    assert strip_think_blocks("It is 25 days <think>or 26?</think>[1].") == "It is 25 days [1]."
    assert strip_think_blocks("Source 1 fits.\n</think>\nIt is 25 days [1].") == (
        "It is 25 days [1]."
    )
    assert strip_think_blocks("  It is 25 days [1].\n") == "It is 25 days [1]."


async def _streamed_output(url: str) -> R1Output:
    pool = EndpointPool(PoolConfig(urls=[url]))
    try:
        reasoning, answer, final = await pool.complete(MESSAGES, sampling=SAMPLING)
    finally:
        await pool.aclose()
    assert final.kind == "done"
    return R1Output(reasoning, answer)


@pytest.mark.parametrize("style", SERVER_STYLES.values(), ids=SERVER_STYLES.keys())
def test_a_whole_completion_splits_like_the_streamed_one(style: dict[str, Any]) -> None:
    with run_simulator_in_thread(**style) as simulator:
        streamed = asyncio.run(_streamed_output(simulator.url))
        with openai.OpenAI(base_url=f"{simulator.url}/v1", api_key="EMPTY") as sdk:
            message = (
                sdk.chat.completions.create(
                    model=SIMULATOR_MODEL,
                    messages=cast("list[ChatCompletionMessageParam]", MESSAGES),
                )
                .choices[0]
                .message
            )
    extra = message.model_extra or {}
    splitter = ReasoningSplitter()
    splitter.feed(
        content=message.content,
        reasoning=extra.get("reasoning") or extra.get("reasoning_content"),
    )
    splitter.finish()

    assert streamed.reasoning.startswith("The question asks about")
    assert streamed.answer.startswith("Employees receive 25 days of leave")
    assert splitter.output == streamed
    assert strip_think_blocks(message.content or "") == streamed.answer
