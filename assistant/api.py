"""The assistant's REST API: ask (whole or streamed), search, and the user's conversations.

Every read goes through the same access rule as the portal: search and answers through
`passages_for_user`, conversations only ever the caller's own; anything else is a 404.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.db.models import Count, QuerySet
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.limits import api_ask_admit, holding_slot
from accounts.models import TokenScope
from assistant.answering import AnswerEvent, QuestionRejected, answer_events, question_validate
from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation, ConversationOrigin
from assistant.retrieval import passages_for_user
from assistant.selectors import answers_in_conversation, conversations_visible_to
from assistant.services import conversation_hide
from config.request_context import current_request_id
from ingestion.api import ERROR_RESPONSE, RequestInvalid, validated
from ingestion.review import citation_with_review, citations_with_review, review_states
from ingestion.vector_index.base import SearchMode

logger = logging.getLogger(__name__)

SEARCH_MAX_K = 100
SEARCH_DEFAULT_K = 10
CITATION_FIELDS = (
    "n",
    "source",
    "title",
    "page",
    "heading",
    "text",
    "document_id",
    "version_id",
    "point_id",
    # The cited document's review date and whether it has passed (ingestion/review.py).
    "review_by",
    "review_overdue",
)
# Proxies in front of the app must pass events on as they come, not buffer the stream.
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Before OpenAPI 3.2 a text/event-stream schema describes each event of the stream.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "meta, reasoning, answer, ... and last done"},
        "data": {"type": "string", "description": "A JSON object."},
    },
    "required": ["event", "data"],
}


def citation_public(citation: dict[str, Any]) -> dict[str, Any]:
    """A citation as the APIs show it; pass citations through `citations_with_review` first."""
    shown = {key: citation.get(key) for key in CITATION_FIELDS}
    shown["review_overdue"] = bool(shown["review_overdue"])
    return shown


async def done_with_review(done: dict[str, Any]) -> dict[str, Any]:
    """The final event's data with each citation's review state, read now."""
    citations = await sync_to_async(citations_with_review)(done["citations"])
    return {**done, "citations": citations}


def answer_json(done: dict[str, Any]) -> dict[str, Any]:
    """The final answer as the API shows it: the shape of `manage.py ask --json`."""
    return {
        "answer": done["answer"],
        "reasoning": done["reasoning"],
        "citations": [citation_public(citation) for citation in done["citations"]],
        "status": done["status"],
        "mode": done["mode"],
        "searched_query": done["searched_query"],
        "conversation_id": done["conversation_id"],
        "answer_id": done["answer_id"],
        "error": done["error"],
        "model": done["model"],
    }


def sse_frame(event: str, data: dict[str, Any]) -> str:
    # JSON escapes newlines, so one `data:` line carries the whole payload.
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def new_request_id() -> str:
    """The request's id as the middleware assigned it, so logs, header and ledger record agree."""
    return current_request_id() or uuid.uuid4().hex


AnswerStream = AsyncGenerator[AnswerEvent, None]


def answer_stream(
    *,
    user: User,
    question: str,
    conversation_id: int | None,
    request_id: str,
    origin: str = ConversationOrigin.API,
) -> AnswerStream:
    """The answering service's events, as the generator they are, so a consumer can close it."""
    events = answer_events(
        user=user,
        question=question,
        conversation_id=conversation_id,
        request_id=request_id,
        origin=origin,
    )
    return cast("AnswerStream", events)


async def final_answer(events: AnswerStream) -> dict[str, Any]:
    async with aclosing(events):
        async for event in events:
            if event.kind == "done":
                return answer_json(await done_with_review(event.data))
    raise RuntimeError("The answer stream ended without a final event.")


async def answer_sse(events: AnswerStream) -> AsyncIterator[str]:
    """The answer's events as server-sent events; closing this stream stops the answer."""
    async with aclosing(events):
        try:
            async for event in events:
                if event.kind == "done":
                    yield sse_frame("done", answer_json(await done_with_review(event.data)))
                elif event.kind == "meta":
                    yield sse_frame("meta", event.data)
                else:
                    yield sse_frame(event.kind, {"text": event.text})
        except QuestionRejected as rejected:
            yield sse_frame("error", {"detail": str(rejected)})
        except Exception:
            # The answer is recorded as failed; the reader learns that much, not the internals.
            logger.exception("answer stream failed")
            yield sse_frame("error", {"detail": "The answer failed; please try again."})


def _conversations_with_answer_count(user: User) -> QuerySet[Conversation]:
    return conversations_visible_to(user=user).annotate(answer_count=Count("answers"))


def conversation_checked(user: User, conversation_id: int | None) -> int | None:
    """The conversation to continue, or 404 when it is not the caller's (or was removed)."""
    if conversation_id is not None:
        get_object_or_404(conversations_visible_to(user=user), id=conversation_id)
    return conversation_id


class JSONWhenNothingMatches(DefaultContentNegotiation):
    """A streaming client accepts `text/event-stream`; its errors still come as JSON."""

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class CitationSerializer(serializers.Serializer):
    n = serializers.IntegerField(help_text="The number the answer cites as [n].")
    source = serializers.CharField()
    title = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField(allow_blank=True)
    text = serializers.CharField(help_text="The passage as the model was shown it.")
    document_id = serializers.IntegerField()
    version_id = serializers.IntegerField()
    point_id = serializers.CharField(help_text="The passage's id in the index.")
    review_by = serializers.DateField(
        allow_null=True, help_text="The cited document's review date, if it has one."
    )
    review_overdue = serializers.BooleanField(
        help_text="The cited document is past its review date: it may be out of date."
    )


class AskRequestSerializer(serializers.Serializer):
    question = serializers.CharField(allow_blank=True, trim_whitespace=False)
    conversation_id = serializers.IntegerField(
        required=False, allow_null=True, help_text="Continue this conversation (a follow-up)."
    )
    stream = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Answer with server-sent events (meta, reasoning, answer, reclassify, "
        "notice, done, error) instead of one JSON object.",
    )


class AskResponseSerializer(serializers.Serializer):
    answer = serializers.CharField(allow_blank=True, help_text="Markdown with [n] citations.")
    reasoning = serializers.CharField(allow_blank=True, help_text="The model's thinking.")
    citations = CitationSerializer(many=True)
    status = serializers.ChoiceField(choices=AnswerStatus.choices)
    mode = serializers.ChoiceField(
        choices=AnswerMode.choices,
        help_text="`extractive`: sentences of the passages, without a language model.",
    )
    searched_query = serializers.CharField(help_text="The self-contained query searched.")
    conversation_id = serializers.IntegerField()
    answer_id = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)
    model = serializers.CharField(allow_blank=True)


class PassageSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    point_id = serializers.CharField()
    document_id = serializers.IntegerField()
    version_id = serializers.IntegerField()
    title = serializers.CharField()
    source = serializers.CharField()
    page = serializers.IntegerField(allow_null=True)
    heading = serializers.CharField(allow_blank=True)
    chunk_index = serializers.IntegerField()
    score = serializers.FloatField()
    text = serializers.CharField()


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(trim_whitespace=True)
    k = serializers.IntegerField(
        required=False, default=SEARCH_DEFAULT_K, min_value=1, max_value=SEARCH_MAX_K
    )
    mode = serializers.ChoiceField(
        choices=["hybrid", "dense", "sparse"], required=False, default="hybrid"
    )


class ConversationSerializer(serializers.ModelSerializer):
    answer_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "created_at", "updated_at", "answer_count"]
        read_only_fields = fields


class AnswerSerializer(serializers.ModelSerializer):
    citations = serializers.SerializerMethodField()
    model = serializers.CharField(source="model_name", read_only=True)

    class Meta:
        model = Answer
        fields = [
            "id",
            "question",
            "searched_query",
            "answer",
            "reasoning",
            "status",
            "mode",
            "citations",
            "error",
            "model",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(CitationSerializer(many=True))
    def get_citations(self, answer: Answer) -> list[dict[str, Any]]:
        states = self.context.get("review_states")
        if states is None:
            states = review_states(citation.get("document_id") for citation in answer.citations)
        return [
            citation_public(citation_with_review(citation, states)) for citation in answer.citations
        ]


class ConversationDetailSerializer(ConversationSerializer):
    answers = AnswerSerializer(many=True, read_only=True)

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "answers"]
        read_only_fields = fields


class ConversationRenameSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)


class AskView(APIView):
    content_negotiation_class = JSONWhenNothingMatches
    token_scopes = {"POST": TokenScope.ASK}

    @extend_schema(
        summary="Ask a question",
        description="Answers from the documents the caller may read, with citations [n] "
        "resolved to passages and the model's reasoning. Every answer, also a failed one, is "
        "kept in the conversation and the audit log. With `stream` the same answer arrives as "
        "server-sent events; the last is `done` with the object described here. `status` is "
        "`abstained` when the documents do not answer the question and `failed` when no "
        "language model endpoint answered.",
        request=AskRequestSerializer,
        responses={
            (200, "application/json"): AskResponseSerializer,
            (200, "text/event-stream"): SSE_EVENT_SCHEMA,
            400: ERROR_RESPONSE,
            401: ERROR_RESPONSE,
            403: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
            429: ERROR_RESPONSE,
        },
    )
    def post(self, request: Request) -> Response | StreamingHttpResponse:
        data = validated(AskRequestSerializer, request.data)
        try:
            question = question_validate(data["question"])
        except QuestionRejected as rejected:
            raise RequestInvalid(f"question: {rejected}") from rejected
        user = request.user
        assert isinstance(user, User)
        conversation_id = conversation_checked(user, data.get("conversation_id"))
        slot = api_ask_admit(request)
        events = holding_slot(
            answer_stream(
                user=user,
                question=question,
                conversation_id=conversation_id,
                request_id=new_request_id(),
            ),
            slot,
        )
        if data["stream"]:
            # The stream runs on the server's event loop after this view has returned.
            return StreamingHttpResponse(
                answer_sse(events), content_type="text/event-stream", headers=STREAM_HEADERS
            )
        return Response(async_to_sync(final_answer)(events))


class SearchView(APIView):
    token_scopes = {"GET": TokenScope.READ}

    @extend_schema(
        summary="Search the documents",
        description="The passages the caller would get for the query, best first; only "
        "passages the caller may read are searched.",
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, required=True, description="The query."),
            OpenApiParameter(
                "k", OpenApiTypes.INT, description=f"How many passages (1 to {SEARCH_MAX_K})."
            ),
            OpenApiParameter("mode", OpenApiTypes.STR, enum=["hybrid", "dense", "sparse"]),
        ],
        responses={200: PassageSerializer(many=True), 400: ERROR_RESPONSE, 401: ERROR_RESPONSE},
    )
    def get(self, request: Request) -> Response:
        query = validated(SearchQuerySerializer, request.query_params)
        mode: SearchMode = query["mode"]
        passages = passages_for_user(user=request.user, query=query["q"], k=query["k"], mode=mode)
        return Response([passage.as_json() for passage in passages])


class ConversationListView(generics.GenericAPIView):
    serializer_class = ConversationSerializer
    token_scopes = {"GET": TokenScope.READ}

    def get_queryset(self) -> QuerySet[Conversation]:
        return _conversations_with_answer_count(self.request.user)

    @extend_schema(
        summary="The caller's conversations",
        description="Most recently used first; removed ones are not listed.",
        responses={200: ConversationSerializer(many=True), 401: ERROR_RESPONSE},
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(ConversationSerializer(page, many=True).data)


class ConversationDetailView(APIView):
    # A read-only token changes nothing; conversations are what asking makes.
    token_scopes = {"GET": TokenScope.READ, "PATCH": TokenScope.ASK, "DELETE": TokenScope.ASK}

    def _conversation(self, request: Request, conversation_id: int) -> Conversation:
        return get_object_or_404(_conversations_with_answer_count(request.user), id=conversation_id)

    def _detail(self, request: Request, conversation: Conversation) -> Response:
        answers = answers_in_conversation(user=request.user, conversation=conversation)
        data = ConversationSerializer(conversation).data
        states = review_states(
            citation.get("document_id") for answer in answers for citation in answer.citations
        )
        serialized = AnswerSerializer(answers, many=True, context={"review_states": states}).data
        return Response({**data, "answers": serialized})

    @extend_schema(
        summary="A conversation with its answers",
        description="Another user's conversation, or a removed one, is a 404.",
        responses={200: ConversationDetailSerializer, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        return self._detail(request, self._conversation(request, conversation_id))

    @extend_schema(
        summary="Rename a conversation",
        request=ConversationRenameSerializer,
        responses={
            200: ConversationDetailSerializer,
            400: ERROR_RESPONSE,
            401: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
        },
    )
    def patch(self, request: Request, conversation_id: int) -> Response:
        conversation = self._conversation(request, conversation_id)
        title = validated(ConversationRenameSerializer, request.data)["title"]
        Conversation.objects.filter(id=conversation.id).update(title=title)
        return self._detail(request, self._conversation(request, conversation_id))

    @extend_schema(
        summary="Remove a conversation from the list",
        description="It disappears for its owner; the audit log keeps every answer.",
        responses={204: None, 401: ERROR_RESPONSE, 404: ERROR_RESPONSE},
    )
    def delete(self, request: Request, conversation_id: int) -> Response:
        conversation_hide(conversation=self._conversation(request, conversation_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
