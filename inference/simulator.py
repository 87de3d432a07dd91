"""A local stand-in for DeepSeek-R1 served by vLLM's OpenAI-compatible server.

It speaks the same HTTP protocol (/health, /v1/models, /v1/chat/completions with
and without server-sent events) so that the client pool, the portal and the
benchmarks run without a GPU. It is not a language model: it reads the numbered
sources from the prompt, "reasons" about which share words with the question, and
answers with the best matching source sentences, each cited. Every option that
shapes the stream (reasoning field, pacing, failures, cut connections) exists to
reproduce a behaviour of real vLLM deployments.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inference.openai_wire import completion_chunk, sse_data
from inference.prompting import (
    ABSTAIN_MARKER,
    CONVERSATION_HEADING,
    FOLLOW_UP_LABEL,
    QUESTION_LABEL,
    REWRITE_INSTRUCTIONS,
)

SIMULATOR_MODEL = "deepseek-r1-simulator"
SIMULATOR_NOTICE = "This is a simulator, not a language model."

ReasoningField = Literal["reasoning", "reasoning_content", "inline"]
TokenKind = Literal["open", "reasoning", "close", "answer"]
RequestStatus = Literal["completed", "failed", "cut", "disconnected"]

# Attribute values never hold a double quote (prompting replaces them), but may hold ">".
_SOURCE_BLOCK = re.compile(r'<source id="(\d+)"(?:\s+\w+="[^"]*")*>\n(.*?)\n</source>', re.DOTALL)
_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"\s*\S+|\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
# Words too common to show that a passage is about the question.
_STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each
    few for from further get gets got had has have having he her here hers him his how
    i if in into is it its itself just may me might more most must my no nor not now
    of off on once only or other our ours out over own please same shall she should so
    some such than that the their theirs them then there these they this those through
    to too under until up us very was we were what when where which while who whom why
    will with would you your yours tell give know say said many much""".split()  # noqa: SIM905
)
_MAX_ANSWER_SENTENCES = 3
_MAX_SOURCES_DISCUSSED = 5


@dataclass(frozen=True)
class SimulatorOptions:
    model: str = SIMULATOR_MODEL
    reasoning_field: ReasoningField = "reasoning"
    # R1's chat template ends the prompt with "<think>", so without a reasoning
    # parser the generated text starts inside the think block.
    inline_no_open_tag: bool = False
    tokens_per_s: float = 0.0
    ttft_ms: float = 0.0
    fail_rate: float = 0.0
    cut_after_tokens: int | None = None
    max_model_len: int = 32768
    api_key: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    request_id: str
    stream: bool
    status: RequestStatus
    ttft_s: float | None
    total_s: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    # When the first text a client can show was sent: with a reasoning parser the first
    # token (the opening think tag) sends nothing, so this is one token after `ttft_s`.
    first_text_s: float | None = None


class SimulatorStats:
    """Per-request timings measured inside the simulator, so that benchmarks can
    subtract the simulator's own time to first token from what the client saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()


class SimulatedConnectionCut(Exception):
    """Raised inside a streaming response to drop the connection mid-stream."""


@dataclass(frozen=True)
class SimulatedCompletion:
    reasoning: str
    answer: str


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str


def _terms(text: str) -> dict[str, str]:
    """Words that carry meaning, in order: a crude singular form mapped to the word
    as first written. Matching uses the keys, anything shown to people the values."""
    terms: dict[str, str] = {}
    for word in _WORD.findall(text):
        lowered = word.lower()
        if lowered in _STOPWORDS or (len(lowered) < 3 and not lowered.isdigit()):
            continue
        singular = lowered[:-1] if len(lowered) > 3 and lowered.endswith("s") else lowered
        terms.setdefault(lowered if lowered.endswith("ss") else singular, word)
    return terms


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def _cite(sentence: str, n: int) -> str:
    sentence = sentence.strip()
    if sentence[-1:] in ".!?":
        return f"{sentence[:-1]} [{n}]{sentence[-1]}"
    return f"{sentence} [{n}]."


def _listing(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _answer_from_sources(prompt: str) -> SimulatedCompletion:
    _, _, question = prompt.rpartition(f"\n{QUESTION_LABEL}")
    question_terms = _terms(question)
    sources = [(int(n), text) for n, text in _SOURCE_BLOCK.findall(prompt)]
    topic = _listing(list(question_terms.values())[:6]) or "nothing specific"
    reasoning = [f"The question asks about {topic}."]

    scored: list[tuple[int, int, int, str]] = []
    overlap_by_source: list[tuple[int, list[str]]] = []
    for order, (n, text) in enumerate(sources):
        source_terms = _terms(text)
        shared = [word for key, word in question_terms.items() if key in source_terms]
        overlap_by_source.append((n, shared))
        for position, sentence in enumerate(_SENTENCE_END.split(text)):
            if len(sentence.split()) < 3:
                continue
            score = len(question_terms.keys() & _terms(sentence).keys())
            scored.append((score, order, position, f"{n}\x00{sentence}"))

    required = 1 if len(question_terms) <= 2 else 2
    best = max((entry[0] for entry in scored), default=0)
    chosen = sorted(
        (entry for entry in scored if entry[0] >= max(required, math.ceil(best / 2))),
        key=lambda entry: (-entry[0], entry[1], entry[2]),
    )[:_MAX_ANSWER_SENTENCES]

    matching = [(n, shared) for n, shared in overlap_by_source if shared]
    for n, shared in matching[:_MAX_SOURCES_DISCUSSED]:
        reasoning.append(f"Source {n} mentions {_listing(shared)}.")
    silent = [str(n) for n, shared in overlap_by_source if not shared]
    if len(silent) == 1:
        reasoning.append(f"Source {silent[0]} does not mention these terms.")
    elif silent:
        reasoning.append(f"Sources {_listing(silent)} do not mention these terms.")

    if not chosen:
        if sources:
            reasoning.append("No passage covers the question, so I must say that plainly.")
            missing = f"none of the {len(sources)} sources mention {topic}"
        else:
            reasoning.append("There are no sources, so I cannot answer from them.")
            missing = "no sources were provided"
        return SimulatedCompletion(" ".join(reasoning), f"{ABSTAIN_MARKER}: {missing}.")

    cited: list[str] = []
    sentences: list[str] = []
    for *_, tagged in chosen:
        n_text, _, sentence = tagged.partition("\x00")
        sentences.append(_cite(sentence, int(n_text)))
        if n_text not in cited:
            cited.append(n_text)
    reasoning.append(
        f"The closest passages are in source {_listing(cited)}, "
        "so I will answer from them and cite each statement."
    )
    return SimulatedCompletion(" ".join(reasoning), " ".join(sentences))


def _rewrite_follow_up(prompt: str) -> SimulatedCompletion:
    _, _, follow_up = prompt.partition(f"{FOLLOW_UP_LABEL} ")
    follow_up = " ".join(follow_up.split())
    _, _, conversation = prompt.partition(CONVERSATION_HEADING)
    earlier_questions = [
        line.removeprefix("User:").strip()
        for line in conversation.splitlines()
        if line.startswith("User:")
    ]
    if not earlier_questions:
        return SimulatedCompletion(
            "There is no earlier conversation, so the question stands on its own.", follow_up
        )
    previous = earlier_questions[-1]
    follow_up_terms = _terms(follow_up)
    missing = [word for key, word in _terms(previous).items() if key not in follow_up_terms]
    if not missing:
        return SimulatedCompletion(
            "The follow-up already names everything it refers to.", follow_up
        )
    query = f"{follow_up.rstrip(' ?.')}, regarding {' '.join(missing)}?"
    reasoning = (
        f'The follow-up relies on the earlier question "{previous}". '
        f"Adding its key terms ({_listing(missing)}) makes it self-contained."
    )
    return SimulatedCompletion(reasoning, query)


def simulate_completion(messages: list[dict[str, Any]]) -> SimulatedCompletion:
    """What the simulated R1 reasons and answers for these chat messages."""
    user_messages = [message for message in messages if message.get("role") == "user"]
    prompt = _message_text(user_messages[-1]) if user_messages else ""
    if prompt.startswith(REWRITE_INSTRUCTIONS):
        return _rewrite_follow_up(prompt)
    return _answer_from_sources(prompt)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text.strip()))


def _generated_tokens(completion: SimulatedCompletion, options: SimulatorOptions) -> list[_Token]:
    tokens: list[_Token] = []
    if not (options.reasoning_field == "inline" and options.inline_no_open_tag):
        tokens.append(_Token("open", "<think>"))
    tokens += [_Token("reasoning", text) for text in _TOKEN.findall(f"\n{completion.reasoning}\n")]
    tokens.append(_Token("close", "</think>"))
    tokens += [_Token("answer", text) for text in _TOKEN.findall(f"\n\n{completion.answer}")]
    return tokens


def _delta_for(token: _Token, options: SimulatorOptions) -> dict[str, str] | None:
    """The delta vLLM sends for one generated token; None when it sends nothing."""
    if options.reasoning_field == "inline":
        return {"content": token.text}
    if token.kind == "reasoning":
        return {options.reasoning_field: token.text}
    if token.kind == "answer":
        return {"content": token.text}
    # The reasoning parser swallows the think tags themselves.
    return None


def _error(message: str, error_type: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": error_type, "param": None, "code": status}},
        status_code=status,
    )


class _ChatRequest:
    def __init__(self, body: dict[str, Any], options: SimulatorOptions) -> None:
        self.messages: list[dict[str, Any]] = body["messages"]
        self.stream = bool(body.get("stream", False))
        stream_options = body.get("stream_options") or {}
        # vLLM's StreamOptions defaults include_usage to true once the object is sent.
        self.include_usage = bool(stream_options) and stream_options.get("include_usage", True)
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self.max_tokens: int = limit if isinstance(limit, int) else options.max_model_len
        self.prompt_tokens = sum(count_tokens(_message_text(m)) for m in self.messages)
        completion = simulate_completion(self.messages)
        tokens = _generated_tokens(completion, options)
        self.finish_reason = "length" if len(tokens) > self.max_tokens else "stop"
        self.tokens = tokens[: self.max_tokens]
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def record(
        self,
        status: RequestStatus,
        received: float,
        ttft_s: float | None,
        *,
        completion_tokens: int,
        first_text_s: float | None = None,
    ) -> RequestRecord:
        return RequestRecord(
            request_id=self.id,
            stream=self.stream,
            status=status,
            ttft_s=ttft_s,
            total_s=time.perf_counter() - received,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=self.finish_reason if status == "completed" else None,
            first_text_s=first_text_s if first_text_s is not None else ttft_s,
        )

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }


def _validation_error(body: Any, options: SimulatorOptions) -> JSONResponse | None:
    if not isinstance(body, dict):
        return _error("The request body must be a JSON object.", "BadRequestError", 400)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error("messages must be a non-empty list.", "BadRequestError", 400)
    if not all(isinstance(message, dict) and "role" in message for message in messages):
        return _error("Each message needs a role and content.", "BadRequestError", 400)
    model = body.get("model")
    if model is not None and model != options.model:
        return _error(f"The model `{model}` does not exist.", "NotFoundError", 404)
    for name in ("max_tokens", "max_completion_tokens"):
        limit = body.get(name)
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return _error(f"{name} must be at least 1, got {limit}.", "BadRequestError", 400)
    return None


def build_simulator_app(
    options: SimulatorOptions | None = None, stats: SimulatorStats | None = None
) -> Starlette:
    """The simulator as an ASGI application."""
    options = options or SimulatorOptions()
    stats = stats or SimulatorStats()
    failures = random.Random(options.seed)
    token_interval = 1.0 / options.tokens_per_s if options.tokens_per_s > 0 else 0.0

    def unauthorized(request: Request) -> JSONResponse | None:
        if options.api_key is None:
            return None
        if request.headers.get("authorization") == f"Bearer {options.api_key}":
            return None
        return JSONResponse({"error": "Unauthorized"}, status_code=401)

    async def health(request: Request) -> Response:
        return Response(status_code=200)

    async def models(request: Request) -> Response:
        if (denied := unauthorized(request)) is not None:
            return denied
        created = int(time.time())
        card = {
            "id": options.model,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": options.model,
            "parent": None,
            "max_model_len": options.max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{uuid.uuid4().hex}",
                    "object": "model_permission",
                    "created": created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def simulator_stats(request: Request) -> Response:
        records = [asdict(record) for record in stats.records()]
        return JSONResponse({"model": options.model, "requests": records})

    async def chat_completions(request: Request) -> Response:
        received = time.perf_counter()
        if (denied := unauthorized(request)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _error("The request body is not valid JSON.", "BadRequestError", 400)
        if (invalid := _validation_error(body, options)) is not None:
            return invalid
        chat = _ChatRequest(body, options)
        if failures.random() < options.fail_rate:
            stats.add(chat.record("failed", received, ttft_s=None, completion_tokens=0))
            return _error("Simulated engine failure.", "InternalServerError", 500)
        if chat.stream:
            return StreamingResponse(stream_body(chat, received), media_type="text/event-stream")
        return await complete_response(chat, received)

    async def complete_response(chat: _ChatRequest, received: float) -> Response:
        await asyncio.sleep(options.ttft_ms / 1000 + token_interval * len(chat.tokens))
        deltas = [delta for token in chat.tokens if (delta := _delta_for(token, options))]
        content = "".join(delta.get("content", "") for delta in deltas)
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if options.reasoning_field != "inline":
            reasoning = "".join(delta.get(options.reasoning_field, "") for delta in deltas)
            message[options.reasoning_field] = reasoning or None
        message["tool_calls"] = []
        ttft_s = time.perf_counter() - received
        stats.add(chat.record("completed", received, ttft_s, completion_tokens=len(chat.tokens)))
        return JSONResponse(
            {
                "id": chat.id,
                "object": "chat.completion",
                "created": chat.created,
                "model": options.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": chat.finish_reason,
                        "stop_reason": None,
                    }
                ],
                "usage": chat.usage(len(chat.tokens)),
                "prompt_logprobs": None,
            }
        )

    def chunk(chat: _ChatRequest, delta: dict[str, str], finish_reason: str | None) -> str:
        return sse_data(
            completion_chunk(
                completion_id=chat.id,
                created=chat.created,
                model=options.model,
                delta=delta,
                finish_reason=finish_reason,
            )
        )

    async def stream_body(chat: _ChatRequest, received: float) -> AsyncIterator[str]:
        status: RequestStatus = "disconnected"
        first_token_at: float | None = None
        first_text_at: float | None = None
        generated = 0
        try:
            await asyncio.sleep(options.ttft_ms / 1000)
            # vLLM sends the role chunk together with the first generated token.
            yield chunk(chat, {"role": "assistant", "content": ""}, None)
            for index, token in enumerate(chat.tokens):
                if index:
                    await asyncio.sleep(token_interval)
                if options.cut_after_tokens is not None and generated >= options.cut_after_tokens:
                    status = "cut"
                    raise SimulatedConnectionCut(f"cut after {generated} tokens")
                generated += 1
                is_last = index == len(chat.tokens) - 1
                delta = _delta_for(token, options)
                if is_last:
                    yield chunk(chat, delta or {}, chat.finish_reason)
                elif delta is not None:
                    yield chunk(chat, delta, None)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if first_text_at is None and delta and any(delta.values()):
                    first_text_at = time.perf_counter()
            if chat.include_usage:
                yield sse_data(
                    {
                        "id": chat.id,
                        "object": "chat.completion.chunk",
                        "created": chat.created,
                        "model": options.model,
                        "choices": [],
                        "usage": chat.usage(generated),
                    }
                )
            yield "data: [DONE]\n\n"
            status = "completed"
        finally:
            ttft_s = None if first_token_at is None else first_token_at - received
            first_text_s = None if first_text_at is None else first_text_at - received
            stats.add(
                chat.record(
                    status,
                    received,
                    ttft_s,
                    completion_tokens=generated,
                    first_text_s=first_text_s,
                )
            )

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/simulator/stats", simulator_stats, methods=["GET"]),
        ]
    )
    app.state.options = options
    app.state.stats = stats
    return app


def _is_simulated_cut(error: BaseException | None) -> bool:
    if isinstance(error, SimulatedConnectionCut):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_is_simulated_cut(inner) for inner in error.exceptions)
    return False


class _HideSimulatedCuts(logging.Filter):
    """A deliberately cut stream is not a server error worth a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_simulated_cut(record.exc_info[1]))


def hide_simulated_cut_tracebacks() -> None:
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _HideSimulatedCuts) for existing in server_log.filters):
        server_log.addFilter(_HideSimulatedCuts())


@dataclass
class SimulatorHandle:
    """A simulator serving in a background thread."""

    host: str
    port: int
    options: SimulatorOptions
    stats: SimulatorStats
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=5)

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_simulator_in_thread(
    port: int = 0, *, host: str = "127.0.0.1", startup_timeout_s: float = 10.0, **options: Any
) -> SimulatorHandle:
    """Serve a simulator on `host:port` (0 picks a free port) until `.stop()`."""
    simulator_options = SimulatorOptions(**options)
    stats = SimulatorStats()
    hide_simulated_cut_tracebacks()
    config = uvicorn.Config(
        build_simulator_app(simulator_options, stats),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"r1-simulator-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"The simulator could not start on {host}:{port}.")
        time.sleep(0.01)
    bound_port = port or _bound_port(server)
    return SimulatorHandle(host, bound_port, simulator_options, stats, server, thread)


def _bound_port(server: uvicorn.Server) -> int:
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    raise RuntimeError("The simulator is not listening on any socket.")
