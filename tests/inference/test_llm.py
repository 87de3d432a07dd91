from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from inference.llm import (
    EndpointPool,
    LLMUnavailableError,
    PoolConfig,
    StreamEvent,
    tls_context,
)
from inference.prompting import SAMPLING, Source, build_messages
from inference.simulator import SimulatorHandle, run_simulator_in_thread, simulate_completion

_T = TypeVar("_T")

SOURCES = [
    Source(
        1,
        "Leave policy",
        "hr/leave.pdf",
        3,
        "Annual leave",
        "Full-time employees receive 25 days of paid annual leave per year.",
    ),
    Source(2, "Travel", "travel.docx", None, "", "Hotels are reimbursed up to 150 euros."),
]
MESSAGES = build_messages("How many days of paid annual leave do employees get?", SOURCES, [])
EXPECTED_ANSWER = "Full-time employees receive 25 days of paid annual leave per year [1]."


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    return asyncio.run(coroutine)


async def collect(pool: EndpointPool) -> list[StreamEvent]:
    return [event async for event in pool.stream_chat(MESSAGES, sampling=SAMPLING)]


def text_of(events: list[StreamEvent], kind: str) -> str:
    return "".join(event.text for event in events if event.kind == kind)


@pytest.fixture
def simulators() -> Iterator[list[SimulatorHandle]]:
    handles: list[SimulatorHandle] = []
    yield handles
    for handle in handles:
        handle.stop()


def start(simulators: list[SimulatorHandle], **options: Any) -> SimulatorHandle:
    handle = run_simulator_in_thread(**options)
    simulators.append(handle)
    return handle


def test_every_reasoning_format_gives_the_same_split(simulators: list[SimulatorHandle]) -> None:
    formats: list[dict[str, Any]] = [
        {"reasoning_field": "reasoning"},
        {"reasoning_field": "reasoning_content"},
        {"reasoning_field": "inline"},
        {"reasoning_field": "inline", "inline_no_open_tag": True},
    ]
    results = []
    for options in formats:
        pool = EndpointPool(PoolConfig(urls=[start(simulators, **options).url]))
        reasoning, answer, final = run(pool.complete(MESSAGES, sampling=SAMPLING))
        assert final.kind == "done"
        results.append((reasoning, answer))

    reasoning, answer = results[0]
    assert reasoning.startswith("The question asks about days, paid, annual, leave")
    assert answer == EXPECTED_ANSWER
    assert results == [(reasoning, answer)] * len(formats)


def test_every_event_carries_the_split_so_far(simulators: list[SimulatorHandle]) -> None:
    handle = start(simulators, reasoning_field="inline", inline_no_open_tag=True)
    events = run(collect(EndpointPool(PoolConfig(urls=[handle.url]))))

    reasoning = answer = ""
    for event in events:
        if event.kind == "reasoning":
            reasoning += event.text
        elif event.kind == "answer":
            answer += event.text
        assert event.output == (reasoning, answer)
    assert events[-1].kind == "done"
    assert events[-1].output.answer == EXPECTED_ANSWER


def test_a_stream_reports_model_usage_and_finish(simulators: list[SimulatorHandle]) -> None:
    handle = start(simulators, tokens_per_s=2000)
    events = run(collect(EndpointPool(PoolConfig(urls=[f"{handle.url}/v1/"]))))

    kinds = [event.kind for event in events]
    assert kinds[-1] == "done"
    assert kinds.index("answer") > kinds.index("reasoning")
    assert len([kind for kind in kinds if kind == "answer"]) > 1, "the answer arrives in pieces"
    done = events[-1]
    assert (done.model, done.endpoint, done.finish_reason) == (
        "deepseek-r1-simulator",
        handle.url,
        "stop",
    )
    assert done.usage is not None
    assert done.usage["completion_tokens"] > 0


def test_it_fails_over_when_an_endpoint_errors_before_the_first_token(
    simulators: list[SimulatorHandle],
) -> None:
    broken = start(simulators, fail_rate=1.0)
    working = start(simulators)
    pool = EndpointPool(PoolConfig(urls=[broken.url, working.url]))

    for _ in range(3):
        events = run(collect(pool))
        assert text_of(events, "answer") == EXPECTED_ANSWER
        assert events[-1].endpoint == working.url

    broken_status, working_status = pool.status()
    assert broken_status["healthy"] is False
    assert "HTTP 500" in broken_status["last_error"]
    assert working_status["healthy"] is True
    assert [record.status for record in broken.stats.records()] == ["failed"]


def test_it_keeps_answering_when_an_endpoint_stops_and_takes_it_back_when_it_returns(
    simulators: list[SimulatorHandle],
) -> None:
    first = start(simulators)
    second = start(simulators)
    pool = EndpointPool(PoolConfig(urls=[first.url, second.url], down_cooldown_s=0.2))

    async def scenario() -> None:
        used = {(await pool.complete(MESSAGES, sampling=SAMPLING))[2].endpoint for _ in range(4)}
        assert used == {first.url, second.url}, "both endpoints share the load"

        first.stop()
        for _ in range(4):
            _, answer, final = await pool.complete(MESSAGES, sampling=SAMPLING)
            assert (answer, final.endpoint) == (EXPECTED_ANSWER, second.url)
        assert pool.status()[0]["healthy"] is False
        assert "connection" in pool.status()[0]["last_error"]

        simulators.append(run_simulator_in_thread(port=first.port))
        await asyncio.sleep(0.25)
        # The first request after the cool-down triggers a probe in the background;
        # the endpoint gets traffic again as soon as the probe succeeds.
        used = set()
        for _ in range(20):
            used.add((await pool.complete(MESSAGES, sampling=SAMPLING))[2].endpoint)
            if first.url in used:
                break
        assert first.url in used
        assert [status["healthy"] for status in pool.status()] == [True, True]
        await pool.aclose()

    run(scenario())


def test_a_health_check_marks_endpoints_down_and_up(simulators: list[SimulatorHandle]) -> None:
    handle = start(simulators)
    pool = EndpointPool(PoolConfig(urls=[handle.url]))
    assert run(pool.health_check()) == {handle.url: True}

    handle.stop()
    assert run(pool.health_check()) == {handle.url: False}
    assert pool.status()[0]["healthy"] is False

    start(simulators, port=handle.port)
    assert run(pool.health_check()) == {handle.url: True}


def test_it_raises_a_clear_error_when_every_endpoint_is_down(
    simulators: list[SimulatorHandle],
) -> None:
    gone = start(simulators)
    gone.stop()
    failing = start(simulators, fail_rate=1.0)
    pool = EndpointPool(PoolConfig(urls=[gone.url, failing.url]))

    with pytest.raises(LLMUnavailableError) as raised:
        run(collect(pool))

    message = str(raised.value)
    assert message.startswith("No language model endpoint is reachable (tried: ")
    assert f"{gone.url}: connection failed" in message
    assert f"{failing.url}: HTTP 500" in message


def test_a_stream_cut_mid_answer_ends_with_a_cut_error_and_keeps_the_text(
    simulators: list[SimulatorHandle],
) -> None:
    complete_run = run(collect(EndpointPool(PoolConfig(urls=[start(simulators).url]))))
    usage = complete_run[-1].usage
    assert usage is not None
    completion_tokens = usage["completion_tokens"]
    cutting = start(simulators, cut_after_tokens=completion_tokens - 3)
    spare = start(simulators)
    pool = EndpointPool(PoolConfig(urls=[cutting.url, spare.url]))

    events = run(collect(pool))

    final = events[-1]
    assert (final.kind, final.cut, final.endpoint) == ("error", True, cutting.url)
    assert final.error is not None
    assert "cut off" in final.error
    answer = text_of(events, "answer")
    assert answer
    assert EXPECTED_ANSWER.startswith(answer)
    assert answer != EXPECTED_ANSWER
    assert spare.stats.records() == [], "no silent retry that would repeat the text"
    assert [record.status for record in cutting.stats.records()] == ["cut"]


def test_a_first_token_slower_than_the_timeout_fails_over(
    simulators: list[SimulatorHandle],
) -> None:
    slow = start(simulators, ttft_ms=3000)
    fast = start(simulators)
    pool = EndpointPool(PoolConfig(urls=[slow.url, fast.url], first_token_timeout_s=0.8))

    async def scenario() -> tuple[float, list[StreamEvent]]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        events = await collect(pool)
        return loop.time() - started, events

    elapsed, events = run(scenario())
    assert events[-1].endpoint == fast.url
    assert text_of(events, "answer") == EXPECTED_ANSWER
    assert elapsed < 2.5
    assert pool.status()[0]["last_error"] == "timed out"


def test_concurrent_requests_go_to_the_least_busy_endpoint(
    simulators: list[SimulatorHandle],
) -> None:
    first = start(simulators, tokens_per_s=400)
    second = start(simulators, tokens_per_s=400)
    pool = EndpointPool(PoolConfig(urls=[first.url, second.url]))

    async def scenario() -> list[list[StreamEvent]]:
        return list(await asyncio.gather(collect(pool), collect(pool)))

    endpoints = {events[-1].endpoint for events in run(scenario())}
    assert endpoints == {first.url, second.url}


def test_the_api_key_is_sent_to_the_endpoint(simulators: list[SimulatorHandle]) -> None:
    guarded = start(simulators, api_key="secret")

    _, answer, _ = run(
        EndpointPool(PoolConfig(urls=[guarded.url], api_key="secret")).complete(
            MESSAGES, sampling=SAMPLING
        )
    )
    assert answer == EXPECTED_ANSWER

    with pytest.raises(LLMUnavailableError, match="HTTP 401"):
        run(
            EndpointPool(PoolConfig(urls=[guarded.url], api_key="wrong")).complete(
                MESSAGES, sampling=SAMPLING
            )
        )


def test_an_answer_longer_than_the_time_limit_is_cut(simulators: list[SimulatorHandle]) -> None:
    paced = start(simulators, tokens_per_s=20)
    pool = EndpointPool(PoolConfig(urls=[paced.url], total_timeout_s=1.0))

    events = run(collect(pool))

    final = events[-1]
    assert (final.kind, final.cut) == ("error", True)
    assert final.error == "The answer was cut off at the time limit of 1 s."
    streamed = text_of(events, "reasoning")
    assert streamed
    assert simulate_completion(MESSAGES).reasoning.startswith(streamed)


def test_a_request_the_model_refuses_ends_with_its_reason_and_keeps_the_endpoint_up(
    simulators: list[SimulatorHandle],
) -> None:
    endpoint = start(simulators)
    pool = EndpointPool(PoolConfig(urls=[endpoint.url]))

    async def refused() -> list[StreamEvent]:
        return [event async for event in pool.stream_chat([], sampling=SAMPLING)]

    (event,) = run(refused())

    assert event.kind == "error"
    assert event.error == (
        "The language model refused the request (HTTP 400: messages must be a non-empty list.)."
    )
    assert all(status["healthy"] for status in pool.status())


def test_health_checks_and_streams_from_new_event_loops_read_no_ca_bundle(
    simulators: list[SimulatorHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading the CA bundle takes tens of milliseconds of the event loop every stream shares;
    the process reads it once, not at each health check or each fresh loop's first request."""
    import httpcore2

    tls_context()  # the process's one read (the server makes it when it starts)
    reads: list[None] = []
    read_bundle = httpcore2.default_ssl_context

    def counted(**options: Any) -> Any:
        reads.append(None)
        return read_bundle(**options)

    monkeypatch.setattr(httpcore2, "default_ssl_context", counted)
    pool = EndpointPool(PoolConfig(urls=[start(simulators).url]))
    for _ in range(3):  # each asyncio.run is a new loop, as in a Celery task
        assert run(pool.health_check()) == {pool.status()[0]["url"]: True}
        assert text_of(run(collect(pool)), "answer") == EXPECTED_ANSWER
    assert reads == []
