"""Standalone mode: the sources' scheduler, a background thread of the one server process.

It starts the runs that are due or asked for, one after the other. Only the process holding
the embedded index runs it, so a run found "running" here was left by a process that died:
it is resumed at once.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

from sources.scheduling import runs_due_queue
from sources.sync import run_execute

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0

_wake = threading.Event()
_stop = threading.Event()
_thread: threading.Thread | None = None


def scheduler_wake() -> None:
    _wake.set()


def runs_pending_once() -> int:
    """Carry out every run due or queued now, in this thread; how many ran."""
    done = 0
    while run_ids := runs_due_queue(stale_after_s=0):
        ran = sum(run_execute(run_id, stale_after_s=0) is not None for run_id in run_ids)
        if not ran:
            break
        done += ran
    return done


def _loop() -> None:
    while not _stop.is_set():
        try:
            runs_pending_once()
        except Exception:  # the scheduler must outlive any one failure
            logger.exception("standalone sources scheduler: a run failed")
        finally:
            close_old_connections()
        _wake.wait(POLL_SECONDS)
        _wake.clear()


def scheduler_start() -> None:
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_loop, name="sources-scheduler", daemon=True)
    _thread.start()


def scheduler_stop() -> None:
    _stop.set()
    _wake.set()
    if _thread is not None:
        _thread.join(timeout=30)
