"""Standalone mode: the ingestion tasks run in a background thread of the one process.

The process that holds the embedded index runs the runner; any other process (a command run
beside the server) only queues versions in the database, and the runner picks them up.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

from ingestion.models import DocumentVersion, VersionStatus
from ingestion.pipeline import versions_claim_queued
from ingestion.sandbox import sandbox_warm_up
from ingestion.tasks import ingest_versions

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
# The runner thread's name, as thread listings and benchmarks show it.
RUNNER_THREAD_NAME = "ingestion-runner"

_wake = threading.Event()
_thread: threading.Thread | None = None
_stop = threading.Event()


def runner_wake() -> None:
    _wake.set()


def runner_recover() -> int:
    """Versions left mid-way by a process that died go back to the queue."""
    return DocumentVersion.objects.filter(
        status__in=[VersionStatus.PARSING, VersionStatus.EMBEDDING]
    ).update(status=VersionStatus.QUEUED, chunks_done=0)


def run_pending_once() -> int:
    """Ingest what is queued now, in this thread; returns how many versions were taken.

    Only the process that holds the index ingests, so versions queued while a run goes on
    join it rather than wait for the next one.
    """
    taken = 0
    while ids := versions_claim_queued():
        # apply() runs the Celery task here, with its retries and failure bookkeeping.
        outcome = ingest_versions.apply(args=[ids], kwargs={"join_queued": True})
        if outcome.successful():
            taken += len(outcome.result)
            continue
        taken += len(ids)
        # The task marked the versions it was given as failed; those that joined it go back
        # to the queue, and the next run takes them first.
        runner_recover()
    return taken


def _loop() -> None:
    try:
        # The parser sandbox's fork server starts now rather than with the first upload.
        sandbox_warm_up()
    except Exception:  # parsing starts it again when needed
        logger.exception("standalone ingestion runner: the parser sandbox did not start")
    while not _stop.is_set():
        try:
            run_pending_once()
        except Exception:  # the runner must outlive any one failure
            logger.exception("standalone ingestion runner: a run failed")
        finally:
            close_old_connections()
        _wake.wait(POLL_SECONDS)
        _wake.clear()


def runner_start() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    recovered = runner_recover()
    if recovered:
        logger.info("re-queued %d versions interrupted by an earlier stop", recovered)
    _stop.clear()
    _thread = threading.Thread(target=_loop, name=RUNNER_THREAD_NAME, daemon=True)
    _thread.start()


def runner_stop() -> None:
    _stop.set()
    _wake.set()
    if _thread is not None:
        _thread.join(timeout=30)
