from __future__ import annotations

from django.urls import path

from sources import views

app_name = "sources"

urlpatterns = [
    path("", views.source_list, name="source-list"),
    path("<int:source_id>/", views.source_detail, name="source-detail"),
    path("<int:source_id>/run/", views.source_run, name="source-run"),
    path("<int:source_id>/pause/", views.source_pause, name="source-pause"),
    path("<int:source_id>/remove/", views.source_remove, name="source-remove"),
]
