"""Answers left in progress by a process that died: closed as interrupted, on the record.

An answer is saved, with its ledger record of the question and evidence, before its first
byte streams, and checkpointed every ANSWER_CHECKPOINT_S while it streams. A process killed
mid-answer leaves it in progress; the next process to start (and every process, from time to
time, so that a dead worker in cluster mode is found by another) closes each one whose last
checkpoint is older than ANSWER_STALE_AFTER_S: status `interrupted`, the text of its last
checkpoint, and its `answer` ledger record.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from assistant.answer_record import answer_record_details
from assistant.models import Answer, AnswerStatus
from audit.hashing import parse_details
from audit.ledger import ledger_append
from audit.models import AuditEvent, AuditRecord
from config.metrics import record_answer
from inference.prompting import extract_citations, strip_invalid_citations

logger = logging.getLogger(__name__)

INTERRUPTED_ERROR = (
    "The server stopped before the answer was complete; this is what had been streamed."
)
# Answers closed per transaction: one lock each, so a sweep never holds many.
SWEEP_BATCH = 200


def answers_interrupted_close(*, stale_after_s: float | None = None) -> int:
    """Close answers in progress whose last checkpoint is older than `stale_after_s`.

    With None, ANSWER_STALE_AFTER_S; with 0, every answer in progress (a standalone server
    starting: no other process can be streaming). Returns how many were closed.
    """
    stale = settings.ANSWER_STALE_AFTER_S if stale_after_s is None else stale_after_s
    cutoff = timezone.now() - timedelta(seconds=stale)
    candidates = list(
        Answer.objects.filter(status=AnswerStatus.IN_PROGRESS, progress_at__lte=cutoff)
        .order_by("progress_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    return sum(_close(answer_id, cutoff) for answer_id in candidates)


def _close(answer_id: int, cutoff: datetime) -> bool:
    with transaction.atomic():
        # Skip a row another process holds: it is being saved, or closed, right now.
        answer = (
            Answer.objects.select_for_update(skip_locked=True)
            .filter(pk=answer_id, status=AnswerStatus.IN_PROGRESS, progress_at__lte=cutoff)
            .first()
        )
        if answer is None:
            return False
        passages = answer.passages
        kept, dropped = extract_citations(answer.answer, len(passages))
        last_checkpoint = answer.progress_at or answer.created_at
        answer.answer = strip_invalid_citations(answer.answer, len(passages))
        answer.citations = [passages[number - 1] for number in kept]
        answer.dropped_citations = dropped
        answer.status = AnswerStatus.INTERRUPTED
        answer.error = INTERRUPTED_ERROR
        answer.total_ms = (last_checkpoint - answer.created_at).total_seconds() * 1000
        answer.save()
        started = (
            AuditRecord.objects.filter(event=AuditEvent.ANSWER_STARTED, answer_id=answer.pk)
            .values_list("details", flat=True)
            .first()
        )
        access_tags = _started_access_tags(started)
        ledger_append(
            event=AuditEvent.ANSWER,
            actor=answer.user,
            details=answer_record_details(
                answer, access_tags=access_tags, prompt=[], sampling={}, usage={}
            ),
        )
    record_answer(answer.status, answer.mode, answer.total_ms or 0.0, None, None)
    return True


def _started_access_tags(details_json: str | None) -> list[str]:
    """The tags the search ran with, as the `answer.started` record holds them."""
    if not details_json:
        return []
    tags = parse_details(details_json).get("access_tags") or []
    return [str(tag) for tag in tags]


_sweeper: threading.Thread | None = None


def answer_sweeper_start() -> None:
    """Look for answers of dead processes now and then, for as long as this process lives."""
    global _sweeper
    if _sweeper is not None:
        return

    def sweep_forever() -> None:
        while True:
            threading.Event().wait(settings.ANSWER_STALE_AFTER_S)
            try:
                closed = answers_interrupted_close()
                if closed:
                    logger.warning("Closed %s answers left in progress by a dead process.", closed)
            except Exception:
                logger.exception("Closing answers of dead processes failed; trying again later.")
            finally:
                close_old_connections()

    _sweeper = threading.Thread(target=sweep_forever, name="answer-sweeper", daemon=True)
    _sweeper.start()
