"""Conversations and answers as the employee sees them."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ConversationOrigin(models.TextChoices):
    PORTAL = "portal", "Portal"
    API = "api", "REST API"
    OPENAI = "openai", "OpenAI-compatible API (/v1)"


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Removing a conversation hides it from its owner; the audit log keeps every answer.
    hidden_at = models.DateTimeField(null=True, blank=True)
    # Where it was started: the portal lists those of scripts and chat clients apart.
    origin = models.CharField(
        max_length=10, choices=ConversationOrigin.choices, default=ConversationOrigin.PORTAL
    )

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
    # Streaming now: saved before the first byte leaves, checkpointed while it streams.
    IN_PROGRESS = "in_progress", "In progress"
    # The process streaming it died; closed with its last checkpoint by the next to look.
    INTERRUPTED = "interrupted", "Interrupted"


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
    # The last checkpoint of an answer in progress: a stale one means its process died.
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(
                fields=["progress_at"],
                name="answer_in_progress_idx",
                condition=models.Q(status="in_progress"),
            )
        ]

    def __str__(self) -> str:
        return self.question[:80]


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


# ---- Insight for admins (assistant/insight/) ---------------------------------------------------


class AnswerSupport(models.Model):
    """How well an answer's sentences are supported by the passages it cites.

    Measured after the answer is recorded (never while it streams), or when first looked at;
    `assistant/insight/support.py` says how. The answer itself and its ledger record are
    untouched: this is a reading of them, and `method` names the version of the measure.
    """

    answer = models.OneToOneField(
        Answer, primary_key=True, on_delete=models.CASCADE, related_name="support"
    )
    # [{"text", "cited", "passage", "overlap", "cosine", "supported", "reason"}] per sentence.
    sentences = models.JSONField(default=list)
    sentence_count = models.PositiveIntegerField(default=0)
    supported_count = models.PositiveIntegerField(default=0)
    method = models.CharField(max_length=40)
    computed_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.supported_count} of {self.sentence_count} sentences of {self.answer_id}"

    @property
    def share(self) -> float | None:
        return self.supported_count / self.sentence_count if self.sentence_count else None


class GapResolution(models.Model):
    """A curator's word that a knowledge gap is handled, usually by adding a document.

    It names the answers whose questions made the gap; they leave the open gaps. A later
    question like them that the documents still cannot answer opens a new gap.
    """

    answers = models.ManyToManyField(Answer, related_name="gap_resolutions")
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    resolved_at = models.DateTimeField(auto_now_add=True)
    note = models.TextField(blank=True)
    document = models.ForeignKey(
        "ingestion.Document",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="gap_resolutions",
        help_text="The document added to answer these questions, if one was.",
    )

    class Meta:
        ordering = ["-resolved_at", "-id"]

    def __str__(self) -> str:
        return f"gap resolved {self.resolved_at:%Y-%m-%d}"
