from __future__ import annotations

from django.urls import path

from assistant import views

app_name = "assistant"

urlpatterns = [
    path("", views.home, name="home"),
    path("c/<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("c/<int:conversation_id>/rename", views.conversation_rename, name="conversation-rename"),
    path("c/<int:conversation_id>/remove", views.conversation_remove, name="conversation-remove"),
    path("ask/", views.ask, name="ask"),
    path("ask/stream", views.ask_stream, name="ask-stream"),
    path("answers/<int:answer_id>/fragment", views.answer_fragment, name="answer-fragment"),
    path("answers/<int:answer_id>/feedback", views.answer_feedback, name="answer-feedback"),
    path("passages/<int:answer_id>/<int:n>/", views.passage, name="passage"),
    path("passages/<int:answer_id>/<int:n>/preview", views.passage_preview, name="passage-preview"),
    path("passages/<int:answer_id>/<int:n>/panel", views.passage_panel, name="passage-panel"),
    path("passages/point/<uuid:point_id>/", views.passage_by_point, name="passage-by-point"),
    path("search/", views.search, name="search"),
    path(
        "documents/<int:document_id>/versions/<int:number>/file",
        views.version_file,
        name="version-file",
    ),
    path("feedback/", views.feedback_list, name="feedback-list"),
]
