from __future__ import annotations

import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction


class Command(BaseCommand):
    help = "Create or update a local user and their groups (groups are created as needed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--groups", default="", help="comma-separated group names")
        parser.add_argument("--staff", action="store_true", help="may manage documents")
        parser.add_argument("--superuser", action="store_true")
        parser.add_argument(
            "--password-stdin", action="store_true", help="read the password from standard input"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        name: str = options["name"].strip()
        if not name:
            raise CommandError("The user name must not be empty.")
        password = None
        if options["password_stdin"]:
            password = sys.stdin.readline().rstrip("\n")
            if not password:
                raise CommandError("No password was given on standard input.")
        group_names = [g.strip() for g in options["groups"].split(",") if g.strip()]
        with transaction.atomic():
            user, created = get_user_model().objects.get_or_create(username=name)
            if options["staff"] or options["superuser"]:
                user.is_staff = True
            if options["superuser"]:
                user.is_superuser = True
            if password:
                user.set_password(password)
            elif created:
                user.set_unusable_password()
            user.save()
            groups = [Group.objects.get_or_create(name=g)[0] for g in group_names]
            if options["groups"] != "" or created:
                user.groups.set(groups)
        self.stdout.write(
            f"{'Created' if created else 'Updated'} user {name}"
            f" (groups: {', '.join(sorted(g.name for g in user.groups.all())) or 'none'}"
            f"{', staff' if user.is_staff else ''})"
        )
