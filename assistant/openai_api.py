"""The assistant as an OpenAI-compatible model, so that chat clients and SDKs can use it.

It answers like vLLM serving R1 with a reasoning parser: the reasoning in `reasoning` (and
`reasoning_content`, for older clients), the answer in `content` with its [n] citations and a
"Sources:" list, and the cited passages in an extra `citations` field. The sign-in is the
caller's API token as a Bearer key, and the answer comes from what that person may read.

The last user message is the question. Earlier turns are not taken on trust: when they are
the questions of one of the caller's conversations (a client sending the chat so far), the
answer continues it; a `conversation_id` field picks one explicitly; otherwise a new
conversation starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.limits import Limited, aask_admit, holding_slot
from accounts.login_throttle import client_address
from accounts.models import ApiToken, TokenScope
from accounts.tokens import ScopeMissing, TokenRejected, atoken_verify, bearer_key, scope_require
from assistant.answering import QuestionRejected, question_validate
from assistant.api import (
    STREAM_HEADERS,
    AnswerStream,
    answer_stream,
    citation_public,
    done_with_review,
    new_request_id,
)
from assistant.models import Answer, ConversationOrigin
from assistant.selectors import conversations_visible_to
from config.errors import openai_error
from config.json_bodies import JSONBodyRejected, json_body_read
from inference.openai_wire import completion_chunk, sse_data

logger = logging.getLogger(__name__)

MODEL_ID = "knowledge-assistant"
MODEL_OWNER = "knowledge-assistant"
# How many earlier answers with the same question are checked when matching a conversation.
CONVERSATION_MATCH_CANDIDATES = 5


class ChatRequestInvalid(Exception):
    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


@dataclass(frozen=True)
class ChatRequest:
    question: str
    earlier_questions: list[str]
    stream: bool
    include_usage: bool
    conversation_id: int | None


def unauthorized(reason: str = "Missing API key.") -> JsonResponse:
    response = openai_error(
        f"{reason} Send your API token as 'Authorization: Bearer <token>'.",
        status=401,
        code="invalid_api_key",
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


async def token_for(request: HttpRequest, scope: str) -> ApiToken | JsonResponse:
    """The caller's API token when it signs someone in and has `scope`; else the error to send."""
    key = bearer_key(request.headers.get("Authorization", ""))
    if key is None:
        return unauthorized()
    try:
        token = await atoken_verify(key, ip=client_address(request) or None)
        scope_require(token, scope)
    except TokenRejected as rejected:
        return unauthorized(str(rejected))
    except ScopeMissing as missing:
        return openai_error(
            str(missing), status=403, error_type="permission_error", code="insufficient_scope"
        )
    return token


def rate_limited(limited: Limited) -> JsonResponse:
    response = openai_error(
        limited.message, status=429, error_type="rate_limit_error", code="rate_limit_exceeded"
    )
    response["Retry-After"] = str(limited.retry_after_s)
    return response


def model_card() -> dict[str, Any]:
    return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": MODEL_OWNER}


def _message_text(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ChatRequestInvalid(
                    "Only text content is supported.", param=f"messages[{index}].content"
                )
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    if content is None:
        return ""
    raise ChatRequestInvalid("Message content must be text.", param=f"messages[{index}].content")


def chat_request_parse(body: Any) -> ChatRequest:
    """Check a chat completion request; the sampling parameters are the assistant's own."""
    if not isinstance(body, dict):
        raise ChatRequestInvalid("The request body must be a JSON object.")
    model = body.get("model")
    if model not in (None, MODEL_ID):
        raise ChatRequestInvalid(
            f"The model `{model}` does not exist; use `{MODEL_ID}`.", param="model", status=404
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatRequestInvalid("`messages` must be a non-empty list.", param="messages")
    if body.get("n", 1) != 1:
        raise ChatRequestInvalid("Only one choice (n=1) is supported.", param="n")
    # System and tool turns are left out: the assistant's instructions are fixed.
    turns: list[tuple[str, str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ChatRequestInvalid("Each message needs a role.", param=f"messages[{index}]")
        if message["role"] in ("user", "assistant"):
            turns.append((message["role"], _message_text(message, index)))
    if not turns or turns[-1][0] != "user":
        raise ChatRequestInvalid("The last message must be the user's question.", param="messages")
    try:
        question = question_validate(turns[-1][1])
    except QuestionRejected as rejected:
        raise ChatRequestInvalid(str(rejected), param="messages") from rejected
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    conversation_id = body.get("conversation_id")
    if not isinstance(stream, bool):
        raise ChatRequestInvalid("`stream` must be a boolean.", param="stream")
    if not isinstance(options, dict):
        raise ChatRequestInvalid("`stream_options` must be an object.", param="stream_options")
    if conversation_id is not None and (
        not isinstance(conversation_id, int) or isinstance(conversation_id, bool)
    ):
        raise ChatRequestInvalid("`conversation_id` must be an integer.", param="conversation_id")
    return ChatRequest(
        question=question,
        earlier_questions=[text.strip() for role, text in turns[:-1] if role == "user"],
        stream=stream,
        include_usage=bool(options.get("include_usage", False)),
        conversation_id=conversation_id,
    )


def conversation_for_chat(user: User, chat: ChatRequest) -> int | None:
    """The conversation the request continues, or None for a new one."""
    if chat.conversation_id is not None:
        if not conversations_visible_to(user=user).filter(id=chat.conversation_id).exists():
            raise ChatRequestInvalid("No such conversation.", param="conversation_id", status=404)
        return chat.conversation_id
    if not chat.earlier_questions:
        return None
    candidates = (
        Answer.objects.filter(
            user=user,
            question=chat.earlier_questions[-1],
            conversation__in=conversations_visible_to(user=user),
        )
        .order_by("-created_at")
        .values_list("conversation_id", flat=True)[:CONVERSATION_MATCH_CANDIDATES]
    )
    for conversation_id in candidates:
        questions = list(
            Answer.objects.filter(conversation_id=conversation_id)
            .order_by("created_at", "id")
            .values_list("question", flat=True)
        )
        if questions == chat.earlier_questions:
            return conversation_id
    return None


def sources_text(citations: list[dict[str, Any]]) -> str:
    """The cited passages as a list the reader can follow, after the answer."""
    if not citations:
        return ""
    lines = ["", "", "Sources:"]
    for citation in citations:
        where = [citation["source"]]
        if citation.get("page"):
            where.append(f"page {citation['page']}")
        if citation.get("heading"):
            where.append(citation["heading"])
        title = citation.get("title") or citation["source"]
        overdue = (
            f" (overdue for review since {citation['review_by']})"
            if citation.get("review_overdue")
            else ""
        )
        lines.append(f"[{citation['n']}] {title} ({', '.join(where)}){overdue}")
    return "\n".join(lines)


def notice_text(notice: str, *, after_text: bool) -> str:
    return f"\n\n{notice}" if after_text else notice


def answer_extras(done: dict[str, Any]) -> dict[str, Any]:
    """Fields beyond OpenAI's that carry what a chat client cannot show by itself."""
    return {
        "citations": [citation_public(citation) for citation in done["citations"]],
        "conversation_id": done["conversation_id"],
        "answer_id": done["answer_id"],
        "status": done["status"],
        "mode": done["mode"],
        "searched_query": done["searched_query"],
    }


def usage_of(answer_id: int) -> dict[str, int]:
    """Model tokens; an extractive answer used none."""
    counts = (
        Answer.objects.filter(id=answer_id)
        .values_list("prompt_tokens", "completion_tokens")
        .first()
    )
    prompt, completion = (counts[0] or 0, counts[1] or 0) if counts else (0, 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def models(request: HttpRequest) -> HttpResponse:
    if request.method != "GET":
        return openai_error("Use GET.", status=405)
    token = await token_for(request, TokenScope.ASK)
    if isinstance(token, JsonResponse):
        return token
    return JsonResponse({"object": "list", "data": [model_card()]})


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    if request.method != "POST":
        return openai_error("Use POST.", status=405)
    token = await token_for(request, TokenScope.ASK)
    if isinstance(token, JsonResponse):
        return token
    user = token.user
    try:
        body = json_body_read(request, if_empty=None)
    except JSONBodyRejected as rejected:
        return openai_error(rejected.message, status=400)
    try:
        chat = chat_request_parse(body)
        conversation_id = await sync_to_async(conversation_for_chat)(user, chat)
    except ChatRequestInvalid as invalid:
        return openai_error(invalid.message, status=invalid.status, param=invalid.param)
    try:
        slot = await aask_admit(user_id=user.pk, token=token)
    except Limited as limited:
        return rate_limited(limited)
    completion_id = f"chatcmpl-{new_request_id()}"
    events = holding_slot(
        answer_stream(
            user=user,
            question=chat.question,
            conversation_id=conversation_id,
            # The audit record carries the id the client received.
            request_id=completion_id,
            origin=ConversationOrigin.OPENAI,
        ),
        slot,
    )
    if chat.stream:
        chunks = completion_chunks(
            events, completion_id=completion_id, include_usage=chat.include_usage
        )
        return StreamingHttpResponse(
            chunks, content_type="text/event-stream", headers=STREAM_HEADERS
        )
    return await completion(events, completion_id=completion_id)


async def completion(events: AnswerStream, *, completion_id: str) -> HttpResponse:
    notices: list[str] = []
    done: dict[str, Any] | None = None
    async with aclosing(events):
        async for event in events:
            if event.kind == "notice":
                notices.append(event.text)
            elif event.kind == "done":
                done = event.data
    if done is None:
        raise RuntimeError("The answer stream ended without a final event.")
    done = await done_with_review(done)
    if done["status"] == "failed" and not done["answer"]:
        message = " ".join(notices) or "The answer failed; please try again."
        return openai_error(message, status=503, error_type="service_unavailable")
    content = done["answer"]
    for notice in notices:
        content += notice_text(notice, after_text=bool(content))
    content += sources_text(done["citations"])
    reasoning = done["reasoning"] or None
    return JsonResponse(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "reasoning": reasoning,
                        "reasoning_content": reasoning,
                        "tool_calls": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                    "stop_reason": None,
                }
            ],
            "usage": await sync_to_async(usage_of)(done["answer_id"]),
            **answer_extras(done),
        }
    )


async def completion_chunks(
    events: AnswerStream, *, completion_id: str, include_usage: bool
) -> AsyncIterator[str]:
    """`chat.completion.chunk` events framed as vLLM frames them, then `data: [DONE]`."""
    created = int(time.time())

    def chunk(
        delta: dict[str, Any], finish_reason: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        payload = completion_chunk(
            completion_id=completion_id,
            created=created,
            model=MODEL_ID,
            delta=delta,
            finish_reason=finish_reason,
        )
        payload.update(extra)
        if include_usage:
            payload["usage"] = None
        return payload

    yield sse_data(chunk({"role": "assistant", "content": ""}))
    wrote_content = False
    async with aclosing(events):
        try:
            async for event in events:
                if event.kind == "reasoning":
                    yield sse_data(
                        chunk({"reasoning": event.text, "reasoning_content": event.text})
                    )
                elif event.kind in ("answer", "reclassify"):
                    yield sse_data(chunk({"content": event.text}))
                    wrote_content = wrote_content or bool(event.text)
                elif event.kind == "notice":
                    yield sse_data(
                        chunk({"content": notice_text(event.text, after_text=wrote_content)})
                    )
                    wrote_content = True
                elif event.kind == "done":
                    done = await done_with_review(event.data)
                    if done["citations"]:
                        yield sse_data(chunk({"content": sources_text(done["citations"])}))
                    yield sse_data(chunk({}, "stop", **answer_extras(done)))
                    if include_usage:
                        usage = await sync_to_async(usage_of)(done["answer_id"])
                        yield sse_data(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": MODEL_ID,
                                "choices": [],
                                "usage": usage,
                            }
                        )
        except Exception:
            # The answer is recorded as failed; the client gets an error it can show.
            logger.exception("chat completion stream failed")
            yield sse_data(
                {
                    "error": {
                        "message": "The answer failed; please try again.",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
            )
    yield "data: [DONE]\n\n"
