"""Rate limits and the cap on answers in progress, with the in-process and the Redis backend."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest
import redis
import uvicorn
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from accounts.limits import (
    Limited,
    RedisBackend,
    limiter_backend,
    rate_parse,
    stream_slot_acquire,
)
from inference.simulator import run_simulator_in_thread
from tests.accounts.api_tokens import api_token
from tests.assistant.conftest import Library
from tests.ingestion.test_standalone import free_port

REDIS_URL = "redis://127.0.0.1:6379/9"
REDIS_URL_LIVE = "redis://127.0.0.1:6379/10"
QUESTION = "How do employees book train travel?"


def redis_flushed(url: str) -> None:
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, settings: Any) -> str:
    """Each limit test runs against both backends, as standalone and as cluster."""
    settings.RATE_LIMIT_BACKEND = request.param
    settings.RATE_LIMIT_REDIS_URL = REDIS_URL
    if request.param == "redis":
        redis_flushed(REDIS_URL)
    return str(request.param)


@pytest.fixture
def library(db: None) -> Library:
    return Library()


def token_client(secret: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def ask(client: APIClient | Client, question: str = QUESTION) -> Any:
    return client.post(
        "/api/assistant/ask", {"question": question}, content_type="application/json"
    )


def test_rates_are_read_as_people_write_them() -> None:
    rate = rate_parse("30/minute")
    assert rate is not None
    assert (rate.count, rate.period_s, str(rate)) == (30, 60, "30 a minute")
    assert str(rate_parse("200/hours")) == "200 an hour"
    assert rate_parse("off") is None
    assert rate_parse("") is None
    with pytest.raises(ValueError, match="30/minute"):
        rate_parse("30 per minute")
    with pytest.raises(ValueError, match="at least 1"):
        rate_parse("0/minute")


@pytest.mark.django_db
def test_the_question_after_the_limit_gets_429_with_retry_after(
    backend: str, settings: Any, library: Library
) -> None:
    settings.RATE_LIMIT_ASK = "3/minute"
    settings.RATE_LIMIT_ASK_TOKEN = "off"
    client = token_client(api_token(library.alice, ["ask"]))

    for _ in range(3):
        assert ask(client).status_code == 200

    refused = ask(client)
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    detail = refused.json()["detail"]
    assert detail.startswith("Too many questions: at most 3 a minute. Try again in ")
    # Another person is not held back by alice's questions.
    assert ask(token_client(api_token(library.bob, ["ask"]))).status_code == 200


@pytest.mark.django_db
def test_a_token_has_its_own_limit_within_its_users(
    backend: str, settings: Any, library: Library
) -> None:
    settings.RATE_LIMIT_ASK = "4/minute"
    settings.RATE_LIMIT_ASK_TOKEN = "2/minute"
    script = token_client(api_token(library.alice, ["ask"], name="script"))
    laptop = token_client(api_token(library.alice, ["ask"], name="laptop"))

    assert [ask(script).status_code for _ in range(2)] == [200, 200]
    refused = ask(script)
    assert refused.status_code == 429
    assert "with this API token: at most 2 a minute" in refused.json()["detail"]

    # The runaway script has used up its own allowance, not its owner's.
    assert [ask(laptop).status_code for _ in range(2)] == [200, 200]
    portal = Client()
    portal.force_login(library.alice)
    refused = portal.post("/ask/stream", {"question": QUESTION}, content_type="application/json")
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many questions: at most 4 a minute.")
    assert int(refused["Retry-After"]) >= 1


def test_the_openai_endpoint_answers_429_the_sdk_understands(
    backend: str, settings: Any, asgi_server: str
) -> None:
    library = Library()
    settings.RATE_LIMIT_ASK = "1/minute"
    client = openai.OpenAI(
        api_key=api_token(library.alice, ["ask"]),
        base_url=f"{asgi_server}/v1",
        max_retries=0,
    )
    client.chat.completions.create(
        model="knowledge-assistant", messages=[{"role": "user", "content": QUESTION}]
    )

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(
            model="knowledge-assistant", messages=[{"role": "user", "content": QUESTION}]
        )

    assert refused.value.status_code == 429
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    assert "at most 1 a minute" in refused.value.message


@pytest.mark.django_db
def test_uploads_are_limited_by_files_per_user(
    backend: str, settings: Any, django_user_model: type[User]
) -> None:
    settings.RATE_LIMIT_UPLOAD = "2/hour"
    root = django_user_model.objects.create_superuser("root", password="x" * 12)
    client = token_client(api_token(root, ["ingest"]))

    def note(name: str) -> SimpleUploadedFile:
        return SimpleUploadedFile(name, f"# {name}\n\nText.\n".encode(), "text/markdown")

    stored = client.post(
        "/api/documents/", {"files": [note("a.md"), note("b.md")]}, format="multipart"
    )
    assert stored.status_code == 201

    refused = client.post("/api/documents/", {"files": [note("c.md")]}, format="multipart")
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many uploaded files: at most 2 an hour.")
    assert 3000 < int(refused["Retry-After"]) <= 3600
    page = Client()
    page.force_login(root)
    refused = page.post(
        "/documents/upload/",
        {"files": [note("d.md")], "everyone": "on"},
        HTTP_ACCEPT="application/json",
    )
    assert refused.status_code == 429
    assert "at most 2 an hour" in refused.json()["detail"]


@pytest.mark.django_db
def test_a_stream_slot_left_by_a_killed_server_expires_in_redis(settings: Any) -> None:
    settings.RATE_LIMIT_BACKEND = "redis"
    settings.RATE_LIMIT_REDIS_URL = REDIS_URL
    settings.STREAMS_PER_USER = 1
    settings.STREAM_LEASE_S = 120
    redis_flushed(REDIS_URL)

    slot = stream_slot_acquire(user_id=7)
    assert slot is not None
    with pytest.raises(Limited, match="already have 1 answer in progress"):
        stream_slot_acquire(user_id=7)

    # Never released, as when the process serving it dies: Redis still forgets it.
    backend = limiter_backend()
    assert isinstance(backend, RedisBackend)
    assert 0 < backend.client.ttl(slot.key) <= 121
    slots: list[tuple[bytes, float]] = backend.client.zrange(slot.key, 0, -1, withscores=True)  # type: ignore[assignment]
    assert [member.decode() for member, _ in slots] == [slot.slot_id]
    assert slots[0][1] - time.time() <= 121


# ---- Answers in progress, over real HTTP --------------------------------------------------------


@pytest.fixture
def asgi_server(transactional_db: None) -> Iterator[str]:
    """The app served by uvicorn on loopback, as in production: streams end on disconnect."""
    from config.asgi import application

    config = uvicorn.Config(
        application, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    thread.join(timeout=10)


def open_stream(stack: ExitStack, url: str, secret: str) -> httpx.Response:
    client = stack.enter_context(httpx.Client(base_url=url, timeout=30))
    return stack.enter_context(
        client.stream(
            "POST",
            "/api/assistant/ask",
            json={"question": QUESTION, "stream": True},
            headers={"Authorization": f"Bearer {secret}", "Accept": "text/event-stream"},
        )
    )


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_fourth_concurrent_answer_waits_until_a_client_goes_away(
    kind: str, settings: Any, asgi_server: str
) -> None:
    settings.RATE_LIMIT_BACKEND = kind
    settings.RATE_LIMIT_REDIS_URL = REDIS_URL_LIVE
    settings.RATE_LIMIT_ASK = settings.RATE_LIMIT_ASK_TOKEN = "off"
    settings.STREAMS_PER_USER = 3
    redis_flushed(REDIS_URL_LIVE)
    library = Library()
    secret = api_token(library.alice, ["ask"])
    # The model takes its time, so the answers stay in progress until a client leaves.
    with run_simulator_in_thread(port=0, ttft_ms=60_000) as simulator:
        settings.VLLM_URLS = [simulator.url]
        with ExitStack() as first, ExitStack() as others:
            assert open_stream(first, asgi_server, secret).status_code == 200
            for _ in range(2):
                assert open_stream(others, asgi_server, secret).status_code == 200

            refused = httpx.post(
                f"{asgi_server}/v1/chat/completions",
                json={"messages": [{"role": "user", "content": QUESTION}], "stream": True},
                headers={"Authorization": f"Bearer {secret}"},
                timeout=30,
            )
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "5"
            assert "already have 3 answers in progress" in refused.json()["error"]["message"]

            first.close()  # The client goes away mid-answer.

            deadline = time.monotonic() + 30
            with ExitStack() as fourth:
                while True:
                    response = open_stream(fourth, asgi_server, secret)
                    if response.status_code == 200 or time.monotonic() > deadline:
                        break
                    fourth.close()
                    time.sleep(0.1)
                assert response.status_code == 200, "the slot was not freed on disconnect"
