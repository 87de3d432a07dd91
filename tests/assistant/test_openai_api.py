"""The OpenAI-compatible endpoint, used by the openai SDK against the real server process.

Two servers run from copies of one prepared data folder: one without a language model
(extractive answers) and one whose VLLM_URLS names an R1 simulator running in this process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client

from inference.simulator import SimulatorHandle, run_simulator_in_thread
from tests.accounts.api_tokens import api_token
from tests.assistant.conftest import CANARY
from tests.config.nested_json import THOUSAND_DEEP, TOO_DEEP, padded_to
from tests.ingestion.test_standalone import ROOT, Server

SECRET = "7-4-1-9"
NIGHTJAR_QUESTION = "What is the launch code for Project Nightjar?"
PREPARE = (
    "import json\n"
    "from django.core.management import call_command\n"
    "call_command('migrate', verbosity=0)\n"
    "from tests.assistant.test_openai_api import library_prepare\n"
    "print(json.dumps(library_prepare()))\n"
)


def library_prepare() -> dict[str, str]:
    """Run in the data folder before the server starts: users, their tokens, queued documents.

    The server ingests the documents when it starts.
    """
    from django.contrib.auth.models import Group, User

    from ingestion.services import document_upload_bytes
    from tests.accounts.api_tokens import api_token

    research = Group.objects.create(name="research")
    sales = Group.objects.create(name="sales")
    alice = User.objects.create_user("alice")
    alice.groups.add(research)
    bob = User.objects.create_user("bob")
    bob.groups.add(sales)
    document_upload_bytes(
        name="nightjar.md",
        data=(
            f"# Project Nightjar\n\n{CANARY} The code was approved by the security board.\n\n"
            "## Schedule\n\nThe first test flight of Project Nightjar is planned for the "
            "autumn, after the wind tunnel trials.\n"
        ).encode(),
        groups=[research],
    )
    document_upload_bytes(
        name="travel-policy.md",
        data=b"# Travel policy\n\nEmployees book train travel in second class for journeys "
        b"under four hours. Flights need approval from a director.\n",
        is_public=True,
    )
    document_upload_bytes(
        name="pricing.md",
        data=b"# Pricing 2027\n\nThe list price of the Kestrel licence rises to 1,200 euros "
        b"per seat.\n",
        groups=[sales],
    )
    return {user.username: api_token(user) for user in (alice, bob)}


@dataclass
class Servers:
    plain: Server
    r1: Server
    tokens: dict[str, str]


def api_server(data_dir: Path, **env: str) -> Server:
    server = Server(data_dir)
    server.env.update(**env)
    return server


def wait_until_searchable(server: Server, token: str) -> None:
    deadline = time.monotonic() + 120
    with rest_client(server, token) as rest:
        while time.monotonic() < deadline:
            found = rest.get("/api/assistant/search", params={"q": "Nightjar launch code"})
            if "nightjar.md" in found.text:
                return
            time.sleep(0.5)
    raise AssertionError("the documents were not ingested:\n" + server.log.read_text())


@pytest.fixture(scope="module")
def r1_simulator() -> Iterator[SimulatorHandle]:
    with run_simulator_in_thread(port=0, tokens_per_s=100) as handle:
        yield handle


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, r1_simulator: SimulatorHandle
) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("openai-api")
    prepared = base / "prepared" / "var"
    prepared.mkdir(parents=True)
    setup = api_server(prepared)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", PREPARE],
        cwd=ROOT,
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tokens = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("plain", "r1"):
        shutil.copytree(prepared, base / name / "var")
    plain = api_server(base / "plain" / "var")
    r1 = api_server(base / "r1" / "var", VLLM_URLS=r1_simulator.url)
    try:
        with ThreadPoolExecutor(2) as starting:
            list(starting.map(Server.start, [plain, r1]))
        for server in (plain, r1):
            wait_until_searchable(server, tokens["alice"])
        yield Servers(plain=plain, r1=r1, tokens=tokens)
    finally:
        plain.stop()
        r1.stop()


def sdk(server: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=token, max_retries=0, timeout=60)


def raw(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def rest_client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Token {token}"}, timeout=60
    )


def data_lines(body: str) -> list[str]:
    return [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]


def test_the_model_list_names_the_assistant(servers: Servers) -> None:
    listed = sdk(servers.plain, servers.tokens["alice"]).models.list()

    assert [model.id for model in listed.data] == ["knowledge-assistant"]


def test_a_completion_carries_citations_in_the_text_and_in_a_field(servers: Servers) -> None:
    completion = sdk(servers.plain, servers.tokens["alice"]).chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": NIGHTJAR_QUESTION}]
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    answer, _, sources = (choice.message.content or "").partition("\n\nSources:\n")
    assert SECRET in answer
    assert "[1]" in answer
    assert sources.startswith("[1] ")
    assert "nightjar.md" in sources
    extras = completion.model_extra or {}
    assert extras["citations"][0]["source"] == "nightjar.md"
    assert SECRET in extras["citations"][0]["text"]
    assert extras["mode"] == "extractive"
    assert completion.usage is not None


def test_the_reasoning_arrives_in_the_reasoning_field(servers: Servers) -> None:
    completion = sdk(servers.r1, servers.tokens["alice"]).chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": NIGHTJAR_QUESTION}]
    )

    message = completion.choices[0].message
    reasoning = (message.model_extra or {})["reasoning"]
    assert "Nightjar" in reasoning
    assert (message.model_extra or {})["reasoning_content"] == reasoning
    assert "<think>" not in (message.content or "")
    assert SECRET in (message.content or "")
    assert (completion.model_extra or {})["mode"] == "llm"
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


def test_a_streamed_completion_sends_reasoning_then_answer_then_usage(servers: Servers) -> None:
    stream = sdk(servers.r1, servers.tokens["alice"]).chat.completions.create(
        model="knowledge-assistant",
        messages=[{"role": "user", "content": NIGHTJAR_QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning_at = [
        index
        for index, chunk in enumerate(chunks)
        if chunk.choices and (chunk.choices[0].delta.model_extra or {}).get("reasoning")
    ]
    content_at = [
        index
        for index, chunk in enumerate(chunks)
        if chunk.choices and chunk.choices[0].delta.content
    ]
    assert reasoning_at
    assert content_at
    assert max(reasoning_at) < min(content_at)
    content = "".join(chunks[index].choices[0].delta.content or "" for index in content_at)
    assert SECRET in content
    assert "\n\nSources:\n[1] " in content
    final, usage = chunks[-2], chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert (final.model_extra or {})["citations"][0]["source"] == "nightjar.md"
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens > 0


def test_the_stream_is_framed_as_vllm_frames_it(servers: Servers) -> None:
    with raw(servers.plain, servers.tokens["alice"]) as client:
        response = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": NIGHTJAR_QUESTION}], "stream": True},
        )

    assert response.headers["content-type"].startswith("text/event-stream")
    lines = data_lines(response.text)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in chunks[-1]


def test_a_client_resending_the_chat_continues_the_same_conversation(servers: Servers) -> None:
    client = sdk(servers.plain, servers.tokens["alice"])
    first = client.chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": NIGHTJAR_QUESTION}]
    )
    follow_up = client.chat.completions.create(
        model="knowledge-assistant",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": NIGHTJAR_QUESTION},
            {"role": "assistant", "content": first.choices[0].message.content or ""},
            {"role": "user", "content": "When is its first test flight?"},
        ],
    )

    conversation = (first.model_extra or {})["conversation_id"]
    assert (follow_up.model_extra or {})["conversation_id"] == conversation
    assert "autumn" in (follow_up.choices[0].message.content or "")


def test_a_missing_or_wrong_key_gets_openais_401(servers: Servers) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(servers.plain, "not-a-token").chat.completions.create(
            model="knowledge-assistant", messages=[{"role": "user", "content": "Hello?"}]
        )
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"
    anonymous = httpx.get(f"{servers.plain.url}/v1/models", timeout=30)
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.json()["error"]["message"]


def test_an_empty_question_or_an_unknown_model_is_refused(servers: Servers) -> None:
    client = sdk(servers.plain, servers.tokens["alice"])
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(
            model="knowledge-assistant", messages=[{"role": "user", "content": "  "}]
        )
    assert "Please type a question." in str(empty.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": NIGHTJAR_QUESTION}]
        )


@pytest.fixture
def chat_client(django_user_model: type[User]) -> Client:
    """In-process requests for refusals made before any search: no server needed."""
    reader = django_user_model.objects.create_user("reader", password="x" * 12)
    return Client(headers={"Authorization": f"Bearer {api_token(reader)}"})


def openai_refusal(message: str) -> dict[str, object]:
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }


def test_a_body_nested_a_thousand_deep_gets_openais_400(chat_client: Client) -> None:
    response = chat_client.post(
        "/v1/chat/completions", THOUSAND_DEEP, content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == openai_refusal(TOO_DEEP)


def test_a_body_nested_to_the_limit_is_read_as_usual(chat_client: Client) -> None:
    body = padded_to(
        {"model": "knowledge-assistant", "messages": [{"role": "user", "content": ""}]}
    )
    response = chat_client.post("/v1/chat/completions", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Please type a question."
    assert response.json()["error"]["param"] == "messages"


def test_a_body_over_the_size_limit_gets_openais_400(chat_client: Client, settings: Any) -> None:
    settings.JSON_BODY_MAX_BYTES = 200
    body = {"messages": [{"role": "user", "content": "x" * 200}]}
    response = chat_client.post("/v1/chat/completions", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == openai_refusal("The JSON body is too large (more than 200 bytes).")


def test_the_rest_stream_carries_reasoning_and_answer_through_the_server(
    servers: Servers,
) -> None:
    with rest_client(servers.r1, servers.tokens["alice"]) as rest:
        response = rest.post(
            "/api/assistant/ask", json={"question": NIGHTJAR_QUESTION, "stream": True}
        )

    events = [
        line.removeprefix("event: ")
        for line in response.text.splitlines()
        if line.startswith("event: ")
    ]
    assert events[0] == "meta"
    assert events.index("reasoning") < events.index("answer")
    assert events[-1] == "done"
    done = json.loads(data_lines(response.text)[-1])
    assert done["mode"] == "llm"
    assert SECRET in done["answer"]
    assert done["reasoning"]


def test_a_client_that_hangs_up_mid_stream_leaves_a_cancelled_answer(servers: Servers) -> None:
    token = servers.tokens["alice"]
    with (
        raw(servers.r1, token) as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "When is the Nightjar test flight?"}],
                "stream": True,
            },
        ) as response,
    ):
        for line in response.iter_lines():
            if '"reasoning"' in line:
                break

    deadline = time.monotonic() + 30
    with rest_client(servers.r1, token) as rest:
        while time.monotonic() < deadline:
            newest = rest.get("/api/assistant/conversations").json()["results"][0]
            answers = rest.get(f"/api/assistant/conversations/{newest['id']}").json()["answers"]
            if answers and answers[0]["question"].endswith("test flight?"):
                assert answers[0]["status"] == "cancelled"
                assert answers[0]["reasoning"]
                return
            time.sleep(0.2)
    raise AssertionError("the cancelled answer was not recorded")


def test_the_canary_never_reaches_another_group_through_any_api(servers: Servers) -> None:
    token = servers.tokens["bob"]
    question = {"role": "user", "content": NIGHTJAR_QUESTION}
    seen: list[str] = []
    with raw(servers.r1, token) as chat, rest_client(servers.r1, token) as rest:
        seen.append(chat.post("/v1/chat/completions", json={"messages": [question]}).text)
        streamed = {"messages": [question], "stream": True}
        seen.append(chat.post("/v1/chat/completions", json=streamed).text)
        seen.append(rest.post("/api/assistant/ask", json={"question": NIGHTJAR_QUESTION}).text)
        ask_streamed = {"question": NIGHTJAR_QUESTION, "stream": True}
        seen.append(rest.post("/api/assistant/ask", json=ask_streamed).text)
        search: dict[str, str | int] = {"q": NIGHTJAR_QUESTION, "k": 100}
        seen.append(rest.get("/api/assistant/search", params=search).text)
        listing = rest.get("/api/assistant/conversations")
        seen.append(listing.text)
        for conversation in listing.json()["results"]:
            seen.append(rest.get(f"/api/assistant/conversations/{conversation['id']}").text)

    assert len(seen) >= 8
    for body in seen:
        assert SECRET not in body
        assert "nightjar.md" not in body
