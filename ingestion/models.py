"""Documents, their versions and passages, and who may read them."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models

PUBLIC_TAG = "public"
GROUP_TAG_PREFIX = "group:"


def group_tag(group_id: int) -> str:
    return f"{GROUP_TAG_PREFIX}{group_id}"


class Document(models.Model):
    """One logical document; its readable content is the current version."""

    title = models.CharField(max_length=500)
    source_path = models.CharField(max_length=1024, db_index=True)
    groups = models.ManyToManyField(Group, blank=True, related_name="documents")
    is_public = models.BooleanField(
        default=False, help_text="Everyone may read it, whatever their groups."
    )
    current_version = models.ForeignKey(
        "DocumentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Deleted documents leave search at once; their rows stay for the record.
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Kept in full, whatever the retention: no purge may remove it or its versions.
    legal_hold = models.BooleanField(default=False)
    # Who answers for the content, and when it should be read again; answers citing a
    # document past its date say so next to the citation (ingestion/review.py).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_documents",
    )
    review_by = models.DateField(null=True, blank=True, db_index=True)
    # A file attached to a mail message is a document of its own with the message's readers.
    attached_to = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="attachments"
    )

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title

    def latest_version(self) -> DocumentVersion | None:
        return self.versions.order_by("-number").first()


class VersionStatus(models.TextChoices):
    QUEUED = "QUEUED", "Queued"
    PARSING = "PARSING", "Parsing"
    EMBEDDING = "EMBEDDING", "Embedding"
    READY = "READY", "Ready"
    FAILED = "FAILED", "Failed"
    CANCELLED = "CANCELLED", "Cancelled"


# Where an ingestion ends: only a retry moves a version out of one of these.
FINAL_STATUSES = frozenset({VersionStatus.READY, VersionStatus.FAILED, VersionStatus.CANCELLED})
# Waiting for or inside ingestion, queue first: what may still be cancelled.
UNFINISHED_STATUSES = tuple(status for status in VersionStatus if status not in FINAL_STATUSES)
# An ingestion that ended without READY may start over; a READY version has nothing to redo.
RETRYABLE_STATUSES = frozenset({VersionStatus.FAILED, VersionStatus.CANCELLED})


class DocumentVersion(models.Model):
    """The bytes of one upload and the state of their ingestion."""

    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    file = models.FileField(upload_to="documents/", max_length=500)
    original_name = models.CharField(max_length=255)
    size_bytes = models.BigIntegerField()
    detected_type = models.CharField(max_length=20, blank=True)
    # What every passage of this version carries into lexical search besides its own text:
    # lines repeated on every page (running headers) and the document's opening words.
    search_context = models.TextField(blank=True)
    # What the file says of itself besides its text, [label, value] pairs in the order shown:
    # a message's sender, recipients and date.
    metadata = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=12, choices=VersionStatus.choices, default=VersionStatus.QUEUED, db_index=True
    )
    status_message = models.TextField(blank=True)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["document", "number"], name="unique_version_number")
        ]

    def __str__(self) -> str:
        return f"{self.document.title} v{self.number}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES

    @property
    def progress_percent(self) -> int:
        if self.status == VersionStatus.READY:
            return 100
        if not self.chunks_total:
            return 0
        return int(100 * self.chunks_done / self.chunks_total)


class Chunk(models.Model):
    """A passage of a version, as indexed and as shown when cited."""

    version = models.ForeignKey(DocumentVersion, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    point_id = models.UUIDField(default=uuid.uuid4, db_index=True)
    text = models.TextField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading = models.CharField(max_length=1000, blank=True)
    token_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["version", "index"]
        constraints = [
            models.UniqueConstraint(fields=["version", "index"], name="unique_chunk_index")
        ]

    def __str__(self) -> str:
        return f"{self.version} #{self.index}"
