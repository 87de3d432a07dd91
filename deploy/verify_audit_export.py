#!/usr/bin/env python3
"""Check the hash chain of an audit export, with nothing but Python's standard library.

    python3 manage.py audit_export --since 2026-01-01 > audit.jsonl
    python3 deploy/verify_audit_export.py audit.jsonl
    python3 deploy/verify_audit_export.py audit.jsonl --head-hash <hash printed by audit_verify>

Each record's hash is the SHA-256 of the canonical JSON (keys sorted, no whitespace, non-ASCII
kept, UTF-8) of its actor, details, event, prev_hash, sequence and time; each record names the
hash of the one before it. An export that starts at record 1 is checked back to the start of
the chain; one that starts later is anchored with --prev-hash (the hash of the record before
it, from an earlier export). --head-hash checks that nothing was cut from the end. An export
of a filter from the audit pages holds records that do not follow one another: --filtered
checks each record's own hash only.

A JSONL export starts with the newest signed checkpoint of the ledger's anchor. When the
export holds the record that checkpoint names, that record must have the signed hash; with
--public-key (the `.pub` file beside AUDIT_SIGNING_KEY_FILE) the signature is checked too,
which needs the `cryptography` package. A chain recomputed by someone without the key then
fails here as well.

Exit status 0 when the export is intact, 1 when it is not: the last line names the first
broken record. CSV exports (audit_export --format csv) are read too; they carry no checkpoint.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

GENESIS_HASH = "0" * 64
HASHED_FIELDS = ("actor", "details", "event", "prev_hash", "sequence", "time")


class Broken(Exception):
    """The export is not the chain it claims to be."""


def record_hash(record: dict[str, Any]) -> str:
    content = {name: record[name] for name in HASHED_FIELDS}
    canonical = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def jsonl_records(
    lines: Iterable[str], checkpoints: list[dict[str, Any]] | None = None
) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise Broken(f"line {number} is not JSON: {error}") from error
        if number == 1 and isinstance(record, dict) and "checkpoint" in record:
            if checkpoints is not None:
                checkpoints.append(record["checkpoint"])
            continue
        missing = [name for name in (*HASHED_FIELDS, "hash") if name not in record]
        if missing:
            raise Broken(f"line {number} lacks {', '.join(missing)}")
        yield record


def csv_records(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)
    for row in csv.DictReader(lines):
        actor_id = row["actor_id"]
        yield {
            "actor": None
            if actor_id == ""
            else {"id": int(actor_id), "username": row["actor_username"]},
            "details": json.loads(row["details"]),
            "event": row["event"],
            "prev_hash": row["prev_hash"],
            "sequence": int(row["sequence"]),
            "time": row["time"],
            "hash": row["hash"],
        }


def checkpoint_check(checkpoint: dict[str, Any], public_key_file: str | None) -> None:
    """The checkpoint's signature, with the installation's public key; raises Broken."""
    if public_key_file is None:
        return
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
    except ImportError as error:
        raise Broken(
            "checking the checkpoint's signature needs the cryptography package"
        ) from error
    with open(public_key_file, "rb") as pem:
        key = serialization.load_pem_public_key(pem.read())
    if not hasattr(key, "verify") or type(key).__name__ != "Ed25519PublicKey":
        raise Broken(f"{public_key_file} is not an Ed25519 public key")
    signed = json.dumps(
        {name: checkpoint[name] for name in ("hash", "sequence", "time")},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    try:
        key.verify(base64.b64decode(checkpoint["signature"]), signed)  # type: ignore[call-arg]
    except (InvalidSignature, ValueError, KeyError) as error:
        raise Broken(
            "the export's checkpoint is not signed by this key (forged or edited)"
        ) from error


def verify(
    records: Iterator[dict[str, Any]],
    *,
    prev_hash: str | None,
    head_hash: str | None,
    filtered: bool = False,
    checkpoints: list[dict[str, Any]] | None = None,
) -> tuple[int, int | None, int | None, str]:
    """Return how many records were checked, the first and last sequence and the last hash."""
    count, first, last, last_hash = 0, None, None, ""
    for record in records:
        sequence = record["sequence"]
        for checkpoint in checkpoints or []:
            if checkpoint.get("sequence") == sequence and checkpoint.get("hash") != record["hash"]:
                raise Broken(
                    f"record {sequence} does not have the hash its signed checkpoint names "
                    "(the chain was rewritten and its hashes recomputed)"
                )
        if filtered:
            if last is not None and sequence <= last:
                raise Broken(f"record {sequence} comes after record {last} (reordered)")
            first = sequence if first is None else first
        elif last is None:
            first = sequence
            anchor = GENESIS_HASH if sequence == 1 else prev_hash
            if anchor is not None and record["prev_hash"] != anchor:
                raise Broken(
                    f"record {sequence} does not follow the anchor: "
                    "it names another previous record (edited, inserted or reordered)"
                )
        else:
            if sequence != last + 1:
                missing = last + 1 if sequence > last else sequence
                raise Broken(
                    f"record {missing} is missing or out of place: record {sequence} follows "
                    f"record {last} (deleted or reordered)"
                )
            if record["prev_hash"] != last_hash:
                raise Broken(
                    f"record {sequence} is not chained to record {last} "
                    "(a record was edited, inserted or reordered)"
                )
        if record_hash(record) != record["hash"]:
            raise Broken(f"record {sequence} was edited: its content does not match its hash")
        count, last, last_hash = count + 1, sequence, record["hash"]
    if head_hash is not None and last_hash != head_hash:
        raise Broken(
            f"the export ends at record {last} whose hash is not the expected head "
            "(records were cut from the end or edited)"
        )
    return count, first, last, last_hash


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the hash chain of an audit export.")
    parser.add_argument("export", help="a JSONL or CSV export, or - for standard input")
    parser.add_argument("--prev-hash", help="hash of the record just before the export")
    parser.add_argument("--head-hash", help="hash the last record of the export must have")
    parser.add_argument(
        "--filtered",
        action="store_true",
        help="a filtered export: check each record's hash, not the links between records",
    )
    parser.add_argument(
        "--public-key",
        help="the installation's audit public key (PEM): check the export's signed checkpoint",
    )
    options = parser.parse_args(argv)
    stream = (
        sys.stdin if options.export == "-" else open(options.export, encoding="utf-8", newline="")  # noqa: SIM115
    )
    with stream:
        first_line = stream.readline()
        checkpoints: list[dict[str, Any]] = []
        lines = itertools.chain([first_line], stream)
        records = (
            csv_records(lines)
            if first_line.startswith("sequence,")
            else jsonl_records(lines, checkpoints)
        )
        try:
            count, first, last, last_hash = verify(
                records,
                prev_hash=options.prev_hash,
                head_hash=options.head_hash,
                filtered=options.filtered,
                checkpoints=checkpoints,
            )
            for checkpoint in checkpoints:
                checkpoint_check(checkpoint, options.public_key)
        except Broken as problem:
            print(f"BROKEN: {problem}")
            return 1
    if count == 0:
        print("The export holds no records.")
        return 0
    print(f"{count} records, {first} to {last}; last hash {last_hash}")
    if options.filtered:
        print("INTACT: every record matches its hash.")
    else:
        print("INTACT: every record matches its hash and follows the one before it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
