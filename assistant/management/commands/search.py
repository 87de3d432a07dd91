from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.retrieval import passages_for_user


class Command(BaseCommand):
    help = "Show the passages a user would get for a query (their access applies)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query")
        parser.add_argument("--user", required=True)
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--mode", default="hybrid", choices=["dense", "sparse", "hybrid"])
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No such user: {options['user']}")
        if not options["query"].strip():
            raise CommandError("The query is empty.")
        if not 1 <= options["k"] <= 100:
            raise CommandError("--k must be between 1 and 100.")
        passages = passages_for_user(
            user=user, query=options["query"], k=options["k"], mode=options["mode"]
        )
        if options["json"]:
            self.stdout.write(json.dumps([p.as_json() for p in passages], ensure_ascii=False))
            return
        if not passages:
            self.stdout.write("No passages found in the documents you may read.")
        for p in passages:
            where = ", ".join(
                part for part in (f"page {p.page}" if p.page else "", p.heading) if part
            )
            self.stdout.write(
                f"[{p.rank}] {p.score:.3f}  {p.source} (document {p.document_id}, "
                f"version {p.version_id}){'  ' + where if where else ''}\n    {p.text[:400]}\n"
            )
