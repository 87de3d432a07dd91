"""The audit ledger: every answer and every administrative act, append-only and hash-chained.

Each record's hash is the SHA-256 of the canonical JSON (sorted keys, no whitespace, UTF-8,
non-ASCII kept) of its sequence, time, event, actor, details and the previous record's hash.
Changing, removing, inserting or reordering a record by hand breaks the chain at that record,
and `ledger_verify` names it. Exports carry the hashes, so they can be checked elsewhere
(deploy/verify_audit_export.py does it without Django).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db import connection as default_connection
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField, Q, QuerySet, signals
from django.db.models.deletion import ProtectedError
from django.db.models.expressions import RawSQL
from django.db.transaction import TransactionManagementError
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from accounts.roles import is_auditor, is_document_admin, manageable_documents
from assistant.models import (
    Answer,
    AuditEvent,
    AuditFlag,
    AuditHead,
    AuditRecord,
    AuditReference,
    AuditReferenceKind,
)
from ingestion.models import Document, DocumentVersion

GENESIS_HASH = "0" * 64
# Any constant will do; it names the one PostgreSQL advisory lock that orders appends.
LEDGER_LOCK_KEY = 0x4155444954
# How far from its place a record is looked for when its hash only fits another position.
MOVED_SEARCH_WINDOW = 256
VERIFY_CHUNK = 2000

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


# Canonical content and hashes


_CANONICAL_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


# A string as canonical JSON writes it (non-ASCII kept), without the encoder's overhead.
_quote: Callable[[str], str] = json.encoder.encode_basestring


def canonical_json(value: Any) -> str:
    return _CANONICAL_ENCODER.encode(value)


def time_text(moment: datetime) -> str:
    """The record time as hashed: UTC, ISO 8601, always with microseconds."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def record_content(
    *,
    sequence: int,
    time: str,
    event: str,
    actor_id: int | None,
    actor_username: str,
    details_json: str,
    prev_hash: str,
    hash: str | None = None,
) -> str:
    """The canonical JSON of a record, built around its stored details text.

    Equal to `canonical_json` of the record as a dict; the details are not parsed again, which
    keeps verification fast. With `hash` it is an export line, without it the hashed content.
    """
    actor = (
        "null" if actor_id is None else f'{{"id":{actor_id:d},"username":{_quote(actor_username)}}}'
    )
    hash_part = "" if hash is None else f',"hash":{_quote(hash)}'
    return (
        f'{{"actor":{actor},"details":{details_json},"event":{_quote(event)}{hash_part},'
        f'"prev_hash":{_quote(prev_hash)},"sequence":{sequence:d},"time":{_quote(time)}}}'
    )


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_ready(value: Any) -> Any:
    """Details as plain JSON: ids and times become strings, non-finite numbers become null."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _encodable(str(value))
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, set | frozenset):
        return [json_ready(item) for item in sorted(value, key=str)]
    if isinstance(value, datetime):
        return time_text(value) if value.tzinfo is not None else value.isoformat()
    if isinstance(value, date | uuid.UUID | Decimal | PurePath):
        return str(value)
    raise TypeError(f"audit details cannot hold a {type(value).__name__}")


def parse_details(details_json: str) -> Any:
    """Stored details back as Python values; orjson reads them about four times faster."""
    try:
        return orjson.loads(details_json)
    except orjson.JSONDecodeError:
        # orjson stops at integers beyond 64 bits; the standard library does not.
        return json.loads(details_json)


def _encodable(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


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
    answer: Answer | None = None
    request_id: str = ""


def ledger_append(
    *,
    event: str,
    actor: Actor,
    details: Mapping[str, Any],
    answer: Answer | None = None,
    request_id: str = "",
) -> AuditRecord:
    """Append one record; call it inside the transaction of the act it records.

    For an answer, pass the `Answer`: its fields fill the details (question, searched_query,
    answer, reasoning, status, mode, citations, passages, dropped_citations, model_name,
    endpoint, error, token counts, first_token_ms, total_ms) and `details` adds or overrides
    the rest: `acl_groups` ([{"id", "name"}], taken from the actor when absent), `prompt`
    ([{"role", "content"}]), `model`, `sampling` ({"temperature", ...}). Passages carry `n`,
    `point_id`, `document_id`, `version_id`, `score` and the `text` shown to the model, and get
    a `content_sha256` of that text when they have none; `citations` are passages or their
    numbers. The record is committed, or rolled back, with the caller's transaction.
    """
    return ledger_append_many(
        [
            LedgerEntry(
                event=event, actor=actor, details=details, answer=answer, request_id=request_id
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
    groups_by_actor: dict[Any, list[dict[str, Any]]] = {}
    for entry in entries:
        sequence += 1
        details, details_json = _details_of(entry, groups_by_actor)
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
            answer_id=entry.answer.pk if entry.answer is not None else None,
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


def answer_details(answer: Answer) -> dict[str, Any]:
    return {
        "answer_id": answer.pk,
        "conversation_id": answer.conversation_id,
        "question": answer.question,
        "searched_query": answer.searched_query,
        "answer": answer.answer,
        "reasoning": answer.reasoning,
        "status": answer.status,
        "mode": answer.mode,
        "citations": answer.citations,
        "passages": answer.passages,
        "dropped_citations": answer.dropped_citations,
        "model_name": answer.model_name,
        "endpoint": answer.endpoint,
        "error": answer.error,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "first_token_ms": answer.first_token_ms,
        "total_ms": answer.total_ms,
    }


def groups_of(user: AbstractBaseUser) -> list[dict[str, Any]]:
    return [
        {"id": group_id, "name": name}
        for group_id, name in Group.objects.filter(user=user.pk)
        .order_by("id")
        .values_list("id", "name")
    ]


def _details_of(
    entry: LedgerEntry, groups_by_actor: dict[Any, list[dict[str, Any]]]
) -> tuple[dict[str, Any], str]:
    """The details as stored, and their canonical JSON text."""
    details: dict[str, Any] = answer_details(entry.answer) if entry.answer is not None else {}
    details.update(entry.details)
    if entry.event == AuditEvent.ANSWER:
        actor = entry.actor
        if "acl_groups" not in details and actor is not None and actor.is_authenticated:
            if actor.pk not in groups_by_actor:
                groups_by_actor[actor.pk] = groups_of(actor)
            details["acl_groups"] = groups_by_actor[actor.pk]
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


def document_access(document: Document) -> dict[str, Any]:
    """Who may read a document, as stored now."""
    groups = document.groups.order_by("id").values_list("id", "name")
    stored = Document.objects.filter(pk=document.pk).values_list("is_public", flat=True)
    return {
        "is_public": stored.get(),
        "groups": [{"id": group_id, "name": name} for group_id, name in groups],
    }


_DOCUMENT_SUMMARIES = {
    AuditEvent.DOCUMENT_UPLOADED: "Uploaded {title}",
    AuditEvent.DOCUMENT_VERSION_ADDED: "New version {number} of {title}",
    AuditEvent.DOCUMENT_ACCESS_CHANGED: "Changed who may read {title}",
    AuditEvent.DOCUMENT_DELETED: "Deleted {title}",
}


def document_act_details(
    event: AuditEvent,
    document: Document,
    *,
    version: DocumentVersion | None = None,
    access_before: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The details of an administrative act on a document."""
    details: dict[str, Any] = {
        "document_id": document.pk,
        "title": document.title,
        "source_path": document.source_path,
        **document_access(document),
        "summary": _DOCUMENT_SUMMARIES[event].format(
            title=f"“{document.title}”", number=version.number if version else ""
        ),
    }
    if version is not None:
        details["version"] = {
            "id": version.pk,
            "number": version.number,
            "sha256": version.sha256,
            "original_name": version.original_name,
            "size_bytes": version.size_bytes,
        }
    if access_before is not None:
        details["before"] = access_before
    return details


# Verifying


@dataclass(frozen=True)
class ChainProblem:
    """The first place where the chain is broken; `kind` is edited, deleted, inserted or
    reordered."""

    sequence: int
    kind: str
    message: str


@dataclass
class VerifyResult:
    checked: int = 0
    first_sequence: int | None = None
    last_sequence: int | None = None
    last_hash: str = GENESIS_HASH
    problem: ChainProblem | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


_VERIFY_FIELDS = (
    "sequence",
    "created_at",
    "event",
    "actor_id",
    "actor_username",
    "details",
    "prev_hash",
    "hash",
    "status",
    "model_name",
    "summary",
    "search_text",
)


def ledger_verify(*, from_sequence: int = 1, chunk_size: int = VERIFY_CHUNK) -> VerifyResult:
    """Walk the chain from a record on and report the first record that breaks it."""
    result = VerifyResult()
    previous = (
        AuditRecord.objects.filter(sequence__lt=from_sequence)
        .order_by("-sequence")
        .values_list("sequence", "hash")
        .first()
    )
    expected, expected_prev = (previous[0] + 1, previous[1]) if previous else (1, GENESIS_HASH)
    result.last_hash = expected_prev
    rows = (
        AuditRecord.objects.filter(sequence__gte=from_sequence)
        .order_by("sequence")
        .values_list(*_VERIFY_FIELDS)
        .iterator(chunk_size=chunk_size)
    )
    for row in rows:
        sequence, created_at, event, actor_id, actor_username, details_json, prev_hash, stored = (
            row[:8]
        )
        if sequence != expected:
            result.problem = _diagnose_gap(expected, sequence, prev_hash)
            return result
        content = record_content(
            sequence=sequence,
            time=time_text(created_at),
            event=event,
            actor_id=actor_id,
            actor_username=actor_username,
            details_json=details_json,
            prev_hash=prev_hash,
        )
        if content_hash(content) != stored:
            result.problem = _diagnose_mismatch(row, expected_prev)
            return result
        if prev_hash != expected_prev:
            result.problem = _diagnose_link(sequence, prev_hash)
            return result
        column_problem = _column_mismatch(row)
        if column_problem:
            result.problem = ChainProblem(sequence, "edited", column_problem)
            return result
        if result.first_sequence is None:
            result.first_sequence = sequence
        result.checked += 1
        result.last_sequence = sequence
        result.last_hash = stored
        expected, expected_prev = sequence + 1, stored
    result.problem = _diagnose_head(expected - 1, expected_prev)
    return result


def _column_mismatch(row: tuple[Any, ...]) -> str:
    sequence, event, details_json = row[0], row[2], row[5]
    stored = dict(zip(("status", "model_name", "summary", "search_text"), row[8:], strict=True))
    derived = columns_from_details(event, parse_details(details_json))
    for name, value in derived.items():
        if stored[name] != value:
            return (
                f"record {sequence} was edited: its {name} column says {stored[name][:60]!r} "
                f"but its hashed details say {value[:60]!r}"
            )
    return ""


def _sequence_with_hash(digest: str) -> int | None:
    return AuditRecord.objects.filter(hash=digest).values_list("sequence", flat=True).first()


def _diagnose_gap(expected: int, found: int, prev_hash: str) -> ChainProblem:
    moved_to = _sequence_with_hash(prev_hash)
    if moved_to is not None and found - 1 == expected:
        return ChainProblem(
            expected,
            "reordered",
            f"record {expected} was reordered: it now sits at position {moved_to}, "
            f"while record {found} is still chained to it",
        )
    missing = (
        f"record {expected} is"
        if found - 1 == expected
        else f"records {expected} to {found - 1} are"
    )
    return ChainProblem(
        expected, "deleted", f"{missing} missing (deleted): the sequence jumps to {found}"
    )


def _original_position(row: tuple[Any, ...]) -> int | None:
    """The position at which a record's hash does fit, when it is not its present one."""
    sequence, created_at, event, actor_id, actor_username, details_json, prev_hash, stored = row[:8]
    low = max(1, sequence - MOVED_SEARCH_WINDOW)
    for candidate in range(low, sequence + MOVED_SEARCH_WINDOW + 1):
        if candidate == sequence:
            continue
        content = record_content(
            sequence=candidate,
            time=time_text(created_at),
            event=event,
            actor_id=actor_id,
            actor_username=actor_username,
            details_json=details_json,
            prev_hash=prev_hash,
        )
        if content_hash(content) == stored:
            return candidate
    return None


def _diagnose_mismatch(row: tuple[Any, ...], expected_prev: str) -> ChainProblem:
    sequence, prev_hash, stored = row[0], row[6], row[7]
    written_as = _original_position(row)
    if written_as is not None and written_as < sequence:
        return ChainProblem(
            written_as,
            "inserted",
            f"record {written_as} was inserted: the record now at position {sequence} was "
            f"written as record {written_as}",
        )
    if written_as is not None:
        if _sequence_with_hash(prev_hash) is None:
            return ChainProblem(
                sequence,
                "deleted",
                f"record {sequence} is missing (deleted) and the later records were renumbered: "
                f"the record now at position {sequence} was written as record {written_as}",
            )
        return ChainProblem(
            sequence,
            "reordered",
            f"record {sequence} was reordered: the record at this position was written as "
            f"record {written_as}",
        )
    following = (
        AuditRecord.objects.filter(sequence__gt=sequence)
        .order_by("sequence")
        .values_list("prev_hash", flat=True)
        .first()
    )
    head = AuditHead.objects.filter(id=AuditHead.HEAD_ID).first()
    chained_past = following == expected_prev or (
        following is None and head is not None and head.sequence < sequence
    )
    if chained_past and following != stored:
        return ChainProblem(
            sequence,
            "inserted",
            f"record {sequence} was inserted: the ledger never chained it "
            f"(its hash does not match its content and no record follows from it)",
        )
    return ChainProblem(
        sequence,
        "edited",
        f"record {sequence} was edited: its content no longer matches its hash",
    )


def _diagnose_link(sequence: int, prev_hash: str) -> ChainProblem:
    parent = _sequence_with_hash(prev_hash)
    if parent is not None and parent < sequence - 1:
        return ChainProblem(
            parent + 1,
            "inserted",
            f"record {parent + 1} was inserted: record {sequence} is chained to record {parent}",
        )
    if parent is not None:
        return ChainProblem(
            sequence,
            "reordered",
            f"record {sequence} was reordered: it is chained to record {parent}, which now "
            "comes after it",
        )
    return ChainProblem(
        sequence - 1,
        "edited",
        f"record {sequence - 1} was edited and re-hashed, or replaced: record {sequence} was "
        "chained to a different record",
    )


def _diagnose_head(last_sequence: int, last_hash: str) -> ChainProblem | None:
    head = AuditHead.objects.filter(id=AuditHead.HEAD_ID).first()
    if head is None:
        if last_sequence == 0:
            return None
        return ChainProblem(
            last_sequence, "deleted", "the chain head is missing, so deleted last records go unseen"
        )
    if head.sequence > last_sequence:
        if AuditRecord.objects.filter(sequence__gt=last_sequence).exists():
            # Appended while the walk ran: the walk saw a consistent snapshot before them.
            return None
        missing = (
            f"record {head.sequence} is"
            if head.sequence == last_sequence + 1
            else f"records {last_sequence + 1} to {head.sequence} are"
        )
        return ChainProblem(
            last_sequence + 1,
            "deleted",
            f"{missing} missing (deleted): the chain head names record {head.sequence}",
        )
    if head.sequence < last_sequence:
        return ChainProblem(
            head.sequence + 1,
            "inserted",
            f"record {head.sequence + 1} was inserted: "
            f"the ledger last wrote record {head.sequence}",
        )
    if head.hash != last_hash:
        return ChainProblem(
            last_sequence,
            "edited",
            f"record {last_sequence} was edited and re-hashed, or replaced: the chain head "
            "names a different hash",
        )
    return None


@dataclass(frozen=True)
class RecordChainStatus:
    hash_matches: bool
    links_to_previous: bool
    previous_sequence: int | None

    @property
    def intact(self) -> bool:
        return self.hash_matches and self.links_to_previous


def record_chain_status(record: AuditRecord) -> RecordChainStatus:
    """Whether one record's hash recomputes and its predecessor's hash is the one it names."""
    content = record_content(
        sequence=record.sequence,
        time=time_text(record.created_at),
        event=record.event,
        actor_id=record.actor_id,
        actor_username=record.actor_username,
        details_json=record.details,
        prev_hash=record.prev_hash,
    )
    previous_hash = (
        AuditRecord.objects.filter(sequence=record.sequence - 1)
        .values_list("hash", flat=True)
        .first()
    )
    links = record.prev_hash == (previous_hash if record.sequence > 1 else GENESIS_HASH)
    return RecordChainStatus(
        hash_matches=content_hash(content) == record.hash,
        links_to_previous=links,
        previous_sequence=record.sequence - 1 if record.sequence > 1 else None,
    )


# Reading and exporting


@dataclass(frozen=True)
class AuditFilters:
    username: str = ""
    group_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str = ""
    document_id: int | None = None
    model_name: str = ""
    event: str = ""
    flagged: bool | None = None
    text: str = ""
    sort: str = "-sequence"

    def as_details(self) -> dict[str, Any]:
        """The filters that are set, for the record of who looked at what."""
        values: dict[str, Any] = json_ready(self.__dict__)
        return {key: value for key, value in values.items() if value not in (None, "")}


SORTS = {
    "-sequence": ("-sequence",),
    "sequence": ("sequence",),
    "actor_username": ("actor_username", "-sequence"),
    "-actor_username": ("-actor_username", "-sequence"),
    "event": ("event", "-sequence"),
    "-event": ("-event", "-sequence"),
    "status": ("status", "-sequence"),
    "-status": ("-status", "-sequence"),
    "model_name": ("model_name", "-sequence"),
    "-model_name": ("-model_name", "-sequence"),
}


def audit_flags_in(scope: Q) -> QuerySet[AuditFlag]:
    """The flags a reader of `scope` may know of: those whose flag record is in it."""
    if not scope:
        return AuditFlag.objects.all()
    return AuditFlag.objects.filter(record__in=AuditRecord.objects.filter(scope).values("pk"))


def audit_records_filtered(
    filters: AuditFilters, *, scope: Q | None = None
) -> QuerySet[AuditRecord]:
    """The records matching the filters, within `scope` (see `audit_scope_for`).

    Without a scope every record is read: that is for the operator's commands only.
    """
    scope = Q() if scope is None else scope
    records = AuditRecord.objects.filter(scope)
    if filters.username:
        records = records.filter(actor_username=filters.username)
    if filters.group_id is not None:
        records = records.filter(
            _referencing(
                [AuditReferenceKind.GROUP_ACL, AuditReferenceKind.GROUP_SUBJECT], filters.group_id
            )
        )
    if filters.document_id is not None:
        records = records.filter(
            _referencing(
                [AuditReferenceKind.DOCUMENT_CITED, AuditReferenceKind.DOCUMENT_SUBJECT],
                filters.document_id,
            )
        )
    if filters.since is not None:
        records = records.filter(created_at__gte=filters.since)
    if filters.until is not None:
        records = records.filter(created_at__lt=filters.until)
    if filters.status:
        records = records.filter(status=filters.status)
    if filters.model_name:
        records = records.filter(model_name=filters.model_name)
    if filters.event:
        records = records.filter(event=filters.event)
    if filters.flagged is not None:
        flagged = Q(sequence__in=audit_flags_in(scope).values("target_id"))
        records = records.filter(flagged if filters.flagged else ~flagged)
    if filters.text:
        records = records.filter(_text_matches(filters.text))
    return records.order_by(*SORTS.get(filters.sort, SORTS["-sequence"]))


def _referencing(kinds: list[AuditReferenceKind], target_id: int) -> Q:
    # A subquery led by the (kind, target_id) index; SQLite would scan every record for EXISTS.
    referencing = AuditReference.objects.filter(kind__in=kinds, target_id=target_id)
    return Q(sequence__in=referencing.values("record_id"))


def _text_matches(text: str) -> Q | RawSQL:
    if default_connection.vendor == "postgresql":
        # The same expression as the GIN index of migration 0003, so that the index answers it.
        return RawSQL(
            "to_tsvector('english'::regconfig, search_text) "
            "@@ websearch_to_tsquery('english'::regconfig, %s)",
            [text],
            output_field=BooleanField(),
        )
    if default_connection.vendor == "sqlite":
        # The FTS5 index of migration 0003; every word must occur, each quoted as a phrase.
        words = re.findall(r"\w+", text)
        if not words:
            return Q(pk__in=[])
        match = " ".join(f'"{word}"' for word in words)
        return Q(
            sequence__in=RawSQL(
                "SELECT rowid FROM assistant_auditsearch WHERE assistant_auditsearch MATCH %s",
                [match],
            )
        )
    return Q(search_text__icontains=text)


_EXPORT_FIELDS = (
    "sequence",
    "created_at",
    "event",
    "actor_id",
    "actor_username",
    "details",
    "prev_hash",
    "hash",
)
CSV_COLUMNS = (
    "sequence",
    "time",
    "event",
    "actor_id",
    "actor_username",
    "status",
    "model_name",
    "summary",
    "prev_hash",
    "hash",
    "details",
)


def export_lines(records: QuerySet[AuditRecord], *, export_format: str) -> Iterator[str]:
    """Records as JSONL (one canonical record with its hash per line) or CSV, streamed."""
    if export_format == "csv":
        yield from _csv_lines(records)
        return
    rows = records.values_list(*_EXPORT_FIELDS).iterator(chunk_size=VERIFY_CHUNK)
    for sequence, created_at, event, actor_id, username, details_json, prev_hash, digest in rows:
        yield (
            record_content(
                sequence=sequence,
                time=time_text(created_at),
                event=event,
                actor_id=actor_id,
                actor_username=username,
                details_json=details_json,
                prev_hash=prev_hash,
                hash=digest,
            )
            + "\n"
        )


def _csv_lines(records: QuerySet[AuditRecord]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: Iterable[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(CSV_COLUMNS)
    fields = (
        *_EXPORT_FIELDS[:5],
        "status",
        "model_name",
        "summary",
        "prev_hash",
        "hash",
        "details",
    )
    for row in records.values_list(*fields).iterator(chunk_size=VERIFY_CHUNK):
        sequence, created_at, *rest = row
        yield line([sequence, time_text(created_at), *rest])


# Who may audit (accounts/roles.py says who has which role), and the record of their looking


# The administrative acts on documents; document admins read these records and no others.
DOCUMENT_EVENT_PREFIX = "document."


def audit_scope_for(user: AbstractBaseUser | AnonymousUser) -> Q | None:
    """The records a user may read in the audit pages and exports; None when they may not look.

    Auditors (and superusers) read everything. Document admins read the administrative records
    of the documents they manage (deleted ones too), and never answers, users, groups, settings
    or the auditors' own records. Everyone else reads nothing.
    """
    if not user.is_authenticated or not user.is_active:
        return None
    if is_auditor(user):
        return Q()
    if not is_document_admin(user):
        return None
    managed = manageable_documents(user, include_deleted=True)
    subjects = AuditReference.objects.filter(
        kind=AuditReferenceKind.DOCUMENT_SUBJECT, target_id__in=managed.values("pk")
    )
    return Q(event__startswith=DOCUMENT_EVENT_PREFIX, sequence__in=subjects.values("record_id"))


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


# The acting user and request of the current web request, for hooks and services


_current_request: ContextVar[HttpRequest | None] = ContextVar("audit_request", default=None)
_current_request_id: ContextVar[str] = ContextVar("audit_request_id", default="")


class AuditContextMiddleware:
    """Lets services and signal hooks name the user and request behind the act they record."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request_id = offered if _is_request_id(offered) else uuid.uuid4().hex
        request_token = _current_request.set(request)
        id_token = _current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current_request.reset(request_token)
            _current_request_id.reset(id_token)
        response["X-Request-ID"] = request_id
        return response


def _is_request_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def current_actor() -> AbstractBaseUser | None:
    request = _current_request.get()
    if request is None or not request.user.is_authenticated:
        return None
    user: AbstractBaseUser = request.user
    return user


def current_request_id() -> str:
    return _current_request_id.get()


# Hooks: user and group changes, and documents that the ledger still needs


def _append_hooked(event: AuditEvent, details: dict[str, Any]) -> None:
    with transaction.atomic():
        ledger_append(event=event, actor=current_actor(), details=details)


def _user_saved(
    sender: type[AbstractBaseUser],
    instance: AbstractBaseUser,
    created: bool,
    raw: bool,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    # Logging in saves last_login; that is not a change anyone needs to audit.
    if raw or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    username = instance.get_username()
    _append_hooked(
        AuditEvent.USER_CHANGED,
        {
            "user_id": instance.pk,
            "username": username,
            "created": created,
            "is_active": instance.is_active,
            "is_staff": getattr(instance, "is_staff", False),
            "is_superuser": getattr(instance, "is_superuser", False),
            "fields": sorted(update_fields) if update_fields is not None else None,
            "summary": f"User {username} {'created' if created else 'changed'}",
        },
    )


def _user_deleted(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, **kwargs: Any
) -> None:
    username = instance.get_username()
    _append_hooked(
        AuditEvent.USER_CHANGED,
        {
            "user_id": instance.pk,
            "username": username,
            "deleted": True,
            "summary": f"User {username} deleted",
        },
    )


def _group_saved(
    sender: type[Group], instance: Group, created: bool, raw: bool, **kwargs: Any
) -> None:
    if raw:
        return
    _append_hooked(
        AuditEvent.GROUP_CHANGED,
        {
            "group_id": instance.pk,
            "name": instance.name,
            "created": created,
            "summary": f"Group {instance.name} {'created' if created else 'changed'}",
        },
    )


def _group_deleted(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    _append_hooked(
        AuditEvent.GROUP_CHANGED,
        {
            "group_id": instance.pk,
            "name": instance.name,
            "deleted": True,
            "summary": f"Group {instance.name} deleted",
        },
    )


def _membership_changed(
    sender: type[Any],
    instance: AbstractBaseUser | Group,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    if action == "pre_clear":
        # After the clear nobody can tell who was in; record it before.
        related = instance.user_set if reverse else instance.groups  # type: ignore[union-attr]
        pk_set = set(related.values_list("pk", flat=True))
        change = "removed"
    elif action in ("post_add", "post_remove"):
        change = "added" if action == "post_add" else "removed"
    else:
        return
    if not pk_set:
        return
    ids = sorted(pk_set)
    if reverse:
        assert isinstance(instance, Group)
        usernames = sorted(
            get_user_model().objects.filter(pk__in=ids).values_list("username", flat=True)
        )
        _append_hooked(
            AuditEvent.GROUP_CHANGED,
            {
                "group_id": instance.pk,
                "name": instance.name,
                f"members_{change}": usernames,
                "user_ids": ids,
                "summary": f"Group {instance.name}: {', '.join(usernames)} {change}",
            },
        )
        return
    names = sorted(Group.objects.filter(pk__in=ids).values_list("name", flat=True))
    username = instance.get_username()  # type: ignore[union-attr]
    _append_hooked(
        AuditEvent.USER_CHANGED,
        {
            "user_id": instance.pk,
            "username": username,
            f"groups_{change}": names,
            "group_ids": ids,
            "summary": f"User {username} {change} {'to' if change == 'added' else 'from'} "
            f"groups {', '.join(names)}",
        },
    )


def _refuse_deleting_documents_on_record(
    sender: type[Document | DocumentVersion], instance: Document | DocumentVersion, **kwargs: Any
) -> None:
    """Soft deletion is the way out of search; a hard delete must not take evidence with it."""
    document_id = instance.pk if isinstance(instance, Document) else instance.document_id
    reason = document_kept_reason(document_id)
    if reason:
        raise ProtectedError(
            f"Document {document_id} is kept ({reason}); it can be deleted (out of search) "
            "but not purged.",
            {instance},
        )


def document_kept_reason(document_id: int) -> str:
    """Why a document may not be hard-deleted, or "" when nothing keeps it.

    A legal hold keeps it whatever the ledger says; otherwise the first record citing it does.
    """
    if Document.objects.filter(pk=document_id, legal_hold=True).exists():
        return "legal hold"
    citing = (
        AuditReference.objects.filter(kind=AuditReferenceKind.DOCUMENT_CITED, target_id=document_id)
        .order_by("record_id")
        .values_list("record_id", flat=True)
        .first()
    )
    return "" if citing is None else f"cited by audit record {citing}"


def connect_signals() -> None:
    user_model = get_user_model()
    signals.post_save.connect(_user_saved, sender=user_model, dispatch_uid="audit-user-saved")
    signals.post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="audit-user-deleted")
    signals.post_save.connect(_group_saved, sender=Group, dispatch_uid="audit-group-saved")
    signals.post_delete.connect(_group_deleted, sender=Group, dispatch_uid="audit-group-deleted")
    signals.m2m_changed.connect(
        _membership_changed, sender=user_model.groups.through, dispatch_uid="audit-membership"
    )
    for model in (Document, DocumentVersion):
        signals.pre_delete.connect(
            _refuse_deleting_documents_on_record,
            sender=model,
            dispatch_uid=f"audit-keep-{model.__name__}",
        )
