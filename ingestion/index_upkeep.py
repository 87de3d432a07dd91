"""The embedded index's segment optimizer, run by the serving process at quiet moments.

qdrant-edge holds the interpreter lock while it optimizes (seconds for tens of thousands of
passages), so every request and answer stream of the process would stall behind it.
Ingestion therefore only stores passages; this thread runs the optimizer once enough of
them wait for their search graph and nobody has been served for INDEX_OPTIMIZE_QUIET_S.
Until then those passages are searched by brute force: correct, a little slower.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

from config.activity import serving_activity
from ingestion.vector_index import IndexUpkeep, VectorIndexError
from ingestion.vector_index.configured import vector_index

logger = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0

_stop = threading.Event()
_thread: threading.Thread | None = None


def optimize_if_quiet() -> bool:
    """Optimize now if it is due and the process has been quiet long enough; True if it ran."""
    index = vector_index()
    upkeep = index.upkeep()
    if upkeep is None or not upkeep.optimize_due:
        return False
    if serving_activity.quiet_for_s() < settings.INDEX_OPTIMIZE_QUIET_S:
        return False
    logger.info(
        "optimizing the search index: %d passages wait for their search graph",
        upkeep.unindexed_points,
    )
    index.optimize()
    return True


def index_upkeep_state() -> IndexUpkeep | None:
    """The embedded index's pending upkeep; None where a Qdrant server does its own."""
    if settings.VECTOR_BACKEND != "edge":
        return None
    try:
        return vector_index().upkeep()
    except VectorIndexError:
        return None


def _loop() -> None:
    while not _stop.wait(CHECK_EVERY_S):
        try:
            optimize_if_quiet()
        except VectorIndexError:  # the next check tries again; the index stays searchable
            logger.exception("the search index could not be optimized")


def index_upkeep_start() -> None:
    """From now on upserts leave optimizing to this thread (standalone server only)."""
    global _thread
    index = vector_index()
    defer = getattr(index, "defer_optimize", None)
    if defer is None or (_thread is not None and _thread.is_alive()):
        return
    defer()
    _stop.clear()
    _thread = threading.Thread(target=_loop, name="index-upkeep", daemon=True)
    _thread.start()


def index_upkeep_stop() -> None:
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=120)
