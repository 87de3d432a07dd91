"""Ways to tamper with the ledger's database, and what `audit_verify` must call each one.

Shared by the PostgreSQL tests (in process) and the SQLite run (a child process on a fresh
standalone installation). Each tampering runs in a transaction with the append-only triggers
switched off, as the database's owner could, is verified there, and is rolled back.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from django.test import TestCase

from assistant.answer_record import answer_record_details
from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation
from audit.hashing import record_hash
from audit.ledger import audit_flag, columns_from_details, ledger_append
from audit.models import AuditEvent, AuditFlag, AuditHead, AuditRecord, AuditReference
from audit.verify import ledger_verify
from ingestion.access import access_tags_for_user

REFUSING_TRIGGERS = {
    "sqlite": [
        f"{table}_refuse_{operation}"
        for table in ("assistant_auditrecord", "assistant_auditreference", "assistant_auditflag")
        for operation in ("update", "delete")
    ]
    + ["assistant_audithead_refuse_delete"],
}


@dataclasses.dataclass(frozen=True)
class Ledger:
    answer_ids: list[int]
    # The sequence numbers of the answer records, the upload, the flag and the last record.
    answers: list[int]
    upload: int
    flag: int
    last: int


def ledger_build() -> Ledger:
    """A small ledger of every kind of record: answers with their rows, acts, a flag."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        finance = Group.objects.create(name="finance")
        erin = User.objects.create_user("erin")
        erin.groups.add(finance)
        conversation = Conversation.objects.create(user=erin, title="Travel")
        answer_ids = []
        for number in range(3):
            with transaction.atomic():
                passage = {
                    "n": 1,
                    "point_id": f"p-{number}",
                    "document_id": 40 + number,
                    "version_id": 7,
                    "title": "Travel policy",
                    "source": "travel.md",
                    "page": 2,
                    "heading": "Hotels",
                    "score": 0.8,
                    "text": f"Hotels cost at most {180 + number} euros a night.",
                }
                answer = Answer.objects.create(
                    conversation=conversation,
                    user=erin,
                    question=f"What may a hotel cost? ({number})",
                    searched_query="hotel limit",
                    answer=f"At most {180 + number} euros [1].",
                    reasoning="The policy names the limit.",
                    status=AnswerStatus.ANSWERED,
                    mode=AnswerMode.EXTRACTIVE,
                    citations=[passage],
                    passages=[passage],
                )
                ledger_append(
                    event=AuditEvent.ANSWER,
                    actor=erin,
                    details=answer_record_details(
                        answer,
                        access_tags=access_tags_for_user(erin),
                        prompt=[],
                        sampling={},
                        usage={},
                    ),
                )
                answer_ids.append(answer.pk)
        with transaction.atomic():
            ledger_append(
                event=AuditEvent.DOCUMENT_UPLOADED,
                actor=None,
                details={"document_id": 40, "title": "Travel policy", "summary": "Uploaded"},
            )
        first_answer = AuditRecord.objects.filter(event=AuditEvent.ANSWER).order_by("sequence")[0]
        audit_flag(target=first_answer, actor=None, note="Check the limit")
        with transaction.atomic():
            ledger_append(
                event=AuditEvent.SETTINGS_CHANGED,
                actor=None,
                details={"settings": {"RETRIEVAL_TOP_K": 8}, "summary": "Settings changed"},
            )
    sequences = AuditRecord.objects.order_by("sequence")
    return Ledger(
        answer_ids=answer_ids,
        answers=list(sequences.filter(event=AuditEvent.ANSWER).values_list("sequence", flat=True)),
        upload=sequences.get(event=AuditEvent.DOCUMENT_UPLOADED).sequence,
        flag=sequences.get(event=AuditEvent.AUDIT_FLAGGED).sequence,
        last=sequences.reverse().values_list("sequence", flat=True)[0],
    )


# ---- The tamperings ------------------------------------------------------------------------


def _record(sequence: int) -> AuditRecord:
    return AuditRecord.objects.get(sequence=sequence)


def _rehash(record: AuditRecord) -> str:
    return record_hash(
        sequence=record.sequence,
        created_at=record.created_at,
        event=record.event,
        actor_id=record.actor_id,
        actor_username=record.actor_username,
        details_json=record.details,
        prev_hash=record.prev_hash,
    )


def _update(sequence: int, **fields: object) -> None:
    AuditRecord.objects.filter(sequence=sequence).update(**fields)


def _head_to(sequence: int) -> None:
    digest = AuditRecord.objects.get(sequence=sequence).hash if sequence else "0" * 64
    AuditHead.objects.update_or_create(
        id=AuditHead.HEAD_ID, defaults={"sequence": sequence, "hash": digest}
    )


def _recompute_from(sequence: int, ledger: Ledger) -> None:
    """Re-chain every record from `sequence` on and move the head: what a forger would do."""
    previous = _record(sequence - 1).hash if sequence > 1 else "0" * 64
    for number in range(sequence, ledger.last + 1):
        record = _record(number)
        record.prev_hash = previous
        digest = _rehash(record)
        _update(number, prev_hash=previous, hash=digest)
        previous = digest
    _head_to(ledger.last)


def _delete(*sequences: int) -> None:
    AuditFlag.objects.filter(record_id__in=sequences).delete()
    AuditFlag.objects.filter(target_id__in=sequences).delete()
    AuditReference.objects.filter(record_id__in=sequences).delete()
    AuditRecord.objects.filter(sequence__in=sequences).delete()


def _move(sequence: int, to: int) -> None:
    record = _record(sequence)
    references = list(AuditReference.objects.filter(record_id=sequence).values("kind", "target_id"))
    flag = AuditFlag.objects.filter(record_id=sequence).values_list("target_id", flat=True).first()
    _delete(sequence)
    record.sequence = to
    record.save(force_insert=True)
    AuditReference.objects.bulk_create(AuditReference(record=record, **r) for r in references)
    if flag is not None:
        AuditFlag.objects.create(record=record, target_id=flag)


def edit_details(ledger: Ledger) -> None:
    record = _record(ledger.upload)
    _update(ledger.upload, details=record.details.replace("Travel policy", "Travel rules"))


def edit_event(ledger: Ledger) -> None:
    _update(ledger.last, event=AuditEvent.USER_CHANGED)


def edit_actor(ledger: Ledger) -> None:
    _update(ledger.answers[0], actor_username="someone-else")


def edit_time(ledger: Ledger) -> None:
    moved = ledger.answers[1]
    _update(moved, created_at=_record(moved).created_at - timedelta(days=1))


def edit_status_column(ledger: Ledger) -> None:
    _update(ledger.answers[1], status=AnswerStatus.FAILED)


def edit_summary_column(ledger: Ledger) -> None:
    _update(ledger.upload, summary="Nothing happened")


def edit_search_column(ledger: Ledger) -> None:
    _update(ledger.answers[0], search_text="")


def edit_answer_id_column(ledger: Ledger) -> None:
    _update(ledger.answers[0], answer_id=ledger.answer_ids[2])


def edit_prev_hash(ledger: Ledger) -> None:
    _update(ledger.answers[2], prev_hash="f" * 64)


def edit_hash(ledger: Ledger) -> None:
    _update(ledger.answers[2], hash="e" * 64)


def delete_middle_record(ledger: Ledger) -> None:
    _delete(ledger.answers[1])


def delete_first_record(ledger: Ledger) -> None:
    _delete(1)


def delete_last_record(ledger: Ledger) -> None:
    _delete(ledger.last)


def delete_last_record_and_fix_head(ledger: Ledger) -> None:
    _delete(ledger.last)
    _head_to(ledger.last - 1)


def insert_record_renumbering_the_rest(ledger: Ledger) -> None:
    place = ledger.upload
    for sequence in range(ledger.last, place - 1, -1):
        _move(sequence, sequence + 1)
    forged = _record(place - 1)
    forged.sequence = place
    forged.details = forged.details.replace("Travel", "Trips")
    forged.prev_hash = forged.hash
    forged.hash = _rehash(forged)
    forged.save(force_insert=True)
    _head_to(ledger.last + 1)


def swap_two_records(ledger: Ledger) -> None:
    first, second = ledger.answers[1], ledger.answers[2]
    _move(first, 1000)
    _move(second, first)
    _move(1000, second)


def forged_append_with_head(ledger: Ledger) -> None:
    last = _record(ledger.last)
    details = '{"summary":"Answer settings changed: nothing"}'
    columns = columns_from_details(AuditEvent.SETTINGS_CHANGED, json.loads(details))
    forged = AuditRecord(
        sequence=ledger.last + 1,
        created_at=last.created_at + timedelta(seconds=1),
        event=AuditEvent.SETTINGS_CHANGED,
        actor_id=None,
        actor_username="",
        details=details,
        prev_hash=last.hash,
        hash="",
        **columns,
    )
    forged.hash = _rehash(forged)
    forged.save(force_insert=True)
    _head_to(ledger.last + 1)


def edit_and_recompute_the_tail(ledger: Ledger) -> None:
    edit_details(ledger)
    _recompute_from(ledger.upload, ledger)


def empty_the_ledger(ledger: Ledger) -> None:
    _delete(*range(1, ledger.last + 1))
    AuditHead.objects.all().delete()


def delete_the_head(ledger: Ledger) -> None:
    AuditHead.objects.all().delete()


def edit_answer_text(ledger: Ledger) -> None:
    Answer.objects.filter(pk=ledger.answer_ids[0]).update(answer="At most 500 euros [1].")


def edit_answer_reasoning(ledger: Ledger) -> None:
    Answer.objects.filter(pk=ledger.answer_ids[1]).update(reasoning="No limit applies.")


def edit_answer_citation(ledger: Ledger) -> None:
    answer = Answer.objects.get(pk=ledger.answer_ids[2])
    citations = [{**answer.citations[0], "n": 2}]
    Answer.objects.filter(pk=answer.pk).update(citations=citations)


def delete_answer_row(ledger: Ledger) -> None:
    Answer.objects.filter(pk=ledger.answer_ids[1]).delete()


def delete_reference_rows(ledger: Ledger) -> None:
    AuditReference.objects.filter(record_id=ledger.answers[1]).delete()


def delete_flag_row(ledger: Ledger) -> None:
    AuditFlag.objects.all().delete()


# Each tampering, and the kind of break `audit_verify` must name for it.
TAMPERINGS: dict[str, tuple[Callable[[Ledger], None], str]] = {
    "edit a record's details": (edit_details, "edited"),
    "edit a record's event": (edit_event, "edited"),
    "edit a record's actor": (edit_actor, "edited"),
    "edit a record's time": (edit_time, "edited"),
    "edit the status column": (edit_status_column, "edited"),
    "edit the summary column": (edit_summary_column, "edited"),
    "edit the search text column": (edit_search_column, "edited"),
    "edit the answer_id column": (edit_answer_id_column, "edited"),
    "edit a previous-hash link": (edit_prev_hash, "edited"),
    "edit a stored hash": (edit_hash, "edited"),
    "delete a record in the middle": (delete_middle_record, "deleted"),
    "delete the first record": (delete_first_record, "deleted"),
    "delete the last record": (delete_last_record, "deleted"),
    "delete the last record and fix the head": (delete_last_record_and_fix_head, "truncated"),
    "insert a record and renumber the rest": (insert_record_renumbering_the_rest, "inserted"),
    "swap two records": (swap_two_records, "reordered"),
    "append a forged record and move the head": (forged_append_with_head, "forged append"),
    "edit a record and recompute every later hash": (edit_and_recompute_the_tail, "recomputed"),
    "delete every record and the head": (empty_the_ledger, "emptied"),
    "delete the chain head": (delete_the_head, "deleted"),
    "edit an answer's text": (edit_answer_text, "edited"),
    "edit an answer's reasoning": (edit_answer_reasoning, "edited"),
    "edit an answer's citation": (edit_answer_citation, "edited"),
    "delete an answer": (delete_answer_row, "edited"),
    "delete a record's reference rows": (delete_reference_rows, "edited"),
    "delete a flag row": (delete_flag_row, "edited"),
}


def triggers_off() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The owner's way around row triggers, for this transaction only.
            cursor.execute("SET LOCAL session_replication_role = replica")
        for trigger in REFUSING_TRIGGERS.get(connection.vendor, []):
            cursor.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def tampering_outcome(name: str, ledger: Ledger) -> str | None:
    """The kind of break verification names after `name`, or None when it sees nothing."""
    tamper, _ = TAMPERINGS[name]
    with transaction.atomic():
        triggers_off()
        tamper(ledger)
        result = ledger_verify()
        transaction.set_rollback(True)
    return result.problem.kind if result.problem is not None else None
