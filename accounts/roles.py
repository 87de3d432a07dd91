"""Who holds which role: employee, document admin, auditor, superuser (docs/PERMISSIONS.md).

- employee: any active user; reads what ingestion/access.py allows, asks, keeps conversations.
- document admin of group G: member of the group named G + DOCUMENT_ADMIN_GROUP_SUFFIX
  ("finance-admins" administers "finance"). Manages the documents whose readers are only groups
  they administer, and shares new documents only with those groups.
- auditor: member of AUDITORS_GROUP; reads, flags and exports the whole audit log.
- superuser: everything, including documents everyone may read or no group may read.

Roles are Django groups, so local accounts, LDAP and OIDC grant them alike. Reading passages is
never widened by a role, and which documents a role manages is ingestion/access.py's to say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import QuerySet

Someone = AbstractBaseUser | AnonymousUser


def is_active_user(user: Someone) -> TypeGuard[AbstractBaseUser]:
    return bool(user.is_authenticated and user.is_active)


def is_superuser(user: Someone) -> bool:
    return is_active_user(user) and bool(getattr(user, "is_superuser", False))


def admin_group_name(group_name: str) -> str:
    """The name of the group whose members administer `group_name`'s documents."""
    return f"{group_name}{settings.DOCUMENT_ADMIN_GROUP_SUFFIX}"


def is_auditor(user: Someone) -> bool:
    if not is_active_user(user):
        return False
    if is_superuser(user):
        return True
    return Group.objects.filter(user=user.pk, name=settings.AUDITORS_GROUP).exists()


def administered_groups(user: Someone) -> QuerySet[Group]:
    """The groups whose documents the user administers: every group for a superuser."""
    if not is_active_user(user):
        return Group.objects.none()
    if is_superuser(user):
        return Group.objects.all()
    suffix = settings.DOCUMENT_ADMIN_GROUP_SUFFIX
    admin_names = Group.objects.filter(user=user.pk, name__endswith=suffix).values_list(
        "name", flat=True
    )
    return Group.objects.filter(name__in=[name[: -len(suffix)] for name in admin_names])


def is_document_admin(user: Someone) -> bool:
    """May open the document pages: administers at least one group, or is a superuser."""
    return is_superuser(user) or administered_groups(user).exists()


def can_share_with(user: Someone, groups: Iterable[Group], everyone: bool) -> bool:
    """May the user give these readers to a document: only groups they administer, at least one."""
    if not is_active_user(user):
        return False
    if is_superuser(user):
        return True
    wanted = {group.pk for group in groups}
    if everyone or not wanted:
        return False
    administered = set(administered_groups(user).filter(pk__in=wanted).values_list("pk", flat=True))
    return wanted <= administered


def sharing_refusal(user: Someone, groups: Iterable[Group], everyone: bool) -> str:
    """Why `can_share_with` says no, in words for the person; empty when it says yes."""
    groups = list(groups)
    if can_share_with(user, groups, everyone):
        return ""
    allowed = ", ".join(administered_groups(user).order_by("name").values_list("name", flat=True))
    allowed_text = f"the groups you administer ({allowed})" if allowed else "groups you administer"
    if everyone:
        return f"Only a superuser may share a document with everyone; choose {allowed_text}."
    if not groups:
        return f"Choose who may read: {allowed_text}."
    return f"You may share documents only with {allowed_text}."
