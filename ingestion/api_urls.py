from __future__ import annotations

from django.urls import path

from ingestion import api

app_name = "ingestion_api"

urlpatterns = [
    path("documents/", api.DocumentListView.as_view(), name="document-list"),
    path("documents/<int:document_id>/", api.DocumentDetailView.as_view(), name="document-detail"),
    path("versions/<int:version_id>/", api.VersionDetailView.as_view(), name="version-detail"),
    path("versions/<int:version_id>/retry/", api.VersionRetryView.as_view(), name="version-retry"),
    path(
        "versions/<int:version_id>/cancel/", api.VersionCancelView.as_view(), name="version-cancel"
    ),
]
