"""Walking the chain: the first record that breaks it, and what happened to it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.anchor import AnchorError, checkpoints_read
from audit.hashing import GENESIS_HASH, HASHED_COLUMNS, parse_details, record_hash, row_hash
from audit.ledger import answer_id_from_details, columns_from_details, references_from_details
from audit.models import AuditEvent, AuditFlag, AuditHead, AuditRecord, AuditReference

# How far from its place a record is looked for when its hash only fits another position.
MOVED_SEARCH_WINDOW = 256
VERIFY_CHUNK = 2000


@dataclass(frozen=True)
class ChainProblem:
    """The first place where the chain is broken.

    `kind` is edited, deleted, inserted or reordered (what the hashes show), or truncated,
    recomputed, forged append, emptied or forged checkpoint (what the signed anchor shows).
    """

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
    # Signed checkpoints read from the anchor, and the newest record they cover.
    checkpoints: int = 0
    anchored_through: int | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class VerifiedRecord:
    """A record whose hash and link held, handed to the checks of what it vouches for."""

    sequence: int
    event: str
    details: Mapping[str, Any]


# Layers above the ledger register how to compare their own rows with the records that vouch
# for them (e.g. answers, in the assistant app); the ledger knows none of their models.
VouchedRowsCheck = Callable[[Sequence[VerifiedRecord]], "ChainProblem | None"]
_vouched_rows_checks: list[VouchedRowsCheck] = []


def vouched_rows_check_register(check: VouchedRowsCheck) -> None:
    if check not in _vouched_rows_checks:
        _vouched_rows_checks.append(check)


# The hashed columns first (as HASHED_COLUMNS), then the copies the filters read.
_VERIFY_FIELDS = (*HASHED_COLUMNS, "status", "model_name", "summary", "search_text", "answer_id")


def ledger_verify(
    *,
    from_sequence: int = 1,
    chunk_size: int = VERIFY_CHUNK,
    anchor_files: Sequence[Path] | None = None,
) -> VerifyResult:
    """Walk the chain from a record on and report the first record that breaks it.

    Besides each record's hash and link, it checks the rows a record vouches for (its
    references, its flag, and what the layers above registered) and compares the chain with
    the signed checkpoints of the anchor, which name a truncated, recomputed, forged or
    emptied ledger that the hashes alone cannot.
    """
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
    batch: list[VerifiedRecord] = []
    chain_problem: ChainProblem | None = None
    for row in rows:
        chain_problem = _row_problem(row, expected, expected_prev)
        if chain_problem is not None:
            break
        sequence, stored = row[0], row[7]
        batch.append(VerifiedRecord(sequence, row[2], parse_details(row[5])))
        if result.first_sequence is None:
            result.first_sequence = sequence
        result.checked += 1
        result.last_sequence = sequence
        result.last_hash = stored
        expected, expected_prev = sequence + 1, stored
        if len(batch) >= chunk_size:
            result.problem = _vouched_rows_problem(batch)
            if result.problem is not None:
                return result
            batch = []
    if chain_problem is None:
        chain_problem = _diagnose_head(expected - 1, expected_prev)
    # A broken row stops the walk; the rows before it may still hide an earlier problem. At the
    # same record, what the hashes say (inserted, say) explains more than a missing row.
    rows_problem = _vouched_rows_problem(batch)
    result.problem = chain_problem
    if rows_problem is not None and (
        chain_problem is None or rows_problem.sequence < chain_problem.sequence
    ):
        result.problem = rows_problem
    anchor_problem = _anchor_problem(result, from_sequence, anchor_files)
    if result.problem is None:
        result.problem = anchor_problem
    return result


def _row_problem(row: tuple[Any, ...], expected: int, expected_prev: str) -> ChainProblem | None:
    sequence, prev_hash, stored = row[0], row[6], row[7]
    if sequence != expected:
        return _diagnose_gap(expected, sequence, prev_hash)
    if row_hash(row) != stored:
        return _diagnose_mismatch(row, expected_prev)
    if prev_hash != expected_prev:
        return _diagnose_link(sequence, prev_hash)
    column_problem = _column_mismatch(row)
    if column_problem:
        return ChainProblem(sequence, "edited", column_problem)
    return None


def _column_mismatch(row: tuple[Any, ...]) -> str:
    sequence, event, details_json = row[0], row[2], row[5]
    stored: dict[str, Any] = dict(
        zip(("status", "model_name", "summary", "search_text"), row[8:12], strict=True)
    )
    details = parse_details(details_json)
    derived: dict[str, Any] = dict(columns_from_details(event, details))
    stored["answer_id"] = row[12]
    derived["answer_id"] = answer_id_from_details(event, details)
    for name, value in derived.items():
        if stored[name] != value:
            return (
                f"record {sequence} was edited: its {name} column says {str(stored[name])[:60]!r} "
                f"but its hashed details say {str(value)[:60]!r}"
            )
    return ""


def _vouched_rows_problem(batch: Sequence[VerifiedRecord]) -> ChainProblem | None:
    """The first record whose references, flag or vouched rows differ from its details."""
    if not batch:
        return None
    problems = [_references_problem(batch), _flags_problem(batch)]
    problems += [check(batch) for check in _vouched_rows_checks]
    found = [problem for problem in problems if problem is not None]
    return min(found, key=lambda problem: problem.sequence) if found else None


def _references_problem(batch: Sequence[VerifiedRecord]) -> ChainProblem | None:
    sequences = [record.sequence for record in batch]
    stored: dict[int, set[tuple[str, int]]] = {sequence: set() for sequence in sequences}
    for record_id, kind, target in AuditReference.objects.filter(
        record_id__in=sequences
    ).values_list("record_id", "kind", "target_id"):
        stored[record_id].add((kind, target))
    for record in batch:
        derived = set(references_from_details(record.details))
        if stored[record.sequence] != derived:
            missing = sorted(derived - stored[record.sequence])
            kind = "deleted" if missing else "inserted"
            return ChainProblem(
                record.sequence,
                "edited",
                f"record {record.sequence}'s reference rows were {kind}: they no longer match "
                "what its hashed details name",
            )
    return None


def _flags_problem(batch: Sequence[VerifiedRecord]) -> ChainProblem | None:
    flagging = [record for record in batch if record.event == AuditEvent.AUDIT_FLAGGED]
    stored = dict(
        AuditFlag.objects.filter(
            record_id__in=[record.sequence for record in flagging]
        ).values_list("record_id", "target_id")
    )
    for record in flagging:
        if stored.get(record.sequence) != record.details.get("target_sequence"):
            return ChainProblem(
                record.sequence,
                "edited",
                f"record {record.sequence}'s flag row was changed or deleted",
            )
    return None


def _anchor_problem(
    result: VerifyResult, from_sequence: int, anchor_files: Sequence[Path] | None
) -> ChainProblem | None:
    """Compare the chain with the signed checkpoints: what recomputed hashes cannot hide."""
    try:
        checkpoints = checkpoints_read(anchor_files)
    except AnchorError as error:
        return ChainProblem(from_sequence, "forged checkpoint", str(error))
    result.checkpoints = len(checkpoints)
    if not checkpoints:
        return None
    last_record = result.last_sequence or 0
    newest = max(checkpoints, key=lambda checkpoint: checkpoint.sequence)
    if last_record == 0 and from_sequence == 1:
        return ChainProblem(
            1,
            "emptied",
            f"the ledger holds no records, but a checkpoint signed at {newest.time} says it "
            f"held {newest.sequence}: it was emptied",
        )
    covered = [c for c in checkpoints if from_sequence <= c.sequence <= last_record]
    hashes = dict(
        AuditRecord.objects.filter(sequence__in={c.sequence for c in covered}).values_list(
            "sequence", "hash"
        )
    )
    agreed = from_sequence - 1
    for checkpoint in sorted(covered, key=lambda c: c.sequence):
        if hashes.get(checkpoint.sequence) != checkpoint.hash:
            return ChainProblem(
                agreed + 1,
                "recomputed",
                f"record {checkpoint.sequence} does not have the hash signed at "
                f"{checkpoint.time}: a record from {agreed + 1} to {checkpoint.sequence} was "
                "rewritten and the hashes after it recomputed",
            )
        agreed = checkpoint.sequence
    if newest.sequence > last_record:
        return ChainProblem(
            last_record + 1,
            "truncated",
            f"records {last_record + 1} to {newest.sequence} are missing: a checkpoint signed "
            f"at {newest.time} says the ledger held {newest.sequence} records",
        )
    result.anchored_through = newest.sequence
    if last_record > newest.sequence:
        return ChainProblem(
            newest.sequence + 1,
            "forged append",
            f"records {newest.sequence + 1} to {last_record} are not covered by a signed "
            "checkpoint: they were appended without the signing key (or the process stopped "
            "between writing them and signing)",
        )
    return None


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
    sequence, stored = row[0], row[7]
    low = max(1, sequence - MOVED_SEARCH_WINDOW)
    for candidate in range(low, sequence + MOVED_SEARCH_WINDOW + 1):
        if candidate != sequence and row_hash(row, sequence=candidate) == stored:
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
    digest = record_hash(
        sequence=record.sequence,
        created_at=record.created_at,
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
        hash_matches=digest == record.hash,
        links_to_previous=links,
        previous_sequence=record.sequence - 1 if record.sequence > 1 else None,
    )
