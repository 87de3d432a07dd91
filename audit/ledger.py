"""Appending to the ledger: the one function every layer calls to record an act.

A record is appended inside the transaction of the act it records, under one lock of the
chain head, so two appends never share a parent. What an act's details hold is decided by
the layer that performs it (accounts, ingestion, assistant); the ledger hashes, chains and
indexes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.transaction import TransactionManagementError
from django.utils import timezone

from audit.anchor import checkpoint_write, checkpoints_read
from audit.hashing import (
    GENESIS_HASH,
    canonical_json,
    content_hash,
    json_ready,
    record_content,
    text_sha256,
    time_text,
)
from audit.models import (
    AuditEvent,
    AuditFlag,
    AuditHead,
    AuditRecord,
    AuditReference,
    AuditReferenceKind,
)
from config.request_context import current_request_id

# Any constant will do; it names the one PostgreSQL advisory lock that orders appends.
LEDGER_LOCK_KEY = 0x4155444954

# The settings that change what an answer is built from; secrets are never recorded.
ANSWER_SETTINGS = (
    "VECTOR_BACKEND",
    "VECTOR_COLLECTION",
    "EMBEDDING_MODEL_PATH",
    "EMBEDDING_PRECISION",
    "CHUNK_MAX_TOKENS",
    "CHUNK_OVERLAP_TOKENS",
    "RETRIEVAL_TOP_K",
    "RETRIEVAL_CANDIDATES",
    "RETRIEVAL_FUSION",
    "RERANKER_MODEL_PATH",
    "VLLM_URLS",
    "VLLM_MODEL",
    "VLLM_MAX_TOKENS",
    "VLLM_FIRST_TOKEN_TIMEOUT_S",
    "VLLM_TOTAL_TIMEOUT_S",
)

Actor = AbstractBaseUser | AnonymousUser | None


# What a record says, in the columns the review pages filter on


def _column_text(value: Any, limit: int | None = None) -> str:
    if value is None:
        text = ""
    elif isinstance(value, str):
        # The string itself, as JSON stores it, whatever a subclass's str() says.
        text = str.__str__(value)
    else:
        text = canonical_json(value)
    # PostgreSQL text cannot hold NUL; the hashed details keep it, escaped.
    text = text.replace("\x00", "")
    return text if limit is None else text[:limit]


def columns_from_details(event: str, details: Mapping[str, Any]) -> dict[str, str]:
    """The filter columns of a record, derived from its details (and checked against them)."""
    if event == AuditEvent.ANSWER:
        question = _column_text(details.get("question"))
        answer = _column_text(details.get("answer"))
        return {
            "status": _column_text(details.get("status"), 12),
            "model_name": _column_text(details.get("model_name") or details.get("model"), 200),
            "summary": question[:300],
            "search_text": f"{question}\n{answer}" if answer else question,
        }
    return {
        "status": "",
        "model_name": "",
        "summary": _column_text(details.get("summary"), 300),
        "search_text": "",
    }


def answer_id_from_details(event: str, details: Mapping[str, Any]) -> int | None:
    """The answer an answer record is about, copied to its own column for joins."""
    if event not in (AuditEvent.ANSWER, AuditEvent.ANSWER_STARTED):
        return None
    answer_id = details.get("answer_id")
    return answer_id if isinstance(answer_id, int) and not isinstance(answer_id, bool) else None


def _ids(values: Any, key: str = "id") -> list[int]:
    found = []
    for value in values if isinstance(values, list | tuple) else [values]:
        candidate = value.get(key) if isinstance(value, Mapping) else value
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            found.append(candidate)
        elif isinstance(candidate, str) and candidate.isdigit():
            found.append(int(candidate))
    return found


def passage_number(passage: Mapping[str, Any]) -> Any:
    return passage.get("n", passage.get("rank"))


def cited_passages(details: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The cited passages of an answer; citations are passages or their numbers [n]."""
    passages = [p for p in details.get("passages") or [] if isinstance(p, Mapping)]
    by_number = {passage_number(passage): passage for passage in passages}
    cited = []
    for citation in details.get("citations") or []:
        if isinstance(citation, Mapping):
            cited.append(citation)
        elif citation in by_number:
            cited.append(by_number[citation])
    return cited


def references_from_details(details: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The documents, groups and users a record names, for the indexed filters."""
    kinds_and_ids = [
        (AuditReferenceKind.DOCUMENT_CITED, _ids(cited_passages(details), "document_id")),
        (AuditReferenceKind.DOCUMENT_SUBJECT, _ids(details.get("document_id"))),
        (AuditReferenceKind.GROUP_ACL, _ids(details.get("acl_groups"))),
        (AuditReferenceKind.GROUP_SUBJECT, _ids(details.get("group_id"))),
        (AuditReferenceKind.GROUP_SUBJECT, _ids(details.get("group_ids"))),
        (AuditReferenceKind.USER_SUBJECT, _ids(details.get("user_id"))),
        (AuditReferenceKind.USER_SUBJECT, _ids(details.get("user_ids"))),
    ]
    references = [(str(kind), target) for kind, ids in kinds_and_ids for target in ids]
    return list(dict.fromkeys(references))


# Appending


@dataclass(frozen=True)
class LedgerEntry:
    event: str
    actor: Actor
    details: Mapping[str, Any]
    request_id: str = ""


def ledger_append(
    *,
    event: str,
    actor: Actor,
    details: Mapping[str, Any],
    request_id: str = "",
) -> AuditRecord:
    """Append one record; call it inside the transaction of the act it records.

    For an answer, `details` come from `assistant.answer_record.answer_record_details`: the
    answer's id (copied to the `answer_id` column), the question, the evidence (passages with
    `n`, `point_id`, `document_id`, `version_id`, `score` and the `text` shown to the model),
    the prompt, the outcome and the `acl_groups` the search used. Passages get a
    `content_sha256` of their text when they have none; `citations` are passages or their
    numbers. The record is committed, or rolled back, with the caller's transaction, and the
    new head is signed into the anchor once it commits.
    """
    return ledger_append_many(
        [
            LedgerEntry(
                event=event,
                actor=actor,
                details=details,
                request_id=request_id,
            )
        ]
    )[0]


def ledger_append_many(entries: Sequence[LedgerEntry]) -> list[AuditRecord]:
    """Append records in order under one lock of the chain head."""
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise TransactionManagementError(
            "The audit ledger is written inside the transaction of the act it records."
        )
    _lock_chain(connection)
    head = AuditHead.objects.filter(id=AuditHead.HEAD_ID).first()
    sequence, prev_hash = (head.sequence, head.hash) if head is not None else (0, GENESIS_HASH)
    now = timezone.now()
    records: list[AuditRecord] = []
    references: list[AuditReference] = []
    flags: list[AuditFlag] = []
    for entry in entries:
        sequence += 1
        details, details_json = _details_of(entry)
        actor = entry.actor if entry.actor is not None and entry.actor.is_authenticated else None
        actor_id = actor.pk if actor is not None else None
        actor_username = actor.get_username() if actor is not None else ""
        digest = content_hash(
            record_content(
                sequence=sequence,
                time=time_text(now),
                event=str(entry.event),
                actor_id=actor_id,
                actor_username=actor_username,
                details_json=details_json,
                prev_hash=prev_hash,
            )
        )
        record = AuditRecord(
            sequence=sequence,
            created_at=now,
            event=str(entry.event),
            actor_id=actor_id,
            actor_username=actor_username,
            details=details_json,
            prev_hash=prev_hash,
            hash=digest,
            answer_id=answer_id_from_details(str(entry.event), details),
            **columns_from_details(str(entry.event), details),
        )
        records.append(record)
        references.extend(
            AuditReference(record=record, kind=kind, target_id=target)
            for kind, target in references_from_details(details)
        )
        if entry.event == AuditEvent.AUDIT_FLAGGED:
            flags.append(AuditFlag(record=record, target_id=int(details["target_sequence"])))
        prev_hash = digest
    AuditRecord.objects.bulk_create(records)
    AuditReference.objects.bulk_create(references)
    AuditFlag.objects.bulk_create(flags)
    if head is None:
        AuditHead.objects.create(id=AuditHead.HEAD_ID, sequence=sequence, hash=prev_hash)
    else:
        AuditHead.objects.filter(id=AuditHead.HEAD_ID).update(sequence=sequence, hash=prev_hash)
    # Signed only once committed: a checkpoint must never name a record that was rolled back.
    head_sequence, head_hash = sequence, prev_hash
    transaction.on_commit(lambda: checkpoint_write(head_sequence, head_hash))
    return records


def _lock_chain(connection: BaseDatabaseWrapper) -> None:
    """Take the chain head for this transaction, so that two appends never share a parent.

    On SQLite the settings open every transaction with BEGIN IMMEDIATE: writers are already
    serialised. Whatever the database, a fork would need two records with one sequence number,
    which the primary key refuses.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LEDGER_LOCK_KEY])


def _details_of(entry: LedgerEntry) -> tuple[dict[str, Any], str]:
    """The details as stored, and their canonical JSON text."""
    details: dict[str, Any] = dict(entry.details)
    if entry.event == AuditEvent.ANSWER:
        details["passages"] = [_with_content_hash(p) for p in details.get("passages") or []]
    request_id = entry.request_id or current_request_id()
    if request_id:
        details["request_id"] = request_id
    try:
        text = canonical_json(details)
        text.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        # Times, ids, NaN or broken text: convert (slower) instead of refusing the record.
        details = json_ready(details)
        text = canonical_json(details)
    return details, text


def _with_content_hash(passage: Any) -> Any:
    if not isinstance(passage, Mapping) or "content_sha256" in passage:
        return passage
    return {**passage, "content_sha256": text_sha256(str(passage.get("text") or ""))}


# Records the ledger writes of itself


def audit_flag(*, target: AuditRecord, actor: Actor, note: str) -> AuditRecord:
    """Flag a record with a note: a new record pointing at it, the old one stays as it was."""
    with transaction.atomic():
        return ledger_append(
            event=AuditEvent.AUDIT_FLAGGED,
            actor=actor,
            details={
                "target_sequence": target.sequence,
                "note": note,
                "summary": f"Flagged record {target.sequence}: {note}",
            },
        )


def settings_record_if_changed(*, actor: Actor = None) -> AuditRecord | None:
    """Record the settings that shape answers when they differ from the last recorded ones."""
    current = json_ready({name: getattr(settings, name, None) for name in ANSWER_SETTINGS})
    with transaction.atomic():
        _lock_chain(transaction.get_connection())
        last = (
            AuditRecord.objects.filter(event=AuditEvent.SETTINGS_CHANGED)
            .order_by("-sequence")
            .values_list("details", flat=True)
            .first()
        )
        previous = json.loads(last).get("settings", {}) if last else {}
        if previous == current:
            return None
        changed = sorted(name for name in current if previous.get(name) != current[name])
        return ledger_append(
            event=AuditEvent.SETTINGS_CHANGED,
            actor=actor,
            details={
                "settings": current,
                "previous": previous,
                "changed": changed,
                "summary": "Answer settings changed: " + ", ".join(changed),
            },
        )


def anchor_adopt_unanchored_head() -> bool:
    """Sign the head of a ledger that has never been anchored (one older than its anchor).

    Only when the anchor holds no checkpoint at all: a ledger that was anchored before never
    has its head signed again this way, or a forged append made while the server was down
    would be blessed at the next start.
    """
    if checkpoints_read():
        return False
    head = AuditHead.objects.filter(id=AuditHead.HEAD_ID).first()
    if head is None:
        return False
    return checkpoint_write(head.sequence, head.hash) is not None
