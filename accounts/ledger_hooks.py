"""The ledger's record of changes to people and groups, whoever makes them (admin, shell, sync)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import transaction
from django.db.models import signals

from audit.ledger import ledger_append
from audit.models import AuditEvent
from config.request_context import current_actor


def _append_hooked(event: AuditEvent, details: dict[str, Any]) -> None:
    with transaction.atomic():
        ledger_append(event=event, actor=current_actor(), details=details)


def _user_saved(
    sender: type[AbstractBaseUser],
    instance: AbstractBaseUser,
    created: bool,
    raw: bool,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    # Logging in saves last_login; that is not a change anyone needs to audit.
    if raw or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    username = instance.get_username()
    _append_hooked(
        AuditEvent.USER_CHANGED,
        {
            "user_id": instance.pk,
            "username": username,
            "created": created,
            "is_active": instance.is_active,
            "is_staff": getattr(instance, "is_staff", False),
            "is_superuser": getattr(instance, "is_superuser", False),
            "fields": sorted(update_fields) if update_fields is not None else None,
            "summary": f"User {username} {'created' if created else 'changed'}",
        },
    )


def _user_deleted(
    sender: type[AbstractBaseUser], instance: AbstractBaseUser, **kwargs: Any
) -> None:
    username = instance.get_username()
    _append_hooked(
        AuditEvent.USER_CHANGED,
        {
            "user_id": instance.pk,
            "username": username,
            "deleted": True,
            "summary": f"User {username} deleted",
        },
    )


def _group_saved(
    sender: type[Group], instance: Group, created: bool, raw: bool, **kwargs: Any
) -> None:
    if raw:
        return
    _append_hooked(
        AuditEvent.GROUP_CHANGED,
        {
            "group_id": instance.pk,
            "name": instance.name,
            "created": created,
            "summary": f"Group {instance.name} {'created' if created else 'changed'}",
        },
    )


def _group_deleted(sender: type[Group], instance: Group, **kwargs: Any) -> None:
    _append_hooked(
        AuditEvent.GROUP_CHANGED,
        {
            "group_id": instance.pk,
            "name": instance.name,
            "deleted": True,
            "summary": f"Group {instance.name} deleted",
        },
    )


def _membership_changed(
    sender: type[Any],
    instance: AbstractBaseUser | Group,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    if action == "pre_clear":
        # After the clear nobody can tell who was in; record it before.
        related = instance.user_set if reverse else instance.groups  # type: ignore[union-attr]
        pk_set = set(related.values_list("pk", flat=True))
        change = "removed"
    elif action in ("post_add", "post_remove"):
        change = "added" if action == "post_add" else "removed"
    else:
        return
    if not pk_set:
        return
    ids = sorted(pk_set)
    if reverse:
        assert isinstance(instance, Group)
        usernames = sorted(
            get_user_model().objects.filter(pk__in=ids).values_list("username", flat=True)
        )
        _append_hooked(
            AuditEvent.GROUP_CHANGED,
            {
                "group_id": instance.pk,
                "name": instance.name,
                f"members_{change}": usernames,
                "user_ids": ids,
                "summary": f"Group {instance.name}: {', '.join(usernames)} {change}",
            },
        )
        return
    names = sorted(Group.objects.filter(pk__in=ids).values_list("name", flat=True))
    username = instance.get_username()  # type: ignore[union-attr]
    _append_hooked(
        AuditEvent.USER_CHANGED,
        {
            "user_id": instance.pk,
            "username": username,
            f"groups_{change}": names,
            "group_ids": ids,
            "summary": f"User {username} {change} {'to' if change == 'added' else 'from'} "
            f"groups {', '.join(names)}",
        },
    )


def connect_signals() -> None:
    user_model = get_user_model()
    signals.post_save.connect(_user_saved, sender=user_model, dispatch_uid="audit-user-saved")
    signals.post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="audit-user-deleted")
    signals.post_save.connect(_group_saved, sender=Group, dispatch_uid="audit-group-saved")
    signals.post_delete.connect(_group_deleted, sender=Group, dispatch_uid="audit-group-deleted")
    signals.m2m_changed.connect(
        _membership_changed, sender=user_model.groups.through, dispatch_uid="audit-membership"
    )
