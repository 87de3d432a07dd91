"""Celery tasks: one run of a source, and the beat that starts the runs that are due."""

from __future__ import annotations

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from sources.scheduling import runs_due_queue
from sources.sync import run_execute


@shared_task(acks_late=True, ignore_result=True)
def source_run(run_id: int) -> str:
    """A run; a delivery whose run another live worker holds (or that ended) does nothing.

    A run longer than the task's time limit goes on in a new task, where it stopped.
    """
    try:
        run = run_execute(run_id, stale_after_s=settings.SOURCE_RUN_STALE_S)
    except SoftTimeLimitExceeded:
        source_run.delay(run_id)
        return "continued"
    return "skipped" if run is None else run.status


@shared_task(ignore_result=True)
def sources_due() -> int:
    """Called by Celery beat each minute: queue the runs whose time came, and hand out again
    the runs a killed worker left behind."""
    run_ids = runs_due_queue(stale_after_s=settings.SOURCE_RUN_STALE_S)
    for run_id in run_ids:
        source_run.delay(run_id)
    return len(run_ids)
