from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import httpx
import openai
import pytest

from inference.prompting import (
    ABSTAIN_MARKER,
    SAMPLING,
    Source,
    Turn,
    build_messages,
    build_rewrite_messages,
    extract_citations,
)
from inference.simulator import SIMULATOR_MODEL, SimulatorHandle, run_simulator_in_thread

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

SOURCES = [
    Source(
        1,
        "Leave policy",
        "hr/leave.pdf",
        3,
        "Annual leave",
        "Full-time employees receive 25 days of paid annual leave per year. "
        "Leave requests go to the line manager.",
    ),
    Source(
        2,
        "Travel policy",
        "finance/travel.docx",
        None,
        "Hotels",
        "Hotel stays are reimbursed up to 150 euros per night.",
    ),
]
QUESTION = "How many days of paid annual leave do employees receive?"


def sdk_messages(messages: list[dict[str, str]]) -> list[ChatCompletionMessageParam]:
    return cast("list[ChatCompletionMessageParam]", messages)


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorHandle]:
    with run_simulator_in_thread() as handle:
        yield handle


@pytest.fixture
def client(simulator: SimulatorHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{simulator.url}/v1", api_key="EMPTY", max_retries=0) as sdk:
        yield sdk


def test_the_openai_sdk_streams_reasoning_then_a_cited_answer(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SIMULATOR_MODEL,
        messages=sdk_messages(build_messages(QUESTION, SOURCES, [])),
        stream=True,
        stream_options={"include_usage": True},
        temperature=SAMPLING["temperature"],
        top_p=SAMPLING["top_p"],
    )
    chunks = list(stream)

    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(
        (chunk.choices[0].delta.model_extra or {}).get("reasoning") or ""
        for chunk in chunks
        if chunk.choices
    )
    answer = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Source 1 mentions" in reasoning
    assert (
        answer.strip() == "Full-time employees receive 25 days of paid annual leave per year [1]."
    )
    finishing = [chunk for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert [chunk.choices[0].finish_reason for chunk in finishing] == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )


def test_the_stream_is_framed_like_vllm(simulator: SimulatorHandle) -> None:
    body = {"messages": build_messages(QUESTION, SOURCES, []), "stream": True}
    response = httpx.post(f"{simulator.url}/v1/chat/completions", json=body)

    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-1] == ""
    assert events[-2] == "data: [DONE]"
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(payload["id"] == payloads[0]["id"] for payload in payloads)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # Without stream_options there is no usage chunk: the last chunk finishes.
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in payloads[-1]


def test_a_non_streaming_answer_carries_reasoning_and_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=SIMULATOR_MODEL,
        messages=sdk_messages(build_messages(QUESTION, SOURCES, [])),
    )

    message = completion.choices[0].message
    assert completion.object == "chat.completion"
    assert "Source 1 mentions" in (message.model_extra or {})["reasoning"]
    assert message.content is not None
    assert extract_citations(message.content, len(SOURCES)) == ([1], [])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


def test_the_model_list_says_it_is_a_simulator_in_vllm_shape(simulator: SimulatorHandle) -> None:
    listing = httpx.get(f"{simulator.url}/v1/models").json()

    assert listing["object"] == "list"
    [card] = listing["data"]
    assert card["id"] == SIMULATOR_MODEL == "deepseek-r1-simulator"
    assert (card["object"], card["owned_by"], card["root"]) == ("model", "vllm", SIMULATOR_MODEL)
    assert card["max_model_len"] > 0


def test_health_answers_ok_with_an_empty_body(simulator: SimulatorHandle) -> None:
    response = httpx.get(f"{simulator.url}/health")
    assert (response.status_code, response.content) == (200, b"")


def test_bad_requests_get_vllm_error_bodies(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=SIMULATOR_MODEL, messages=[])
    assert empty.value.status_code == 400
    assert empty.value.body == {
        "message": "messages must be a non-empty list.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
        )
    assert "The model `gpt-4o` does not exist." in str(unknown.value)


def test_max_tokens_cuts_the_answer_with_finish_reason_length(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=SIMULATOR_MODEL,
        messages=sdk_messages(build_messages(QUESTION, SOURCES, [])),
        max_tokens=5,
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 5
    assert completion.choices[0].message.content is None


def test_it_abstains_when_no_source_is_about_the_question(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=SIMULATOR_MODEL,
        messages=sdk_messages(build_messages("Where can I park my bicycle?", SOURCES, [])),
    )
    answer = (completion.choices[0].message.content or "").strip()
    assert answer.startswith(ABSTAIN_MARKER)
    assert extract_citations(answer, len(SOURCES)) == ([], [])


def test_a_rewrite_request_gets_a_self_contained_query(client: openai.OpenAI) -> None:
    messages = build_rewrite_messages(
        "And for part-time staff?",
        [Turn("How many days of annual leave do employees get?", "25 days [1].")],
    )
    completion = client.chat.completions.create(
        model=SIMULATOR_MODEL,
        messages=sdk_messages(messages),
    )
    query = (completion.choices[0].message.content or "").strip()
    assert "\n" not in query
    assert "part-time staff" in query
    assert "annual leave" in query


def test_it_records_its_own_time_to_first_token_and_to_the_first_text_sent() -> None:
    with run_simulator_in_thread(ttft_ms=150, tokens_per_s=20) as slow:
        body = {"messages": build_messages(QUESTION, SOURCES, []), "stream": True}
        httpx.post(f"{slow.url}/v1/chat/completions", json=body)
        stats = httpx.get(f"{slow.url}/simulator/stats").json()

    [record] = stats["requests"]
    assert record["status"] == "completed"
    assert 0.15 <= record["ttft_s"] < 1.0
    assert [r.ttft_s for r in slow.stats.records()] == [record["ttft_s"]]
    # The first token, the think tag, sends nothing: the first text goes one token later.
    assert record["first_text_s"] >= record["ttft_s"] + 0.04


def test_an_api_key_is_enforced_like_vllm_does() -> None:
    with run_simulator_in_thread(api_key="secret") as guarded:
        refused = httpx.get(f"{guarded.url}/v1/models")
        allowed = httpx.get(f"{guarded.url}/v1/models", headers={"Authorization": "Bearer secret"})
        health = httpx.get(f"{guarded.url}/health")
    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert health.status_code == 200


def test_a_source_under_a_nested_heading_is_still_read() -> None:
    from inference.prompting import Source, build_messages
    from inference.simulator import simulate_completion

    source = Source(
        1, "Nightjar", "nightjar.md", None, "Project > Schedule", "The test flight is in autumn."
    )
    completion = simulate_completion(build_messages("When is the test flight?", [source], []))
    assert "[1]" in completion.answer
