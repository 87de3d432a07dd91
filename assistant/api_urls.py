"""The assistant's APIs: the REST API under api/assistant/ and the OpenAI-compatible v1/."""

from __future__ import annotations

from django.urls import path

from assistant import api, openai_api

app_name = "assistant_api"

urlpatterns = [
    path("api/assistant/ask", api.AskView.as_view(), name="ask"),
    path("api/assistant/search", api.SearchView.as_view(), name="search"),
    path(
        "api/assistant/conversations",
        api.ConversationListView.as_view(),
        name="conversation-list",
    ),
    path(
        "api/assistant/conversations/<int:conversation_id>",
        api.ConversationDetailView.as_view(),
        name="conversation-detail",
    ),
    path("v1/models", openai_api.models, name="openai-models"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
]
