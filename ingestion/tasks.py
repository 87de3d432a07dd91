"""Celery tasks: each takes ids, loads rows and calls a service."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from django.db import DatabaseError

from ingestion.pipeline import version_mark_failed, versions_ingest
from ingestion.vector_index.base import IndexLockedError, VectorIndexError

logger = logging.getLogger(__name__)

# Worth another try: the database or the index server may be back in a moment.
TRANSIENT_ERRORS = (DatabaseError, ConnectionError, TimeoutError, VectorIndexError)


class IngestionTask(Task):
    def on_failure(
        self,
        exc: Exception,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        version_ids = kwargs.get("version_ids") or (args[0] if args else [])
        if isinstance(exc, IndexLockedError):
            message = str(exc)
        else:
            message = f"Indexing failed after retries: {exc.__class__.__name__}: {exc}"
        for version_id in version_ids:
            version_mark_failed(version_id, message)


@shared_task(
    bind=True,
    base=IngestionTask,
    acks_late=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
)
def ingest_versions(
    self: Task, version_ids: list[int], join_queued: bool = False
) -> dict[int, str]:
    return versions_ingest(version_ids, join_queued=join_queued)
