"""Where a queued run goes: a Celery worker in cluster mode, the standalone scheduler otherwise."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction


def run_dispatch(run_id: int) -> None:
    if settings.STANDALONE:
        from sources.runner import scheduler_wake

        transaction.on_commit(scheduler_wake)
        return
    from sources.tasks import source_run

    transaction.on_commit(lambda: source_run.delay(run_id))
