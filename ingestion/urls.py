from __future__ import annotations

from django.urls import path

from ingestion import views

app_name = "ingestion"

urlpatterns = [
    path("", views.document_list, name="document-list"),
    path("upload/", views.document_upload_json, name="document-upload"),
    path("status.json", views.version_status_json, name="version-status"),
    path("<int:document_id>/", views.document_detail, name="document-detail"),
    path("<int:document_id>/access/", views.document_access, name="document-access"),
    path("<int:document_id>/review/", views.document_review, name="document-review"),
    path("<int:document_id>/delete/", views.document_delete, name="document-delete"),
    path("versions/<int:version_id>/retry/", views.version_retry, name="version-retry"),
    path("versions/<int:version_id>/cancel/", views.version_cancel, name="version-cancel"),
    path("versions/<int:version_id>/download/", views.version_download, name="version-download"),
]
