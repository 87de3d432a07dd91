"""Which runs start: sources whose schedule is due, one run at a time, runs left by a dead
worker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from sources.models import RunStatus, Source, SourceRun
from sources.schedule import next_run_after
from sources.scheduling import runs_due_queue
from sources.services import source_add, source_set_paused
from sources.sync import run_claim, run_request

pytestmark = pytest.mark.django_db


def folder(name: str, tmp_path: Path, schedule: str = "*/10 * * * *") -> Source:
    return source_add(name=name, kind="folder", location=str(tmp_path), schedule=schedule)


def test_a_schedule_names_its_next_time() -> None:
    moment = timezone.now().replace(hour=8, minute=7, second=0, microsecond=0)
    assert next_run_after("*/10 * * * *", moment) == moment.replace(minute=10)
    assert next_run_after("30 2 * * *", moment) == (moment + timedelta(days=1)).replace(
        hour=2, minute=30
    )
    assert next_run_after("", moment) is None


def test_due_sources_are_queued_once_and_paused_ones_wait(tmp_path: Path) -> None:
    due = folder("due", tmp_path)
    later = folder("later", tmp_path)
    paused = folder("paused", tmp_path)
    on_demand = folder("on-demand", tmp_path, schedule="")
    past = timezone.now() - timedelta(minutes=1)
    Source.objects.filter(pk__in=[due.pk, paused.pk]).update(next_run_at=past)
    source_set_paused(source=paused, paused=True)
    Source.objects.filter(pk=paused.pk).update(next_run_at=past)

    queued = runs_due_queue(stale_after_s=60)
    assert [SourceRun.objects.get(pk=run_id).source.name for run_id in queued] == ["due"]
    assert runs_due_queue(stale_after_s=60) == queued  # queued once; handed out until taken
    assert not SourceRun.objects.filter(source__in=[later, paused, on_demand]).exists()


def test_a_source_has_one_run_at_a_time_and_a_dead_worker_s_run_is_taken_over(
    tmp_path: Path,
) -> None:
    source = folder("share", tmp_path)
    run, created = run_request(source=source)
    again, created_again = run_request(source=source, confirm_deletions=True)
    assert (created, created_again) == (True, False)
    assert again.pk == run.pk
    assert again.confirm_deletions

    assert run_claim(run.pk, stale_after_s=60) is not None
    # Another worker (a second delivery of the task) finds it alive and leaves it.
    assert run_claim(run.pk, stale_after_s=60) is None
    assert runs_due_queue(stale_after_s=60) == []
    # No heartbeat for longer than the lease: the worker died; the run is handed out again.
    SourceRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=120))
    assert runs_due_queue(stale_after_s=60) == [run.pk]
    taken = run_claim(run.pk, stale_after_s=60)
    assert taken is not None
    assert (taken.status, taken.attempts) == (RunStatus.RUNNING, 2)
