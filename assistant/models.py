"""Conversations and answers as the employee sees them."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Removing a conversation hides it from its owner; the audit log keeps every answer.
    hidden_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title


class AnswerStatus(models.TextChoices):
    ANSWERED = "answered", "Answered"
    ABSTAINED = "abstained", "Abstained"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    CUT_OFF = "cut_off", "Cut off"


class AnswerMode(models.TextChoices):
    LLM = "llm", "Language model"
    EXTRACTIVE = "extractive", "Extracted without a language model"


class Answer(models.Model):
    """One question and what the assistant said, with the evidence it was given."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="answers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    question = models.TextField()
    searched_query = models.TextField()
    answer = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=AnswerStatus.choices)
    mode = models.CharField(max_length=12, choices=AnswerMode.choices)
    # [{"n", "point_id", "document_id", "version_id", "source", "title", "page", "heading",
    #   "text", "score"}] for the cited passages, in citation order.
    citations = models.JSONField(default=list)
    passages = models.JSONField(default=list)
    dropped_citations = models.JSONField(default=list)
    model_name = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.question[:80]


class AuditEvent(models.TextChoices):
    """What a ledger record is about; the values are stable, exports and filters rely on them."""

    ANSWER = "answer", "Answer"
    DOCUMENT_UPLOADED = "document.uploaded", "Document uploaded"
    DOCUMENT_VERSION_ADDED = "document.version_added", "New document version"
    DOCUMENT_DELETED = "document.deleted", "Document deleted"
    DOCUMENT_ACCESS_CHANGED = "document.access_changed", "Document readers changed"
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
    answer = models.ForeignKey(
        Answer,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="audit_records",
    )
    status = models.CharField(max_length=12, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    # The question and the answer, for text search (a GIN index on PostgreSQL, see 0003).
    search_text = models.TextField(blank=True)

    class Meta:
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
        indexes = [models.Index(fields=["kind", "target_id"], name="audit_reference_target_idx")]

    def __str__(self) -> str:
        return f"#{self.record_id} {self.kind} {self.target_id}"


class AuditFlag(models.Model):
    """An auditor's flag: an `audit.flagged` record that points at an earlier record."""

    record = models.OneToOneField(
        AuditRecord, primary_key=True, on_delete=models.PROTECT, related_name="flag"
    )
    target = models.ForeignKey(AuditRecord, on_delete=models.PROTECT, related_name="flags")

    def __str__(self) -> str:
        return f"#{self.record_id} flags #{self.target_id}"


class FeedbackRating(models.IntegerChoices):
    UP = 1, "Helpful"
    DOWN = -1, "Not helpful"


class Feedback(models.Model):
    """An employee's verdict on one answer; giving it again replaces the earlier one."""

    answer = models.ForeignKey(Answer, on_delete=models.CASCADE, related_name="feedback")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feedback"
    )
    rating = models.SmallIntegerField(choices=FeedbackRating.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["answer", "user"], name="unique_feedback_per_user"),
            models.CheckConstraint(
                condition=models.Q(rating__in=[1, -1]), name="feedback_rating_up_or_down"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on answer {self.answer_id}"
