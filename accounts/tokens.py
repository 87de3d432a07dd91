"""Personal API tokens: issue, verify, revoke. One verify function serves every API.

A token is `kat_<prefix>_<secret>`. The secret is 256 random bits, so the stored hash is
a plain SHA-256: slow, salted hashes exist to make guessing low-entropy passwords costly,
and nobody can guess 2**256 values whatever the hash costs. A fast hash keeps every API
request cheap. The prefix is random too; it finds the row without a scan and lets people
tell their tokens apart in lists without showing the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import ApiToken, TokenScope, TokenStatus
from audit.ledger import ledger_append
from audit.models import AuditEvent

TOKEN_MARK = "kat"
PREFIX_BYTES = 6
SECRET_BYTES = 32
# Writing the last-used time on every request would turn every read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
NAME_MAX_CHARS = 100


class TokenInputError(ValueError):
    """A token cannot be issued as asked; the message says why."""


class TokenRejected(Exception):
    """The presented token does not sign anyone in (HTTP 401); the message says why."""


class ScopeMissing(Exception):
    """The token is valid but not for this (HTTP 403); the message names the scope."""

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"This API token does not have the '{scope}' scope. Create a token with the "
            f"'{scope}' scope at /accounts/tokens/."
        )
        self.scope = scope


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    # The only time the secret exists outside the caller's hands.
    secret: str


def secret_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def scopes_parse(values: Iterable[str]) -> list[str]:
    """Scopes from names (repeated or comma-separated), in their canonical order."""
    wanted = {part.strip().lower() for value in values for part in value.split(",")}
    wanted.discard("")
    unknown = sorted(wanted - set(TokenScope.values))
    if unknown:
        raise TokenInputError(
            f"Unknown scope: {', '.join(unknown)}. Choose from {', '.join(TokenScope.values)}."
        )
    if not wanted:
        raise TokenInputError(f"Choose at least one scope: {', '.join(TokenScope.values)}.")
    return [scope for scope in TokenScope.values if scope in wanted]


def expiry_for(days: int | None) -> timedelta | None:
    """The lifetime of a new token: the default, a number of days, or 0 for never."""
    if days is None:
        days = settings.API_TOKEN_DEFAULT_DAYS
    if days < 0:
        raise TokenInputError("The number of days cannot be negative.")
    if days == 0:
        if not settings.API_TOKEN_ALLOW_NO_EXPIRY:
            raise TokenInputError(
                "Tokens that never expire are not allowed here; give a number of days."
            )
        return None
    if days > settings.API_TOKEN_MAX_DAYS:
        raise TokenInputError(f"A token may last at most {settings.API_TOKEN_MAX_DAYS} days.")
    return timedelta(days=days)


def token_create(
    *,
    user: User,
    name: str,
    scopes: Iterable[str],
    days: int | None = None,
    actor: User | None = None,
) -> IssuedToken:
    """Issue a token for `user`; the secret is in the result and nowhere else."""
    name = name.strip()
    if not name:
        raise TokenInputError("Give the token a name, so you can tell it apart later.")
    if len(name) > NAME_MAX_CHARS:
        raise TokenInputError(f"The name may be at most {NAME_MAX_CHARS} characters.")
    scope_list = scopes_parse(scopes)
    lifetime = expiry_for(days)
    now = timezone.now()
    prefix = secrets.token_hex(PREFIX_BYTES)
    secret = f"{TOKEN_MARK}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash(secret),
            scopes=scope_list,
            created_at=now,
            expires_at=now + lifetime if lifetime is not None else None,
        )
        ledger_append(
            event=AuditEvent.TOKEN_CREATED,
            actor=actor or user,
            details=token_details(token),
        )
    return IssuedToken(token=token, secret=secret)


def token_revoke(*, token: ApiToken, actor: User | None) -> bool:
    """Revoke at once; False when it was already revoked."""
    with transaction.atomic():
        revoked = ApiToken.objects.filter(id=token.id, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_by=actor
        )
        if not revoked:
            return False
        token.refresh_from_db()
        ledger_append(event=AuditEvent.TOKEN_REVOKED, actor=actor, details=token_details(token))
    return True


def token_details(token: ApiToken) -> dict[str, Any]:
    """What the ledger keeps about a token: never its secret or hash."""
    return {
        "token_id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "user_id": token.user_id,
        "username": token.user.get_username(),
        "scopes": list(token.scopes),
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


def tokens_of(user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def token_prefix_of(raw: str) -> str | None:
    mark, _, rest = raw.partition("_")
    prefix, _, secret = rest.partition("_")
    if mark != TOKEN_MARK or not prefix or not secret:
        return None
    return prefix


def token_verify(raw: str, *, ip: str | None = None) -> ApiToken:
    """The active token for `raw` (with its user loaded), or TokenRejected saying why.

    Records the last use at most once a minute per token.
    """
    prefix = token_prefix_of(raw.strip())
    token = (
        ApiToken.objects.select_related("user", "user__directory_account")
        .filter(prefix=prefix)
        .first()
        if prefix is not None
        else None
    )
    # compare_digest: the comparison takes as long whether the first or last character differs.
    if token is None or not hmac.compare_digest(token.secret_hash, secret_hash(raw.strip())):
        raise TokenRejected("Invalid API token.")
    now = timezone.now()
    status = token.status_at(now)
    if status == TokenStatus.REVOKED:
        raise TokenRejected("This API token has been revoked.")
    if status == TokenStatus.EXPIRED:
        raise TokenRejected("This API token has expired; create a new one at /accounts/tokens/.")
    if not token.user.is_active:
        raise TokenRejected("The account of this API token is disabled.")
    _directory_groups_refresh(token.user, now=now)
    _note_use(token, now=now, ip=ip)
    return token


def _directory_groups_refresh(user: User, *, now: datetime) -> None:
    """Read an LDAP person's groups again when LDAP_REFRESH_SECONDS have gone by.

    A token has no session for the directory middleware to refresh; without this, someone
    removed from a group in the directory would keep its documents for as long as their token
    lives. OpenID Connect offers no way to ask about a person outside a sign-in, so tokens of
    OIDC people carry the groups of their last sign-in (the README says so).
    """
    account = getattr(user, "directory_account", None)
    if account is None or account.method != "ldap" or not settings.LDAP_SERVER_URI:
        return
    if now - account.synced_at < timedelta(seconds=settings.LDAP_REFRESH_SECONDS):
        return
    from accounts.ldap import ldap_user_refresh

    if not ldap_user_refresh(user):
        raise TokenRejected(
            "The directory could not confirm the account of this API token; try again later."
        )


async def atoken_verify(raw: str, *, ip: str | None = None) -> ApiToken:
    """`token_verify` for async views (the ORM runs in Django's thread for sync code)."""
    return await sync_to_async(token_verify)(raw, ip=ip)


def _note_use(token: ApiToken, *, now: datetime, ip: str | None) -> None:
    stale = now - LAST_USED_RESOLUTION
    if token.last_used_at is not None and token.last_used_at > stale:
        return
    # The condition in the UPDATE keeps concurrent requests from all writing.
    ApiToken.objects.filter(id=token.id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)
    ).update(last_used_at=now, last_used_ip=ip)
    token.last_used_at = now
    token.last_used_ip = ip


def bearer_key(authorization: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` (or, for older clients, `Token <key>`)."""
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token"):
        return None
    return key.strip() or None


def scope_require(token: ApiToken | None, scope: str) -> None:
    """ScopeMissing unless the token has the scope; a session sign-in (no token) passes."""
    if token is not None and not token.has_scope(scope):
        raise ScopeMissing(scope)
