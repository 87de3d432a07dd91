"""The answering service: one async stream of events that every face of the assistant consumes.

question -> self-contained search query -> passages the user may read -> R1 on the vLLM pool
(or an extractive answer when no model is configured) -> citations -> one Answer row and one
audit record, written together, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import close_old_connections, connections, transaction
from django.utils import timezone

from assistant.answer_record import answer_record_details, answer_start_details
from assistant.extractive import extractive_answer
from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation, ConversationOrigin
from assistant.retrieval import Passage, apassages_for_tags
from assistant.selectors import conversations_visible_to
from audit.ledger import LedgerEntry, ledger_append, ledger_append_many
from audit.models import AuditEvent
from config.activity import serving_activity
from config.metrics import record_answer
from inference.llm import EndpointPool, LLMUnavailableError, PoolConfig
from inference.prompting import (
    ABSTAIN_MARKER,
    SAMPLING,
    Source,
    Turn,
    build_messages,
    build_rewrite_messages,
    extract_citations,
    is_abstention,
    parse_rewritten_query,
    strip_invalid_citations,
)
from ingestion.access import access_tags_for_user

logger = logging.getLogger(__name__)

EventKind = Literal["meta", "reasoning", "answer", "reclassify", "notice", "done"]

NO_PASSAGES_ANSWER = f"{ABSTAIN_MARKER}: none of the documents you may read matched the question."
REWRITE_MAX_TOKENS = 1024
HISTORY_TURNS = 4


class QuestionRejected(ValueError):
    """The question cannot be asked as it is; the message says why. Nothing was recorded."""


@dataclass(frozen=True)
class AnswerEvent:
    kind: EventKind
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def question_validate(question: str) -> str:
    text = question.strip()
    if not text:
        raise QuestionRejected("Please type a question.")
    if len(text) > settings.QUESTION_MAX_CHARS:
        raise QuestionRejected(
            f"The question is {len(text)} characters long; the limit is "
            f"{settings.QUESTION_MAX_CHARS}. Please shorten it."
        )
    if not re.search(r"\w", text):
        raise QuestionRejected("The question has no words in it.")
    return text


@cache
def _pool_for(urls: tuple[str, ...]) -> EndpointPool:
    return EndpointPool(
        PoolConfig(
            urls=list(urls),
            api_key=settings.VLLM_API_KEY or None,
            model=settings.VLLM_MODEL or None,
            connect_timeout_s=settings.VLLM_CONNECT_TIMEOUT_S,
            first_token_timeout_s=settings.VLLM_FIRST_TOKEN_TIMEOUT_S,
            total_timeout_s=settings.VLLM_TOTAL_TIMEOUT_S,
            max_tokens=settings.VLLM_MAX_TOKENS,
        )
    )


def model_pool() -> EndpointPool | None:
    """The vLLM pool when endpoints are configured; None means extractive answers."""
    urls = tuple(settings.VLLM_URLS)
    return _pool_for(urls) if urls else None


def _conversation_history_and_tags(
    user: User, conversation_id: int | None, question: str, origin: str
) -> tuple[Conversation, list[Turn], frozenset[str]]:
    """Everything the question needs from the database, in one trip to a worker thread.

    The access tags are read as the question arrives: what the user may read at that moment.
    """
    conversation, history = _conversation_and_history(user, conversation_id, question, origin)
    return conversation, history, access_tags_for_user(user)


def _conversation_and_history(
    user: User, conversation_id: int | None, question: str, origin: str
) -> tuple[Conversation, list[Turn]]:
    if conversation_id is None:
        title = " ".join(question.split())[:80]
        return Conversation.objects.create(user=user, title=title, origin=origin), []
    conversation = conversations_visible_to(user=user).filter(id=conversation_id).first()
    if conversation is None:
        raise QuestionRejected("No such conversation.")
    earlier = conversation.answers.filter(
        status__in=[AnswerStatus.ANSWERED, AnswerStatus.ABSTAINED]
    ).order_by("-created_at")[:HISTORY_TURNS]
    # Only questions and answers go back to the model, never its earlier reasoning.
    history = [Turn(question=a.question, answer=a.answer) for a in reversed(earlier)]
    return conversation, history


def heuristic_standalone_query(question: str, history: list[Turn]) -> str:
    """Without a model, a follow-up is searched together with the question it follows."""
    if not history:
        return question
    return f"{history[-1].question} {question}"


async def _standalone_query(question: str, history: list[Turn], pool: EndpointPool | None) -> str:
    if not history:
        return question
    if pool is not None:
        with contextlib.suppress(LLMUnavailableError):
            _, answer, final = await pool.complete(
                build_rewrite_messages(question, history),
                sampling=SAMPLING,
                max_tokens=REWRITE_MAX_TOKENS,
            )
            if final.kind == "done":
                return parse_rewritten_query(answer, heuristic_standalone_query(question, history))
    return heuristic_standalone_query(question, history)


def _sources(passages: list[Passage]) -> list[Source]:
    return [
        Source(n=n, title=p.title, source=p.source, page=p.page, heading=p.heading, text=p.text)
        for n, p in enumerate(passages, start=1)
    ]


@dataclass
class _Draft:
    """What is known of an answer while it streams; saved once, whatever happens."""

    user: User
    conversation: Conversation
    question: str
    searched_query: str = ""
    access_tags: list[str] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)
    mode: str = AnswerMode.EXTRACTIVE
    reasoning: str = ""
    answer: str = ""
    status: str = AnswerStatus.FAILED
    error: str = ""
    model: str = ""
    endpoint: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    first_token_ms: float | None = None
    request_id: str = ""
    history: list[Turn] = field(default_factory=list)
    # The row saved before the first byte streams (None when the answer failed before that).
    answer_id: int | None = None
    # The documents the asker chose to ask within (None: everything they may read).
    document_choice: frozenset[int] | None = None

    def mark_first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.started) * 1000


def _start_many(starts: list[tuple[_Draft, str]]) -> list[int]:
    """Save questions and their evidence, with their ledger records, before anything streams.

    Questions asked at the same moment share one transaction and one append to the ledger.
    """
    with transaction.atomic():
        answers = [
            Answer.objects.create(
                conversation=draft.conversation,
                user=draft.user,
                question=draft.question,
                searched_query=draft.searched_query,
                status=AnswerStatus.IN_PROGRESS,
                mode=mode,
                passages=[p.as_json(n=n) for n, p in enumerate(draft.passages, start=1)],
                progress_at=timezone.now(),
            )
            for draft, mode in starts
        ]
        Conversation.objects.filter(id__in={draft.conversation.id for draft, _ in starts}).update(
            updated_at=timezone.now()
        )
        ledger_append_many(
            [
                LedgerEntry(
                    event=AuditEvent.ANSWER_STARTED,
                    actor=draft.user,
                    request_id=draft.request_id,
                    details=answer_start_details(
                        answer,
                        access_tags=draft.access_tags,
                        document_choice=draft.document_choice,
                    ),
                )
                for (draft, _), answer in zip(starts, answers, strict=True)
            ]
        )
    return [answer.pk for answer in answers]


class _StartGroup:
    """Gathers the starts of questions that reach this point together into one write.

    One write at a time (group commit): the questions that arrive while a group is being
    written wait and form the next group, instead of each group contending for the
    database's write lock. The one that takes the turn writes for everyone waiting (in its
    own request's thread, so a test's or a request's database connection is the one used);
    a failed group is written again one by one, so one bad question never keeps another
    from starting.
    """

    def __init__(self) -> None:
        self._waiting: list[tuple[_Draft, str, asyncio.Future[int]]] = []
        self._turn = asyncio.Lock()

    async def start(self, draft: _Draft, mode: str) -> int:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[int] = loop.create_future()
        self._waiting.append((draft, mode, started))
        try:
            async with self._turn:
                if not started.done():
                    # Let the questions that are a step behind join before the write.
                    await asyncio.sleep(0)
                    group, self._waiting = self._waiting, []
                    if group:
                        # Shielded: the others' starts go on if this question's client leaves.
                        await asyncio.shield(asyncio.ensure_future(self._write(group)))
        except asyncio.CancelledError:
            # A question whose client left before a group took it is not started at all.
            self._waiting = [item for item in self._waiting if item[2] is not started]
            raise
        return await started

    @staticmethod
    async def _write(group: list[tuple[_Draft, str, asyncio.Future[int]]]) -> None:
        try:
            ids = await sync_to_async(_start_many)([(draft, mode) for draft, mode, _ in group])
        except Exception as error:
            if len(group) == 1:
                group[0][2].set_exception(error)
                return
            for item in group:
                await _StartGroup._write([item])
            return
        for (_, _, started), answer_id in zip(group, ids, strict=True):
            started.set_result(answer_id)


_start_groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _StartGroup] = (
    weakref.WeakKeyDictionary()
)


async def _start(draft: _Draft, mode: str) -> int:
    loop = asyncio.get_running_loop()
    group = _start_groups.get(loop)
    if group is None:
        group = _start_groups[loop] = _StartGroup()
    return await group.start(draft, mode)


def _checkpoint_many(progress: list[tuple[int, str, str]]) -> None:
    """Keep the text streamed so far of every answer in progress, in one transaction."""
    now = timezone.now()
    try:
        with transaction.atomic():
            for answer_id, answer_text, reasoning in progress:
                Answer.objects.filter(pk=answer_id, status=AnswerStatus.IN_PROGRESS).update(
                    answer=answer_text, reasoning=reasoning, progress_at=now
                )
    finally:
        # A worker thread outlives any request: its connection follows DATABASE_CONN_MAX_AGE
        # here, as a request's would.
        close_old_connections()


def _connections_released() -> None:
    """Give back this thread's database connections, as the end of a request would.

    Not inside a transaction (a caller's, or a test's): closing would abort it.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


class _Checkpointer:
    """One writer per event loop for the text (and the proof of life) of every streaming answer.

    Each second it writes what every answer has shown so far, all in one transaction on a
    worker thread: sixty-four answers streaming at once cost one write a second, not 64.
    """

    def __init__(self) -> None:
        self._drafts: dict[int, _Draft] = {}
        self._task: asyncio.Task[None] | None = None

    def follow(self, draft: _Draft) -> None:
        assert draft.answer_id is not None
        self._drafts[draft.answer_id] = draft
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def drop(self, draft: _Draft) -> None:
        if draft.answer_id is not None:
            self._drafts.pop(draft.answer_id, None)

    async def _run(self) -> None:
        while self._drafts:
            await asyncio.sleep(settings.ANSWER_CHECKPOINT_S)
            progress = [
                (answer_id, draft.answer, draft.reasoning)
                for answer_id, draft in list(self._drafts.items())
            ]
            if not progress:
                continue
            try:
                # Its own thread and connection: no request's thread waits for it.
                await sync_to_async(_checkpoint_many, thread_sensitive=False)(progress)
            except Exception:
                logger.exception("Checkpointing %s answers failed; trying again.", len(progress))


_checkpointers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Checkpointer] = (
    weakref.WeakKeyDictionary()
)


def _checkpointer() -> _Checkpointer:
    loop = asyncio.get_running_loop()
    checkpointer = _checkpointers.get(loop)
    if checkpointer is None:
        checkpointer = _checkpointers[loop] = _Checkpointer()
    return checkpointer


def _save(draft: _Draft) -> tuple[Answer, list[dict[str, Any]]]:
    kept, dropped = extract_citations(draft.answer, len(draft.passages))
    answer_text = strip_invalid_citations(draft.answer, len(draft.passages))
    citations = [draft.passages[n - 1].as_json(n=n) for n in kept]
    passages_json = [p.as_json(n=n) for n, p in enumerate(draft.passages, start=1)]
    total_ms = (time.perf_counter() - draft.started) * 1000
    outcome = {
        "answer": answer_text,
        "reasoning": draft.reasoning,
        "status": draft.status,
        "mode": draft.mode,
        "citations": citations,
        "passages": passages_json,
        "dropped_citations": dropped,
        "model_name": draft.model,
        "endpoint": draft.endpoint,
        "error": draft.error,
        "prompt_tokens": draft.usage.get("prompt_tokens"),
        "completion_tokens": draft.usage.get("completion_tokens"),
        "first_token_ms": draft.first_token_ms,
        "total_ms": total_ms,
        "progress_at": None,
    }
    with transaction.atomic():
        if draft.answer_id is None:
            answer = Answer.objects.create(
                conversation=draft.conversation,
                user=draft.user,
                question=draft.question,
                searched_query=draft.searched_query,
                **outcome,
            )
        else:
            # Locked: a sweep closing answers of dead processes must not close this one too.
            answer = Answer.objects.select_for_update().get(pk=draft.answer_id)
            for name, value in outcome.items():
                setattr(answer, name, value)
            answer.save()
        Conversation.objects.filter(id=draft.conversation.id).update(updated_at=timezone.now())
        ledger_append(
            event=AuditEvent.ANSWER,
            actor=draft.user,
            request_id=draft.request_id,
            details=answer_record_details(
                answer,
                access_tags=draft.access_tags,
                prompt=draft.messages,
                sampling={**SAMPLING, "max_tokens": settings.VLLM_MAX_TOKENS}
                if draft.mode == AnswerMode.LLM
                else {},
                usage=draft.usage,
                document_choice=draft.document_choice,
            ),
        )
    record_answer(
        draft.status,
        draft.mode,
        total_ms,
        draft.first_token_ms,
        (draft.usage.get("prompt_tokens") or 0) + (draft.usage.get("completion_tokens") or 0),
    )
    return answer, citations


async def _stream_model(draft: _Draft, pool: EndpointPool) -> AsyncIterator[AnswerEvent]:
    draft.mode = AnswerMode.LLM
    draft.messages = build_messages(draft.question, _sources(draft.passages), draft.history)
    try:
        async for event in pool.stream_chat(draft.messages, sampling=SAMPLING):
            draft.endpoint = event.endpoint or draft.endpoint
            draft.model = event.model or draft.model
            draft.reasoning, draft.answer = event.output
            if event.kind == "reasoning":
                draft.mark_first_token()
                yield AnswerEvent("reasoning", event.text)
            elif event.kind == "answer":
                draft.mark_first_token()
                yield AnswerEvent("reclassify" if event.reclassified else "answer", event.text)
            elif event.kind == "done":
                draft.usage = dict(event.usage or {})
                draft.status = (
                    AnswerStatus.ABSTAINED if is_abstention(draft.answer) else AnswerStatus.ANSWERED
                )
            elif event.kind == "error":
                draft.error = event.error or "The language model failed."
                draft.status = AnswerStatus.CUT_OFF if event.cut else AnswerStatus.FAILED
                notice = (
                    "The answer was cut off before it was complete: " + draft.error
                    if event.cut
                    else draft.error
                )
                yield AnswerEvent("notice", notice)
    except LLMUnavailableError as error:
        draft.status = AnswerStatus.FAILED
        draft.error = str(error)
        yield AnswerEvent(
            "notice",
            "The language model is not reachable right now, so no answer was written. "
            "Your question is kept; please try again in a moment.",
        )


async def answer_events(
    *,
    user: User,
    question: str,
    conversation_id: int | None = None,
    request_id: str = "",
    origin: str = ConversationOrigin.PORTAL,
    document_ids: frozenset[int] | None = None,
) -> AsyncIterator[AnswerEvent]:
    """Stream one answer. Raises QuestionRejected before anything starts for bad input.

    The final event is `done` with the saved answer's id, status, mode and citations. If the
    consumer stops early (a stop button, a closed connection) the answer is saved as cancelled.
    `document_ids` (from `readable_document_choice`) limits the search to those documents,
    inside the reader's access filter; `origin` names where a new conversation was started.
    """
    text = question_validate(question)
    conversation, history, tags = await sync_to_async(_conversation_history_and_tags)(
        user, conversation_id, text, origin
    )
    draft = _Draft(
        user=user,
        conversation=conversation,
        question=text,
        request_id=request_id,
        history=history,
        document_choice=document_ids,
    )
    pool = model_pool()
    saved = False
    # An answer in flight keeps upkeep that would stall the process (config.activity) away.
    serving_activity.begin()
    try:
        draft.searched_query = await _standalone_query(text, history, pool)
        draft.access_tags = sorted(tags)
        draft.passages = await apassages_for_tags(
            access_tags=tags, query=draft.searched_query, document_ids=document_ids
        )
        draft.answer_id = await _start(draft, AnswerMode.LLM if pool else AnswerMode.EXTRACTIVE)
        _checkpointer().follow(draft)
        # A streaming answer holds no database connection until it is saved: a hundred
        # answers stream at once under load, and one connection each would exhaust the
        # database's limit (PostgreSQL allows 100 by default) and fail other requests.
        # SQLite has no such limit, and closing its connection costs a WAL checkpoint.
        if connections["default"].vendor != "sqlite":
            await sync_to_async(_connections_released)()
        yield AnswerEvent(
            "meta",
            data={
                "conversation_id": conversation.id,
                "answer_id": draft.answer_id,
                "searched_query": draft.searched_query,
                "mode": AnswerMode.LLM if pool else AnswerMode.EXTRACTIVE,
                "sources": len(draft.passages),
            },
        )
        if not draft.passages:
            draft.mode = AnswerMode.LLM if pool else AnswerMode.EXTRACTIVE
            draft.answer = NO_PASSAGES_ANSWER
            draft.status = AnswerStatus.ABSTAINED
            yield AnswerEvent("answer", draft.answer)
        elif pool is not None:
            async for event in _stream_model(draft, pool):
                yield event
        else:
            draft.mode = AnswerMode.EXTRACTIVE
            draft.answer, answered = extractive_answer(draft.searched_query, draft.passages)
            draft.status = AnswerStatus.ANSWERED if answered else AnswerStatus.ABSTAINED
            draft.mark_first_token()
            yield AnswerEvent("answer", draft.answer)
        answer, citations = await sync_to_async(_save)(draft)
        saved = True
        yield AnswerEvent(
            "done",
            data={
                "answer_id": answer.id,
                "conversation_id": conversation.id,
                "status": answer.status,
                "mode": answer.mode,
                "answer": answer.answer,
                "reasoning": answer.reasoning,
                "searched_query": answer.searched_query,
                "citations": citations,
                "dropped_citations": answer.dropped_citations,
                "error": answer.error,
                "model": answer.model_name,
            },
        )
    except (GeneratorExit, asyncio.CancelledError):
        draft.status = AnswerStatus.CANCELLED
        draft.error = "Stopped before the answer was complete."
        raise
    except Exception as error:
        draft.status = AnswerStatus.FAILED
        draft.error = f"The answer failed: {error.__class__.__name__}: {error}"
        raise
    finally:
        serving_activity.end()
        if draft.answer_id is not None:
            _checkpointer().drop(draft)
        if not saved:
            # Keep what was produced, and the record of it, however the stream ended.
            await asyncio.shield(sync_to_async(_save)(draft))
