from __future__ import annotations

from django.urls import path

from assistant import audit_views

app_name = "audit"

urlpatterns = [
    path("", audit_views.record_list, name="record-list"),
    path("export/", audit_views.record_export, name="record-export"),
    path("<int:sequence>/", audit_views.record_detail, name="record-detail"),
    path("<int:sequence>/flag/", audit_views.record_flag, name="record-flag"),
]
