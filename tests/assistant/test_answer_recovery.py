"""A server killed while answers stream loses none of them: each is closed as interrupted.

The real server (`manage.py serve`, standalone) answers through a slow R1 simulator over the
portal, the REST API and the OpenAI-compatible API at once; it is killed with SIGKILL at a
random moment of the streams, and started again, four times. Every question a person had
started to read must then be in the ledger with its evidence, closed as interrupted with
what had streamed, and the ledger must verify.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from inference.simulator import SimulatorHandle, run_simulator_in_thread
from tests.ingestion.test_standalone import Server, wait_ready

ROUNDS = 4
STREAMS_PER_ROUND = 5
PASSWORD = "a-long-test-password"
POLICY = (
    "# Travel policy\n\nHotels may cost at most 180 euros a night in every city. "
    "Trains are booked in second class; flights only for trips over 600 kilometres.\n"
)

Stream = Callable[[str, int, threading.Event], None]


@pytest.fixture
def slow_model() -> Iterator[SimulatorHandle]:
    # Five tokens a second: a kill always finds answers in the middle of streaming.
    handle = run_simulator_in_thread(tokens_per_s=5.0)
    yield handle
    handle.stop()


def _read_events(response: httpx.Response, wanted: int, started: threading.Event) -> None:
    """Read on like a person watching the answer; only the server's death ends the reading."""
    assert response.status_code == 200, response.read()
    seen = 0
    # Leaving the stream early would close the connection and cancel the answer: keep reading.
    with contextlib.suppress(httpx.HTTPError):
        for line in response.iter_lines():
            if line.startswith("data:"):
                seen += 1
                if seen >= wanted:
                    started.set()


def rest_stream(server: Server, key: str) -> Stream:
    def stream(question: str, events: int, started: threading.Event) -> None:
        headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            body = {"question": question, "stream": True}
            with client.stream("POST", "/api/assistant/ask", json=body) as response:
                _read_events(response, events, started)

    return stream


def openai_stream(server: Server, key: str) -> Stream:
    def stream(question: str, events: int, started: threading.Event) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            body = {
                "stream": True,
                "messages": [{"role": "user", "content": question}],
            }
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                _read_events(response, events, started)

    return stream


def portal_stream(server: Server) -> Stream:
    def stream(question: str, events: int, started: threading.Event) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            client.get("/accounts/login/")
            token = client.cookies["csrftoken"]
            client.post(
                "/accounts/login/",
                data={"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": token},
            )
            headers = {"X-CSRFToken": client.cookies["csrftoken"], "Referer": server.url}
            with client.stream(
                "POST", "/ask/stream", json={"question": question}, headers=headers
            ) as response:
                _read_events(response, events, started)

    return stream


def kill_while_streaming(server: Server, streams: list[Stream], round_number: int) -> int:
    """Start the streams, kill the server once each has shown some text; how many started."""
    started = [threading.Event() for _ in streams]
    threads = []
    for number, (stream, flag) in enumerate(zip(streams, started, strict=True)):
        question = f"What may a hotel cost a night? (round {round_number}, person {number})"
        events = random.randint(3, 20)
        thread = threading.Thread(target=stream, args=(question, events, flag), daemon=True)
        thread.start()
        threads.append(thread)
    for flag in started:
        flag.wait(30)
    # Past one checkpoint of what every stream has shown, and at a moment of its own.
    time.sleep(1.2 + random.random())
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    for thread in threads:
        thread.join(30)
    return sum(flag.is_set() for flag in started)


@pytest.mark.slow
def test_answers_streaming_when_the_server_is_killed_are_closed_as_interrupted(
    tmp_path: Path, slow_model: SimulatorHandle
) -> None:
    server = Server(tmp_path / "var")
    server.env.update(
        VLLM_URLS=slow_model.url,
        ASSISTANT_ADMIN_PASSWORD=PASSWORD,
        # One person asks everything here; the limits on one person are not under test.
        STREAMS_PER_USER="20",
        RATE_LIMIT_ASK="600/minute",
        RATE_LIMIT_ASK_TOKEN="600/minute",
    )
    server.start()
    made = server.manage(
        "apitoken", "create", "admin", "--name", "kill test", "--scopes", "read,ask,ingest"
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        uploaded = client.post(
            "/api/documents/",
            files=[("files", ("travel.md", POLICY.encode(), "text/markdown"))],
            data={"everyone": "true"},
        )
        assert uploaded.status_code in (200, 201), uploaded.text
        assert wait_ready(client, uploaded.json()["results"][0]["version_id"])["status"] == "READY"

    faces = [rest_stream(server, key), openai_stream(server, key), portal_stream(server)]
    seen = 0
    for round_number in range(ROUNDS):
        if round_number:
            server.start()
        streams = [faces[number % len(faces)] for number in range(STREAMS_PER_ROUND)]
        seen += kill_while_streaming(server, streams, round_number)
    server.start()
    try:
        report = server.manage("shell", "-c", REPORT)
        assert report.returncode == 0, report.stderr
        found = json.loads(report.stdout.strip().splitlines()[-1])
        verified = server.manage("audit_verify")
    finally:
        server.stop()

    assert seen == ROUNDS * STREAMS_PER_ROUND, "every stream had shown text before the kill"
    assert found["in_progress"] == 0
    assert found["interrupted"] == seen
    # Each question is on record with its evidence, and closed with what had streamed.
    assert found["started_with_passages"] == seen
    assert found["closed_as_interrupted"] == seen
    assert found["with_text"] == seen
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "intact" in verified.stdout


REPORT = """
import contextlib
import json
from assistant.models import Answer, AnswerStatus
from audit.hashing import parse_details
from audit.models import AuditEvent, AuditRecord
answers = Answer.objects.exclude(question__startswith="Uploaded")
started = [parse_details(d) for d in AuditRecord.objects.filter(
    event=AuditEvent.ANSWER_STARTED).values_list("details", flat=True)]
closed = AuditRecord.objects.filter(event=AuditEvent.ANSWER, status=AnswerStatus.INTERRUPTED)
print(json.dumps({
    "in_progress": answers.filter(status=AnswerStatus.IN_PROGRESS).count(),
    "interrupted": answers.filter(status=AnswerStatus.INTERRUPTED).count(),
    "started_with_passages": sum(1 for d in started if d.get("passages")),
    "closed_as_interrupted": closed.count(),
    "with_text": answers.filter(status=AnswerStatus.INTERRUPTED)
    .exclude(answer="", reasoning="").count(),
}))
"""
