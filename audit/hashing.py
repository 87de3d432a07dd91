"""Canonical record content and its hashes: the bytes the ledger chains and exports carry.

Each record's hash is the SHA-256 of the canonical JSON (sorted keys, no whitespace, UTF-8,
non-ASCII kept) of its sequence, time, event, actor, details and the previous record's hash.
deploy/verify_audit_export.py checks exports the same way without Django.
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import orjson

GENESIS_HASH = "0" * 64

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


# The stored columns a record's hash is computed from, followed by the hash itself.
HASHED_COLUMNS = (
    "sequence",
    "created_at",
    "event",
    "actor_id",
    "actor_username",
    "details",
    "prev_hash",
    "hash",
)


def row_hash(row: tuple[Any, ...], *, sequence: int | None = None) -> str:
    """The hash of a row read as HASHED_COLUMNS, at its own place or at `sequence`."""
    stored_sequence, created_at, event, actor_id, actor_username, details_json, prev_hash = row[:7]
    return record_hash(
        sequence=stored_sequence if sequence is None else sequence,
        created_at=created_at,
        event=event,
        actor_id=actor_id,
        actor_username=actor_username,
        details_json=details_json,
        prev_hash=prev_hash,
    )


def record_hash(
    *,
    sequence: int,
    created_at: datetime,
    event: str,
    actor_id: int | None,
    actor_username: str,
    details_json: str,
    prev_hash: str,
) -> str:
    """The hash a record at `sequence` with this content must carry."""
    return content_hash(
        record_content(
            sequence=sequence,
            time=time_text(created_at),
            event=event,
            actor_id=actor_id,
            actor_username=actor_username,
            details_json=details_json,
            prev_hash=prev_hash,
        )
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
