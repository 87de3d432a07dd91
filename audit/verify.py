"""Walking the chain: the first record that breaks it, and what happened to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audit.hashing import GENESIS_HASH, content_hash, parse_details, record_content, time_text
from audit.ledger import columns_from_details
from audit.models import AuditHead, AuditRecord

# How far from its place a record is looked for when its hash only fits another position.
MOVED_SEARCH_WINDOW = 256
VERIFY_CHUNK = 2000


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
