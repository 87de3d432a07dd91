"""What a directory (LDAP / Active Directory or an OpenID Connect provider) says about a person.

At every sign-on, and at every refresh of a signed-in session, the person's Django groups become
exactly the groups the directory names, so the document ACL follows the directory. Groups are
changed through the ordinary many-to-many API, so the audit ledger records every change through
its signal hooks (assistant/audit.py), as it does for changes made in the admin. Sign-ins and
sign-outs are recorded here, with the method used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import DirectoryAccount
from audit.ledger import ledger_append
from audit.models import AuditEvent

logger = logging.getLogger(__name__)

SIGNED_IN_EVENT = AuditEvent.USER_SIGNED_IN
SIGNED_OUT_EVENT = AuditEvent.USER_SIGNED_OUT
GROUP_NAME_MAX_LENGTH = Group._meta.get_field("name").max_length or 150
# The user fields a directory may fill in.
PROFILE_FIELDS = ("first_name", "last_name", "email")

# The backend a session was opened with names the sign-on method in the audit records.
SIGN_ON_METHODS = {
    "accounts.ldap.DirectoryLDAPBackend": "ldap",
    "accounts.oidc.DirectoryOIDCBackend": "oidc",
}


def group_names_clean(names: Iterable[object]) -> set[str]:
    """The usable group names of what a directory returned; anything else is logged and left out."""
    clean = set()
    for name in names:
        text = name.strip() if isinstance(name, str) else ""
        if not text or len(text) > GROUP_NAME_MAX_LENGTH:
            logger.warning("Ignoring directory group name %r", name)
            continue
        clean.add(text)
    return clean


def directory_user_sync(
    *,
    user: AbstractBaseUser,
    group_names: Iterable[object],
    profile: Mapping[str, str],
    method: str,
) -> AbstractBaseUser:
    """Make the user's groups, profile and superuser flag what the directory says.

    The user leaves the groups the directory does not name and joins those it does, which are
    created when they do not exist yet. Only changed fields are saved, so the ledger records
    changes and not every sign-in.
    """
    wanted = group_names_clean(group_names)
    with transaction.atomic():
        _groups_sync(user, wanted)
        _profile_sync(user, profile, superuser=_superuser_from(wanted))
        DirectoryAccount.objects.update_or_create(
            user_id=user.pk, defaults={"method": method, "synced_at": timezone.now()}
        )
    return user


def _groups_sync(user: AbstractBaseUser, wanted: set[str]) -> None:
    groups = user.groups  # type: ignore[attr-defined]
    current = {group.name: group for group in groups.all()}
    leaving = [group for name, group in current.items() if name not in wanted]
    if leaving:
        groups.remove(*leaving)
    joining = [Group.objects.get_or_create(name=name)[0] for name in sorted(wanted - set(current))]
    if joining:
        groups.add(*joining)


def _superuser_from(group_names: set[str]) -> bool | None:
    """Superuser or not by directory group; None when no group is configured to grant it."""
    superusers_group: str = settings.SUPERUSERS_GROUP
    if not superusers_group:
        return None
    return superusers_group in group_names


def _profile_sync(
    user: AbstractBaseUser, profile: Mapping[str, str], superuser: bool | None
) -> None:
    changes: dict[str, Any] = {}
    for field in PROFILE_FIELDS:
        value = profile.get(field)
        if not isinstance(value, str) or not value:
            continue
        max_length = getattr(user._meta.get_field(field), "max_length", None) or len(value)
        value = value[:max_length]
        if getattr(user, field) != value:
            changes[field] = value
    if superuser is not None:
        # The admin site needs is_staff; it grants nothing else in this project.
        for flag in ("is_superuser", "is_staff"):
            if getattr(user, flag) != superuser:
                changes[flag] = superuser
    if not changes:
        return
    for field, value in changes.items():
        setattr(user, field, value)
    user.save(update_fields=sorted(changes))


def directory_user_create(*, username: str) -> AbstractBaseUser:
    """A new account for someone the directory vouches for; it has no password of its own."""
    user_model = get_user_model()
    user = user_model(**{user_model.USERNAME_FIELD: username})
    user.set_unusable_password()
    user.save()
    return user


# The audit records of signing in and out


def sign_on_method(backend_path: str) -> str:
    return SIGN_ON_METHODS.get(backend_path, "local")


def _sign_in_recorded(
    sender: type[Any], request: HttpRequest | None, user: AbstractBaseUser, **kwargs: Any
) -> None:
    method = sign_on_method(getattr(user, "backend", "") or "")
    groups = sorted(user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
    username = user.get_username()
    with transaction.atomic():
        ledger_append(
            event=SIGNED_IN_EVENT,
            actor=user,
            details={
                "user_id": user.pk,
                "username": username,
                "method": method,
                "groups": groups,
                "summary": f"User {username} signed in ({method})",
            },
        )


def _sign_out_recorded(
    sender: type[Any],
    request: HttpRequest | None,
    user: AbstractBaseUser | AnonymousUser | None,
    **kwargs: Any,
) -> None:
    if user is None or not user.is_authenticated:
        return
    username = user.get_username()
    with transaction.atomic():
        ledger_append(
            event=SIGNED_OUT_EVENT,
            actor=user,
            details={
                "user_id": user.pk,
                "username": username,
                "summary": f"User {username} signed out",
            },
        )


def connect_signals() -> None:
    user_logged_in.connect(_sign_in_recorded, dispatch_uid="audit-signed-in")
    user_logged_out.connect(_sign_out_recorded, dispatch_uid="audit-signed-out")
