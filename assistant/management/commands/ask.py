from __future__ import annotations

import json
import sys
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.answering import AnswerEvent, QuestionRejected, answer_events
from assistant.api import answer_json, done_with_review

EXTRACTIVE_LABEL = "(Extracted from your documents without a language model.)"


class Command(BaseCommand):
    help = "Ask a question as a user; prints the answer, its citations and the model's reasoning."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question")
        parser.add_argument("--user", required=True)
        parser.add_argument("--conversation", type=int, default=None, metavar="ID")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No such user: {options['user']}")
        try:
            # async_to_sync keeps the database work on this thread and its connection.
            final = async_to_sync(self._consume)(
                user, options["question"], options["conversation"], options["json"]
            )
        except QuestionRejected as error:
            raise CommandError(str(error)) from error
        if options["json"]:
            self.stdout.write(json.dumps(final, ensure_ascii=False))
        if final.get("status") == "failed":
            sys.exit(1)

    async def _consume(
        self, user: Any, question: str, conversation: int | None, as_json: bool
    ) -> dict[str, Any]:
        final: dict[str, Any] = {}
        in_reasoning = False
        async for event in answer_events(
            user=user, question=question, conversation_id=conversation
        ):
            if as_json:
                if event.kind == "done":
                    final = answer_json(await done_with_review(event.data))
                continue
            in_reasoning = self._print_event(event, in_reasoning)
            if event.kind == "done":
                final = event.data
        return final

    def _print_event(self, event: AnswerEvent, in_reasoning: bool) -> bool:
        out = self.stdout
        if event.kind == "meta":
            out.write(f"Searched for: {event.data['searched_query']}")
            if event.data["mode"] == "extractive":
                out.write(EXTRACTIVE_LABEL)
            out.write("")
        elif event.kind == "reasoning":
            if not in_reasoning:
                out.write("--- reasoning ---")
            out.write(event.text, ending="")
            out.flush()
            return True
        elif event.kind in ("answer", "reclassify"):
            if in_reasoning:
                out.write("\n--- answer ---")
            if event.kind == "reclassify":
                out.write("\n(the model's output had no reasoning section; it is the answer)")
            out.write(event.text, ending="")
            out.flush()
            return False
        elif event.kind == "notice":
            out.write(f"\n[{event.text}]")
        elif event.kind == "done":
            data = event.data
            out.write("")
            out.write(f"\nStatus: {data['status']} ({data['mode']})")
            for citation in data["citations"]:
                where = f", page {citation['page']}" if citation["page"] else ""
                out.write(
                    f"[{citation['n']}] {citation['source']}{where}: {citation['text'][:300]}"
                )
            if data["dropped_citations"]:
                out.write(f"({len(data['dropped_citations'])} citations to no source were removed)")
            out.write(f"Conversation: {data['conversation_id']}")
        return in_reasoning
