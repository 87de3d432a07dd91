"""Probes and metrics for the orchestrator and Prometheus, outside every login."""

from __future__ import annotations

from django.urls import path

from assistant import operations

app_name = "operations"

urlpatterns = [
    path("healthz", operations.healthz, name="healthz"),
    path("readyz", operations.readyz, name="readyz"),
    path("metrics", operations.metrics, name="metrics"),
]
