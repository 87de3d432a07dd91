"""Create or update a local user, their groups and their roles (docs/PERMISSIONS.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from accounts.roles import admin_group_name, administered_groups, is_auditor

STAFF_GONE = (
    "--staff no longer exists: use --admin-of GROUP to let someone manage the documents of a "
    "group, --auditor for the audit log, or --superuser for everything."
)


def no_password_hint(name: str) -> str:
    """What to do next for an account that cannot log in with a password yet."""
    return (
        f"{name} has no password yet, so they cannot log in with the form. Next: set one with "
        f"`manage.py changepassword {name}` (or run this command again with --password-stdin), "
        "or let them sign in through LDAP or single sign-on if it is configured."
    )


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


class Command(BaseCommand):
    help = "Create or update a local user, their groups (created as needed) and their roles."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--groups", default="", help="comma-separated groups they belong to")
        parser.add_argument(
            "--admin-of",
            default="",
            metavar="GROUP[,GROUP]",
            help="manage the documents of these groups (adds them to GROUP"
            f"{settings.DOCUMENT_ADMIN_GROUP_SUFFIX})",
        )
        parser.add_argument(
            "--auditor",
            action="store_true",
            help=f"read the whole audit log (adds them to {settings.AUDITORS_GROUP})",
        )
        parser.add_argument("--superuser", action="store_true", help="may do everything")
        # Kept only to say what replaced it, rather than argparse's bare "unrecognized".
        parser.add_argument("--staff", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["staff"]:
            raise CommandError(STAFF_GONE)
        name: str = options["name"].strip()
        if not name:
            raise CommandError("The user name must not be empty.")
        password = None
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\n")
            if not password:
                raise CommandError("No password was given on standard input.")
        administered = _names(options["admin_of"])
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(username=name)
            if options["superuser"]:
                # The Django admin only asks for is_superuser; is_staff is kept in step with it.
                user.is_superuser = user.is_staff = True
            if password:
                user.set_password(password)
            elif created:
                user.set_unusable_password()
            user.save()
            if options["groups"] != "" or created:
                user.groups.set(
                    [Group.objects.get_or_create(name=g)[0] for g in _names(options["groups"])]
                )
            for group_name in administered:
                # The administered group must exist so that documents can be shared with it.
                Group.objects.get_or_create(name=group_name)
            role_names = [admin_group_name(group_name) for group_name in administered]
            if options["auditor"]:
                role_names.append(settings.AUDITORS_GROUP)
            user.groups.add(*(Group.objects.get_or_create(name=n)[0] for n in role_names))
        self.stdout.write(
            f"{'Created' if created else 'Updated'} user {name} ({self._summary(user)})"
        )
        if not user.has_usable_password():
            self.stdout.write(no_password_hint(name))

    def _summary(self, user: Any) -> str:
        names = sorted(user.groups.values_list("name", flat=True))
        parts = [f"groups: {', '.join(names) or 'none'}"]
        if user.is_superuser:
            parts.append("superuser")
        else:
            administered = sorted(administered_groups(user).values_list("name", flat=True))
            if administered:
                parts.append(f"document admin of: {', '.join(administered)}")
            if is_auditor(user):
                parts.append("auditor")
        return "; ".join(parts)
