from __future__ import annotations

from django.apps import AppConfig


class BenchConfig(AppConfig):
    """Benchmarks, load tests and test rigs; nothing in the product imports this app."""

    name = "bench"
    verbose_name = "Benchmarks"
