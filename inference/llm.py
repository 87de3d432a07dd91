"""A pool of vLLM endpoints serving R1, used through the OpenAI-compatible API.

Requests go to the healthy endpoint with the fewest requests in flight. An endpoint
that fails before the first token (refused connection, timeout, 5xx) is marked down
for a cool-down period and the request moves to the next endpoint; nothing has been
shown to the user yet, so nothing is duplicated. Once tokens have been streamed, a
broken connection ends the stream with a `cut` error instead: retrying elsewhere
would repeat text the user has already read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, TypeVar

import httpx2
import openai

from inference.r1_output import Piece, R1Output, ReasoningSplitter

_T = TypeVar("_T")

# Statuses that say something about the endpoint rather than the request, so
# another endpoint may well succeed.
_ENDPOINT_FAULT_STATUSES = frozenset({401, 403, 404, 408, 429})

EventKind = Literal["reasoning", "answer", "done", "error"]


@dataclass(frozen=True)
class EndpointConfig:
    url: str
    api_key: str | None = None


@dataclass(frozen=True)
class PoolConfig:
    urls: list[str]
    api_key: str | None = None
    # None: use the first model the endpoint lists at /v1/models.
    model: str | None = None
    connect_timeout_s: float = 5
    first_token_timeout_s: float = 60
    total_timeout_s: float = 600
    max_tokens: int = 4096
    health_interval_s: float = 15
    down_cooldown_s: float = 10

    def endpoints(self) -> list[EndpointConfig]:
        return [EndpointConfig(url, self.api_key) for url in self.urls]


@dataclass(frozen=True)
class StreamEvent:
    """One step of a streamed answer.

    `reasoning` and `answer` events carry text to append. The stream ends with
    exactly one `done` or `error` event. An `error` with `cut=True` follows text
    that was already streamed: keep it, and show that the answer is incomplete.
    `reclassified=True` marks an answer event holding the whole answer, to show in
    place of the text streamed as reasoning before it (see `inference.r1_output`).
    `output` is the reasoning and the answer as they stand after this event; on the
    final event it is the whole result.
    """

    kind: EventKind
    text: str = ""
    endpoint: str = ""
    model: str = ""
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    error: str | None = None
    cut: bool = False
    reclassified: bool = False
    output: R1Output = field(default_factory=R1Output)


class LLMUnavailableError(Exception):
    """No endpoint of the pool could start an answer."""


class _EndpointFailure(Exception):
    """The endpoint failed before the first token, so another one may be tried."""


@dataclass
class _Endpoint:
    url: str
    api_key: str | None
    healthy: bool = True
    down_until: float = 0.0
    in_flight: int = 0
    last_error: str | None = None
    served_model: str | None = None
    clients: dict[asyncio.AbstractEventLoop, openai.AsyncOpenAI] = field(default_factory=dict)
    # The SDK client's own HTTP client, for streaming chat completions without the SDK.
    http_clients: dict[asyncio.AbstractEventLoop, httpx2.AsyncClient] = field(default_factory=dict)

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def mark_down(self, reason: str, cooldown_s: float) -> None:
        self.healthy = False
        self.down_until = time.monotonic() + cooldown_s
        self.last_error = reason
        # A restarted server may serve a different model under the same address.
        self.served_model = None

    def mark_up(self) -> None:
        self.healthy = True
        self.down_until = 0.0


def _root_url(url: str) -> str:
    root = url.strip().rstrip("/")
    return root.removesuffix("/v1")


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, openai.APIStatusError):
        body = error.body
        detail = body.get("message") if isinstance(body, dict) else body
        return f"HTTP {error.status_code}: {detail}" if detail else f"HTTP {error.status_code}"
    if isinstance(error, openai.APITimeoutError):
        return "timed out"
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__
        return f"connection failed: {cause}" if cause else "connection failed"
    if isinstance(error, httpx2.TimeoutException):
        return "timed out"
    if isinstance(error, httpx2.ConnectError):
        return f"connection failed: {error}" if str(error) else "connection failed"
    return str(error) or type(error).__name__


@cache
def tls_context() -> ssl.SSLContext:
    """The one verified TLS context of the process's model clients (httpx's default, made once).

    Making one reads the whole CA bundle: about 50 ms of CPU on a 2-core AMD EPYC, which the
    health check every 15 s spent on the event loop that every stream of the server shares,
    and each request from a fresh event loop (a Celery task, a command) spent again.
    """
    return httpx2.create_ssl_context()


async def _before(deadline: float, awaitable: Awaitable[_T]) -> _T:
    # Deadlines wrap single awaits: a timeout scope must never span a `yield`
    # of the surrounding generator, or it would fire while the caller is busy.
    async with asyncio.timeout_at(deadline):
        return await awaitable


class _StatusError(Exception):
    """The endpoint answered the request with an HTTP error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}" if detail else f"HTTP {status_code}")
        self.status_code = status_code


class _StreamError(Exception):
    """The stream itself reported an error, or sent something that is not a chunk."""


async def _chat_stream_open(
    http: httpx2.AsyncClient, endpoint: _Endpoint, body: dict[str, Any]
) -> httpx2.Response:
    """POST /v1/chat/completions as a stream; an error status is raised with its message.

    The chunks are read as plain JSON (`_sse_data`, `_chunk`): the SDK's typed chunk objects
    cost about 100 times more per token than json.loads, which under a burst of answers
    was a fifth of the server's time.
    """
    headers = {"Authorization": f"Bearer {endpoint.api_key or 'EMPTY'}"}
    request = http.build_request(
        "POST", f"{endpoint.api_base}/chat/completions", json=body, headers=headers
    )
    response = await http.send(request, stream=True)
    if response.status_code < 400:
        return response
    try:
        raw = (await response.aread()).decode("utf-8", "replace")
    finally:
        await response.aclose()
    raise _StatusError(response.status_code, _error_message(raw))


def _error_message(raw: str) -> str:
    """The message of an OpenAI-style error body, else the body itself (shortened)."""
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.strip()[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return raw.strip()[:300]


async def _sse_data(response: httpx2.Response) -> AsyncGenerator[str, None]:
    """The data of each server-sent event (lines joined), comments and other fields skipped."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError as error:
        raise _StreamError(f"the stream sent something that is not JSON: {data[:80]!r}") from error
    if not isinstance(chunk, dict):
        raise _StreamError("the stream sent something that is not a chunk")
    if chunk.get("error"):
        raise _StreamError(f"the stream reported an error: {_error_message(data)}")
    return chunk


class EndpointPool:
    def __init__(self, config: PoolConfig) -> None:
        if not config.urls:
            raise ValueError("The endpoint pool needs at least one URL.")
        self.config = config
        self._endpoints = [
            _Endpoint(_root_url(endpoint.url), endpoint.api_key) for endpoint in config.endpoints()
        ]
        self._turn = 0
        self._last_health_check = time.monotonic()
        self._health_tasks: set[asyncio.Task[list[bool]]] = set()

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "url": endpoint.url,
                "healthy": endpoint.healthy,
                "in_flight": endpoint.in_flight,
                "last_error": endpoint.last_error,
                "model": endpoint.served_model or self.config.model,
            }
            for endpoint in self._endpoints
        ]

    async def health_check(self) -> dict[str, bool]:
        """Probe every endpoint (GET /health, else /v1/models) and mark it up or down."""
        self._last_health_check = time.monotonic()
        results = await self._check(self._endpoints)
        return {
            endpoint.url: healthy
            for endpoint, healthy in zip(self._endpoints, results, strict=True)
        }

    async def _check(self, endpoints: list[_Endpoint]) -> list[bool]:
        timeout = httpx2.Timeout(self.config.connect_timeout_s)
        async with httpx2.AsyncClient(timeout=timeout, verify=tls_context()) as http:
            return list(await asyncio.gather(*(self._probe(http, e) for e in endpoints)))

    async def _probe(self, http: httpx2.AsyncClient, endpoint: _Endpoint) -> bool:
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        try:
            response = await http.get(f"{endpoint.url}/health")
            if response.status_code == 404:
                response = await http.get(f"{endpoint.api_base}/models", headers=headers)
        except httpx2.HTTPError as error:
            endpoint.mark_down(
                f"health check failed: {error or type(error).__name__}",
                self.config.down_cooldown_s,
            )
            return False
        if response.status_code != 200:
            endpoint.mark_down(
                f"health check answered HTTP {response.status_code}", self.config.down_cooldown_s
            )
            return False
        endpoint.mark_up()
        return True

    def _client(self, endpoint: _Endpoint) -> openai.AsyncOpenAI:
        # HTTP connections belong to the event loop that opened them; callers
        # such as Celery tasks may run each request in a fresh loop.
        loop = asyncio.get_running_loop()
        for closed in [other for other in endpoint.clients if other.is_closed()]:
            del endpoint.clients[closed]
            endpoint.http_clients.pop(closed, None)
        client = endpoint.clients.get(loop)
        if client is None:
            timeout = httpx2.Timeout(
                self.config.total_timeout_s,
                connect=self.config.connect_timeout_s,
                read=self.config.first_token_timeout_s,
            )
            http = httpx2.AsyncClient(
                timeout=timeout,
                verify=tls_context(),
                limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
            )
            client = openai.AsyncOpenAI(
                base_url=endpoint.api_base,
                # vLLM started without --api-key accepts any key; the SDK needs one.
                api_key=endpoint.api_key or "EMPTY",
                max_retries=0,
                timeout=timeout,
                # A plain HTTP client, because the SDK's default one schedules its own
                # closing on whatever loop runs when it is garbage collected, which
                # fails for connections of a loop that has ended.
                http_client=http,
            )
            endpoint.clients[loop] = client
            endpoint.http_clients[loop] = http
        return client

    async def aclose(self) -> None:
        """Close the HTTP connections opened from the running event loop."""
        loop = asyncio.get_running_loop()
        for endpoint in self._endpoints:
            client = endpoint.clients.pop(loop, None)
            endpoint.http_clients.pop(loop, None)
            if client is not None:
                await client.close()

    def _route(self) -> list[_Endpoint]:
        """Endpoints in the order to try them for one request."""
        now = time.monotonic()
        if now - self._last_health_check >= self.config.health_interval_s:
            self._last_health_check = now
            self._check_in_background(self._endpoints)
        else:
            cooled_down = [e for e in self._endpoints if not e.healthy and e.down_until <= now]
            for endpoint in cooled_down:
                # One probe per cool-down period; users keep going to healthy endpoints.
                endpoint.down_until = now + self.config.down_cooldown_s
            if cooled_down:
                self._check_in_background(cooled_down)

        turn, count = self._turn, len(self._endpoints)
        self._turn += 1

        def load(indexed: tuple[int, _Endpoint]) -> tuple[int, int]:
            index, endpoint = indexed
            return endpoint.in_flight, (index - turn) % count

        ranked = [endpoint for _, endpoint in sorted(enumerate(self._endpoints), key=load)]
        healthy = [endpoint for endpoint in ranked if endpoint.healthy]
        # Endpoints marked down come last: when nothing else is left, trying them
        # beats failing without a single attempt.
        down = sorted(
            (endpoint for endpoint in ranked if not endpoint.healthy),
            key=lambda endpoint: endpoint.down_until,
        )
        return healthy + down

    def _check_in_background(self, endpoints: list[_Endpoint]) -> None:
        task = asyncio.get_running_loop().create_task(self._check(endpoints))
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def stream_chat(
        self,
        messages: list[dict[str, str]],
        *,
        sampling: dict[str, float],
        max_tokens: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Stream one answer, failing over between endpoints until the first token.

        Raises LLMUnavailableError when no endpoint produced a first token.
        """
        started = asyncio.get_running_loop().time()
        total_deadline = started + self.config.total_timeout_s
        tried: list[str] = []
        for endpoint in self._route():
            endpoint.in_flight += 1
            try:
                attempt = self._stream_from(
                    endpoint,
                    messages,
                    sampling,
                    max_tokens or self.config.max_tokens,
                    total_deadline,
                )
                async with contextlib.aclosing(attempt):
                    async for event in attempt:
                        yield event
                return
            except _EndpointFailure as failure:
                endpoint.mark_down(str(failure), self.config.down_cooldown_s)
                tried.append(f"{endpoint.url}: {failure}")
            finally:
                endpoint.in_flight -= 1
        raise LLMUnavailableError(
            f"No language model endpoint is reachable (tried: {'; '.join(tried)})."
        )

    async def _model_for(self, endpoint: _Endpoint, client: openai.AsyncOpenAI) -> str:
        if self.config.model:
            return self.config.model
        if endpoint.served_model is None:
            listing = await client.models.list()
            if not listing.data:
                raise _EndpointFailure("the endpoint serves no model")
            endpoint.served_model = listing.data[0].id
        return endpoint.served_model

    async def _stream_from(
        self,
        endpoint: _Endpoint,
        messages: list[dict[str, str]],
        sampling: dict[str, float],
        max_tokens: int,
        total_deadline: float,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Events from one endpoint. Raises _EndpointFailure only before any text
        was yielded, which is what makes failing over safe."""
        loop = asyncio.get_running_loop()
        first_token_deadline = min(loop.time() + self.config.first_token_timeout_s, total_deadline)
        client = self._client(endpoint)
        http = endpoint.http_clients[loop]
        model = ""
        sampling_rest = {
            key: value for key, value in sampling.items() if key not in {"temperature", "top_p"}
        }
        try:
            model = await _before(first_token_deadline, self._model_for(endpoint, client))
            body: dict[str, Any] = {
                "model": model,
                "messages": messages,
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_completion_tokens": max_tokens,
                **{key: sampling[key] for key in ("temperature", "top_p") if key in sampling},
                **sampling_rest,
            }
            response = await _before(first_token_deadline, _chat_stream_open(http, endpoint, body))
        except _StatusError as error:
            if error.status_code >= 500 or error.status_code in _ENDPOINT_FAULT_STATUSES:
                raise _EndpointFailure(str(error)) from error
            yield StreamEvent(
                "error",
                endpoint=endpoint.url,
                model=model,
                error=f"The language model refused the request ({error}).",
            )
            return
        except (openai.APIError, httpx2.HTTPError, TimeoutError) as error:
            raise _EndpointFailure(_describe(error)) from error
        chunks = _sse_data(response)

        splitter = ReasoningSplitter()
        output = R1Output()

        def event(kind: EventKind, **fields: Any) -> StreamEvent:
            return StreamEvent(kind, endpoint=endpoint.url, model=model, output=output, **fields)

        def text_events(pieces: list[Piece]) -> list[StreamEvent]:
            # Each event carries the split as it stands after its own piece, so a
            # consumer that stops after any event holds exactly the text it has shown.
            nonlocal output
            events: list[StreamEvent] = []
            for piece in pieces:
                output = output.extended(piece, reclassified=splitter.reclassified)
                events.append(
                    event(piece.kind, text=piece.text, reclassified=splitter.reclassified)
                )
            return events

        usage: dict[str, Any] | None = None
        finish_reason: str | None = None
        streamed_text = False
        try:
            while True:
                deadline = total_deadline if streamed_text else first_token_deadline
                try:
                    data = await _before(deadline, chunks.__anext__())
                    if data == "[DONE]":
                        break
                    chunk = _chunk(data)
                except StopAsyncIteration:
                    break
                except (_StreamError, httpx2.HTTPError, TimeoutError) as error:
                    if not streamed_text:
                        raise _EndpointFailure(_describe(error)) from error
                    for late in text_events(splitter.finish(complete=False)):
                        yield late
                    if isinstance(error, TimeoutError) and loop.time() >= total_deadline:
                        message = (
                            "The answer was cut off at the time limit of "
                            f"{self.config.total_timeout_s:g} s."
                        )
                    else:
                        message = (
                            f"The answer was cut off: the connection to {endpoint.url} "
                            f"broke mid-answer ({_describe(error)})."
                        )
                    yield event("error", error=message, cut=True, usage=usage)
                    return
                endpoint.mark_up()
                if chunk.get("usage"):
                    usage = {k: v for k, v in chunk["usage"].items() if v is not None}
                for choice in chunk.get("choices") or ():
                    finish_reason = choice.get("finish_reason") or finish_reason
                    delta = choice.get("delta") or {}
                    # Some vLLM releases send both names with the same text.
                    reasoning = delta.get("reasoning") or delta.get("reasoning_content")
                    for text_event in text_events(
                        splitter.feed(content=delta.get("content"), reasoning=reasoning)
                    ):
                        streamed_text = True
                        yield text_event
        finally:
            await chunks.aclose()
            await response.aclose()

        if finish_reason is None:
            if not streamed_text:
                raise _EndpointFailure("the stream ended before the first token")
            for late in text_events(splitter.finish(complete=False)):
                yield late
            yield event(
                "error",
                error=f"The answer was cut off: {endpoint.url} ended the stream early.",
                cut=True,
                usage=usage,
            )
            return
        for late in text_events(splitter.finish()):
            yield late
        yield event("done", usage=usage, finish_reason=finish_reason)

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        sampling: dict[str, float],
        max_tokens: int | None = None,
    ) -> tuple[str, str, StreamEvent]:
        """The whole (reasoning, answer, final event) of one request.

        The final event is `done`, or an `error` whose text says what went wrong.
        Raises LLMUnavailableError like `stream_chat`.
        """
        final = StreamEvent("error", error="The language model stream ended without a result.")
        async for event in self.stream_chat(messages, sampling=sampling, max_tokens=max_tokens):
            if event.kind in ("done", "error"):
                final = event
        return final.output.reasoning, final.output.answer, final
