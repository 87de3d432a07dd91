"""Which runs should start now: sources whose schedule is due, and runs left unfinished."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from sources.models import Source
from sources.sync import run_request, runs_stale


def runs_due_queue(*, stale_after_s: float) -> list[int]:
    """Queue a run of each unpaused source whose time came; the ids of every run to start."""
    now = timezone.now()
    due = Source.objects.filter(paused=False, next_run_at__lte=now).exclude(
        Q(schedule="") | Q(next_run_at__isnull=True)
    )
    for source in due:
        run_request(source=source)
        # Not again until its next time, whether this run ends well or not.
        Source.objects.filter(id=source.pk).update(next_run_at=None)
    return runs_stale(stale_after_s=stale_after_s)
