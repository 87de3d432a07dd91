"""Sources that stay in sync: what each one reads, its runs, and the items it brought in."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q

from ingestion.models import Document


class SourceKind(models.TextChoices):
    FOLDER = "folder", "Folder or file share"
    WEB = "web", "Intranet website"
    IMAP = "imap", "Mailbox (IMAP)"
    LLAMA_INDEX = "llama_index", "llama-index reader"


class Source(models.Model):
    """A place documents come from, read again on a schedule or on demand.

    `options` never hold a secret in clear: a secret is named by a file (`*_file`) or an
    environment variable (`*_env`) and read at run time (sources/options.py).
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=SourceKind.choices)
    # The folder's path, or the site's start URLs (one a line), or the mailbox's URL.
    location = models.TextField(blank=True)
    options = models.JSONField(default=dict, blank=True)
    # Who may read what the source brings; a kind may add groups per item (a mapping).
    groups = models.ManyToManyField(Group, blank=True, related_name="sources")
    is_public = models.BooleanField(default=False)
    # Five cron fields (minute hour day month weekday); empty: only when asked.
    schedule = models.CharField(max_length=100, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True, db_index=True)
    paused = models.BooleanField(default=False)
    # What a kind keeps between runs besides its items (a sitemap's ETag and URLs).
    state = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    OK = "ok", "Done"
    FAILED = "failed", "Failed"


ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class SourceRun(models.Model):
    """One pass over a source; its counts are saved with each change, so a resumed run
    (after a killed worker) goes on counting where it stopped."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="runs")
    status = models.CharField(
        max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Deletions beyond the source's allowed share go ahead only when confirmed.
    confirm_deletions = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    new = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    deleted = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Why the run failed as a whole (unreachable, too many deletions).
    error = models.TextField(blank=True)
    # Why single items failed: [{"item": ..., "reason": ...}], the first few hundred.
    failures = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One run at a time per source.
            models.UniqueConstraint(
                fields=["source"],
                condition=Q(status__in=["queued", "running"]),
                name="one_active_run_per_source",
            )
        ]

    def __str__(self) -> str:
        return f"{self.source.name} run {self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status in (RunStatus.OK, RunStatus.FAILED)

    def counts(self) -> dict[str, int]:
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
        }


class SourceItem(models.Model):
    """One thing a source holds (a file, a page, a message), and the document it became."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="items")
    # Its identity in the source: a relative path, a URL, a message's UID, a reader's doc id.
    key = models.CharField(max_length=2000)
    document = models.ForeignKey(
        Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="source_items"
    )
    content_sha256 = models.CharField(max_length=64, blank=True)
    # What tells, without reading the content, that nothing changed: size and mtime of a
    # file, ETag and Last-Modified of a page.
    signature = models.CharField(max_length=500, blank=True)
    # The readers the item was given, to notice when a mapping changes them.
    readers = models.CharField(max_length=500, blank=True)
    # What a kind keeps per item (a page's links, so an unchanged page is not downloaded).
    extra = models.JSONField(default=dict, blank=True)
    last_run = models.ForeignKey(
        SourceRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "key"], name="unique_source_item_key")
        ]

    def __str__(self) -> str:
        return f"{self.source.name}: {self.key}"
