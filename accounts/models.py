"""Personal API tokens: what a script or chat client signs in with instead of a password."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone


class TokenScope(models.TextChoices):
    """What a token may be used for; a token never grants more than its user has."""

    READ = "read", "Read (search, conversations, documents)"
    ASK = "ask", "Ask (questions, chat completions)"
    INGEST = "ingest", "Ingest (upload and change documents)"


class TokenStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class ApiToken(models.Model):
    """A personal token. Only the SHA-256 of its secret is kept; the secret is shown once.

    The token reads `kat_<prefix>_<secret>`: the prefix finds the row (and names the token
    in lists and logs without revealing it), the hash of the whole string proves it.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def status_at(self, moment: datetime) -> TokenStatus:
        if self.revoked_at is not None:
            return TokenStatus.REVOKED
        if self.expires_at is not None and self.expires_at <= moment:
            return TokenStatus.EXPIRED
        return TokenStatus.ACTIVE

    @property
    def status(self) -> TokenStatus:
        return self.status_at(timezone.now())

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def scopes_text(self) -> str:
        return ", ".join(scope for scope in TokenScope.values if scope in self.scopes)


class DirectoryAccount(models.Model):
    """A person whose groups come from a directory, and when they were last read from it.

    API tokens carry no session to refresh, so token requests use `synced_at` to know when a
    directory person's groups are due to be read again.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="directory_account"
    )
    method = models.CharField(max_length=10)
    synced_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.user} ({self.method})"
