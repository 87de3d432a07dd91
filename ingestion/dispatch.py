"""Where queued ingestion goes: Celery workers in cluster mode, the in-process runner otherwise."""

from __future__ import annotations

from collections.abc import Sequence

from django.conf import settings

from ingestion.runner import runner_wake
from ingestion.tasks import ingest_versions

# Small files are embedded together; a task takes this many files at once.
FILES_PER_TASK = 16


def ingestion_dispatch(version_ids: Sequence[int]) -> None:
    if settings.STANDALONE:
        # The runner of whichever process holds the embedded index picks queued versions up.
        runner_wake()
        return
    ids = list(version_ids)
    for start in range(0, len(ids), FILES_PER_TASK):
        ingest_versions.delay(ids[start : start + FILES_PER_TASK])
