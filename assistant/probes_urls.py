"""Probes and metrics for the orchestrator and Prometheus, outside every login."""

from __future__ import annotations

from django.urls import path

from assistant import probes

app_name = "operations"

urlpatterns = [
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("metrics", probes.metrics, name="metrics"),
]
