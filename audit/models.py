"""The audit ledger's tables: records, their chain head, what they name, and flags.

The tables keep the names they had when the ledger lived in the assistant app, so the stored
records and the PostgreSQL trigger that refuses edits (assistant migration 0003) hold.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.TextChoices):
    """What a ledger record is about; the values are stable, exports and filters rely on them."""

    ANSWER = "answer", "Answer"
    ANSWER_STARTED = "answer.started", "Answer started"
    DOCUMENT_UPLOADED = "document.uploaded", "Document uploaded"
    DOCUMENT_VERSION_ADDED = "document.version_added", "New document version"
    DOCUMENT_DELETED = "document.deleted", "Document deleted"
    DOCUMENT_ACCESS_CHANGED = "document.access_changed", "Document readers changed"
    DOCUMENT_REVIEW_CHANGED = "document.review_changed", "Document owner or review date changed"
    DOCUMENT_PURGED = "document.purged", "Document purged"
    USER_CHANGED = "user.changed", "User changed"
    GROUP_CHANGED = "group.changed", "Group changed"
    SETTINGS_CHANGED = "settings.changed", "Answer settings changed"
    AUDIT_VIEWED = "audit.viewed", "Audit records viewed"
    AUDIT_EXPORTED = "audit.exported", "Audit records exported"
    AUDIT_FLAGGED = "audit.flagged", "Audit record flagged"
    TOKEN_CREATED = "token.created", "API token created"
    TOKEN_REVOKED = "token.revoked", "API token revoked"
    USER_SIGNED_IN = "user.signed_in", "Signed in"
    USER_SIGNED_OUT = "user.signed_out", "Signed out"
    USER_LOCKED_OUT = "user.locked_out", "Locked out after failed log-ins"
    SOURCE_ADDED = "source.added", "Source added"
    SOURCE_CHANGED = "source.changed", "Source changed"
    SOURCE_REMOVED = "source.removed", "Source removed"
    SOURCE_RUN = "source.run", "Source synced"


class AuditRecord(models.Model):
    """One entry of the append-only, hash-chained audit ledger.

    `hash` is the SHA-256 of the canonical JSON of (sequence, time, event, actor, details,
    prev_hash); `details` holds the details as that canonical JSON text, so the hashed bytes
    are stored as they were. The columns after `hash` are copies of what the details say,
    kept for the review filters; `audit_verify` checks them against the details.
    """

    sequence = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    event = models.CharField(max_length=40, choices=AuditEvent.choices)
    # No database constraint: users and answers may go, the ledger keeps who and what.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    details = models.TextField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # The answer's id, not a relation: the ledger sits below the answers it records.
    answer_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=12, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    # The question and the answer, for text search (a GIN index on PostgreSQL, see 0003).
    search_text = models.TextField(blank=True)

    class Meta:
        db_table = "assistant_auditrecord"
        ordering = ["-sequence"]
        indexes = [
            models.Index(fields=["actor", "sequence"], name="audit_actor_seq_idx"),
            models.Index(fields=["actor_username", "sequence"], name="audit_username_seq_idx"),
            models.Index(fields=["event", "sequence"], name="audit_event_seq_idx"),
            models.Index(fields=["status", "sequence"], name="audit_status_seq_idx"),
            models.Index(fields=["model_name", "sequence"], name="audit_model_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.event}"


class AuditHead(models.Model):
    """The one row naming the newest record: appends lock it, verification compares with it."""

    HEAD_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=HEAD_ID)
    sequence = models.BigIntegerField()
    hash = models.CharField(max_length=64)

    class Meta:
        db_table = "assistant_audithead"

    def __str__(self) -> str:
        return f"head at #{self.sequence}"


class AuditReferenceKind(models.TextChoices):
    DOCUMENT_CITED = "document.cited", "Document cited in the answer"
    DOCUMENT_SUBJECT = "document.subject", "Document acted on"
    GROUP_ACL = "group.acl", "Group in the reader's access filter"
    GROUP_SUBJECT = "group.subject", "Group acted on"
    USER_SUBJECT = "user.subject", "User acted on"


class AuditReference(models.Model):
    """A document, group or user that a record names, so the filters find it by index."""

    record = models.ForeignKey(AuditRecord, on_delete=models.PROTECT, related_name="references")
    kind = models.CharField(max_length=20, choices=AuditReferenceKind.choices)
    target_id = models.BigIntegerField()

    class Meta:
        db_table = "assistant_auditreference"
        indexes = [models.Index(fields=["kind", "target_id"], name="audit_reference_target_idx")]

    def __str__(self) -> str:
        return f"#{self.record_id} {self.kind} {self.target_id}"


class AuditFlag(models.Model):
    """An auditor's flag: an `audit.flagged` record that points at an earlier record."""

    record = models.OneToOneField(
        AuditRecord, primary_key=True, on_delete=models.PROTECT, related_name="flag"
    )
    target = models.ForeignKey(AuditRecord, on_delete=models.PROTECT, related_name="flags")

    class Meta:
        db_table = "assistant_auditflag"

    def __str__(self) -> str:
        return f"#{self.record_id} flags #{self.target_id}"
