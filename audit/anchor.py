"""Signed checkpoints of the chain head, kept outside the database.

Whoever can write the database can recompute every hash of the chain; they cannot sign. After
each append commits, the head (record count and hash) is signed with an Ed25519 key that the
database never holds (`AUDIT_SIGNING_KEY_FILE`) and appended as one JSON line to a file opened
append-only (`AUDIT_ANCHOR_FILE`), and, when `AUDIT_ANCHOR_SYSLOG` names a collector, sent
there too, for a place the web tier cannot rewrite. `audit_verify` reads the checkpoints back
and compares the chain with them.

What this protects against: edits, deletions, truncation, a recomputed tail, forged appends
and an emptied ledger by someone who holds the database but not the key. What it does not:
someone who holds both the key and the anchor file (or the syslog target) can rewrite history.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import logging.handlers
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.utils import timezone

from audit.hashing import canonical_json, time_text

logger = logging.getLogger(__name__)

_write_lock = threading.Lock()


@dataclass(frozen=True)
class Checkpoint:
    """The chain head at one moment: `sequence` records, the last of them hashed `hash`."""

    sequence: int
    hash: str
    time: str
    key_id: str
    signature: str

    def signed_content(self) -> bytes:
        return checkpoint_content(self.sequence, self.hash, self.time)

    def as_line(self) -> str:
        return canonical_json(
            {
                "sequence": self.sequence,
                "hash": self.hash,
                "time": self.time,
                "key_id": self.key_id,
                "signature": self.signature,
            }
        )


class AnchorError(Exception):
    """The checkpoints cannot be read or trusted; the message says which line and why."""


def checkpoint_content(sequence: int, head_hash: str, time: str) -> bytes:
    return canonical_json({"sequence": sequence, "hash": head_hash, "time": time}).encode()


# ---- The key ------------------------------------------------------------------------------


@cache
def signing_key() -> Ed25519PrivateKey:
    """The configured key; a standalone installation makes one, readable by its owner only."""
    path = Path(settings.AUDIT_SIGNING_KEY_FILE)
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pem)
        public_key_path(path).write_bytes(public_key_pem(key.public_key()))
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise AnchorError(f"{path} does not hold an Ed25519 private key.")
    return loaded


def public_key_path(private_key_file: Path) -> Path:
    return private_key_file.with_name(private_key_file.name + ".pub")


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key_pem(key)).hexdigest()[:16]


def verifying_key() -> Ed25519PublicKey:
    """The public half: from AUDIT_VERIFY_KEY_FILE when set (an auditor's copy), else the key's."""
    configured = getattr(settings, "AUDIT_VERIFY_KEY_FILE", "")
    if configured:
        loaded = serialization.load_pem_public_key(Path(configured).read_bytes())
        if not isinstance(loaded, Ed25519PublicKey):
            raise AnchorError(f"{configured} does not hold an Ed25519 public key.")
        return loaded
    return signing_key().public_key()


# ---- Writing ------------------------------------------------------------------------------


def checkpoint_sign(sequence: int, head_hash: str) -> Checkpoint:
    key = signing_key()
    moment = time_text(timezone.now())
    signature = key.sign(checkpoint_content(sequence, head_hash, moment))
    return Checkpoint(
        sequence=sequence,
        hash=head_hash,
        time=moment,
        key_id=key_id(key.public_key()),
        signature=base64.b64encode(signature).decode(),
    )


def checkpoint_write(sequence: int, head_hash: str) -> Checkpoint | None:
    """Sign the head and append it to the anchors; a failure is logged, never raised.

    Called after the append has committed: the record exists whatever happens here, and
    `audit_verify` reports a record no checkpoint covers.
    """
    try:
        checkpoint = checkpoint_sign(sequence, head_hash)
        line = (checkpoint.as_line() + "\n").encode()
        path = Path(settings.AUDIT_ANCHOR_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _write_lock:
            # O_APPEND: every write lands at the end, whoever else appends; nothing is rewritten.
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)
        _syslog_send(checkpoint)
    except Exception:
        logger.exception("The audit checkpoint for record %s could not be written.", sequence)
        return None
    return checkpoint


@cache
def _syslog() -> logging.Logger | None:
    target = getattr(settings, "AUDIT_ANCHOR_SYSLOG", "")
    if not target:
        return None
    if target.startswith("/"):
        handler = logging.handlers.SysLogHandler(address=target)
    else:
        host, _, port = target.rpartition(":")
        handler = logging.handlers.SysLogHandler(address=(host, int(port)))
    sink = logging.getLogger("assistant.audit.anchor.syslog")
    sink.propagate = False
    sink.addHandler(handler)
    sink.setLevel(logging.INFO)
    return sink


def _syslog_send(checkpoint: Checkpoint) -> None:
    sink = _syslog()
    if sink is not None:
        sink.info("audit-checkpoint %s", checkpoint.as_line())


# ---- Reading ------------------------------------------------------------------------------


def checkpoints_read(paths: Sequence[Path] | None = None) -> list[Checkpoint]:
    """Every checkpoint in the anchor files, each signature checked; raises AnchorError.

    Several files (one per process in cluster mode, or a syslog collector's log, whose lines
    carry a prefix before the checkpoint's JSON) are read as one set.
    """
    checkpoints = []
    for path in paths or [Path(settings.AUDIT_ANCHOR_FILE)]:
        if path.exists():
            checkpoints.extend(_checkpoints_in(path))
    return checkpoints


def _checkpoints_in(path: Path) -> list[Checkpoint]:
    public_key = verifying_key()
    expected_key = key_id(public_key)
    checkpoints = []
    for number, line in enumerate(_lines(path), start=1):
        try:
            fields = json.loads(line[line.index("{") :])
            checkpoint = Checkpoint(
                sequence=int(fields["sequence"]),
                hash=str(fields["hash"]),
                time=str(fields["time"]),
                key_id=str(fields["key_id"]),
                signature=str(fields["signature"]),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise AnchorError(f"{path} line {number} is not a checkpoint: {error}") from error
        if checkpoint.key_id != expected_key:
            raise AnchorError(f"{path} line {number} was signed with another key.")
        try:
            public_key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_content())
        except (InvalidSignature, ValueError) as error:
            raise AnchorError(
                f"{path} line {number} has a signature that does not verify: it was forged "
                "or edited."
            ) from error
        checkpoints.append(checkpoint)
    return checkpoints


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield line


def checkpoint_newest_line(path: Path | None = None) -> str:
    """The last checkpoint written, as its JSON line (unchecked: whoever reads it checks it)."""
    path = path or Path(settings.AUDIT_ANCHOR_FILE)
    if not path.exists():
        return ""
    with path.open("rb") as anchors:
        anchors.seek(0, os.SEEK_END)
        size = anchors.tell()
        anchors.seek(max(0, size - 4096))
        tail = anchors.read().decode("utf-8", "replace")
    lines = [line for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else ""
