"""Fixtures shared by the sources tests: a source, and one run of it carried out here."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ingestion.runner import run_pending_once
from sources.models import Source, SourceRun
from sources.sync import run_execute, run_request

Sync = Callable[..., SourceRun]


@pytest.fixture
def sync() -> Sync:
    """Run a source now, in this process, then ingest what it queued (unless told not to)."""

    def run_once(source: Source, *, confirm: bool = False, ingest: bool = True) -> SourceRun:
        run, _ = run_request(source=source, confirm_deletions=confirm)
        done = run_execute(run.pk, stale_after_s=0)
        assert done is not None
        if ingest:
            run_pending_once()
        return done

    return run_once
