from __future__ import annotations

from django.urls import path

from assistant.insight import views

app_name = "insight"

urlpatterns = [
    path("usage/", views.usage, name="usage"),
    path("usage/export/", views.usage_export, name="usage-export"),
    path("gaps/", views.gaps, name="gaps"),
    path("gaps/resolve/", views.gap_resolve, name="gap-resolve"),
]
