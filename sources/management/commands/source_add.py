from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sources.models import SourceKind
from sources.options import OptionError, options_parse
from sources.services import SourceRefused, source_add


class Command(BaseCommand):
    help = "Add a source that stays in sync: a folder, an intranet site, a mailbox or a reader."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", required=True, choices=SourceKind.values)
        parser.add_argument("--path", default="", help="the folder (kind folder)")
        parser.add_argument(
            "--url",
            action="append",
            default=[],
            help="a start URL (kind web, may be repeated) or the mailbox (kind imap)",
        )
        readers = parser.add_mutually_exclusive_group()
        readers.add_argument("--groups", default="", help="comma-separated groups that may read")
        readers.add_argument("--everyone", action="store_true", help="everyone may read")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a setting of the kind; secrets as KEY_file=PATH or KEY_env=VARIABLE",
        )
        parser.add_argument("--schedule", default="", metavar="CRON", help="five cron fields")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            settings = options_parse(options["option"])
        except OptionError as error:
            raise CommandError(str(error)) from error
        location = options["path"] or "\n".join(options["url"])
        group_names = [name.strip() for name in options["groups"].split(",") if name.strip()]
        groups = [Group.objects.get_or_create(name=name)[0] for name in group_names]
        if not groups and not options["everyone"] and "folder_groups" not in settings:
            self.stderr.write(
                "Note: no --groups and no --everyone: only administrators will see its documents."
            )
        try:
            source = source_add(
                name=options["name"],
                kind=options["kind"],
                location=location,
                options=settings,
                groups=groups,
                is_public=options["everyone"],
                schedule=options["schedule"],
            )
        except SourceRefused as error:
            raise CommandError(str(error)) from error
        schedule = f", schedule “{source.schedule}”" if source.schedule else ""
        self.stdout.write(f"Added source {source.name} ({source.kind}){schedule}.")
