"""Locating the public evaluation data that benchmarks use (never needed at run time)."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError


def shared_data_dir() -> Path:
    """`ASSISTANT_SHARED_DATA`, or the `shared/data` folder beside the project checkout."""
    configured = os.environ.get("ASSISTANT_SHARED_DATA")
    return Path(configured) if configured else Path(settings.BASE_DIR).parent / "shared" / "data"


def scifact_corpus_path() -> Path:
    corpus = shared_data_dir() / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        raise CommandError(
            f"SciFact is not at {corpus}; set ASSISTANT_SHARED_DATA or pass --path FOLDER."
        )
    return corpus
