from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation import beir_evaluate, beir_index, beir_load, golden_evaluate


class Command(BaseCommand):
    help = "Measure retrieval quality on a BEIR data set or on your own golden questions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--beir", default="", metavar="DIR", help="a BEIR-format folder")
        parser.add_argument("--split", default="test")
        parser.add_argument(
            "--mode", default="hybrid", choices=["dense", "sparse", "hybrid", "all"]
        )
        parser.add_argument("--fusion", default="dbsf", choices=["dbsf", "rrf"])
        parser.add_argument(
            "--candidates", type=int, default=None, help="candidates per retriever before fusion"
        )
        parser.add_argument("--golden", default="", metavar="FILE.jsonl")
        parser.add_argument("--user", default="", help="with --golden: ask as this user")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if bool(options["beir"]) == bool(options["golden"]):
            raise CommandError("Give either --beir DIR or --golden FILE --user NAME.")
        if options["golden"]:
            self._golden(options)
        else:
            self._beir(options)

    def _golden(self, options: dict[str, Any]) -> None:
        if not options["user"]:
            raise CommandError("--golden needs --user NAME: questions are asked as that user.")
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No such user: {options['user']}")
        path = Path(options["golden"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        try:
            result = golden_evaluate(path, user)
        except (ValueError, json.JSONDecodeError) as error:
            raise CommandError(str(error)) from error
        self._print(result, options["json"])

    def _beir(self, options: dict[str, Any]) -> None:
        folder = Path(options["beir"])
        try:
            data = beir_load(folder, options["split"])
        except FileNotFoundError as error:
            raise CommandError(str(error)) from error

        def progress(done: int, total: int) -> None:
            self.stderr.write(f"\rindexing {done}/{total} documents", ending="")

        index = beir_index(folder, data, progress)
        self.stderr.write("")
        modes = ["dense", "sparse", "hybrid"] if options["mode"] == "all" else [options["mode"]]
        try:
            results = {
                mode: beir_evaluate(
                    index,
                    data,
                    mode=mode,  # type: ignore[arg-type]
                    fusion=options["fusion"],
                    candidates=options["candidates"],
                )
                for mode in modes
            }
        finally:
            index.close()
        if len(modes) == 1:
            result = {"mode": modes[0], "fusion": options["fusion"], **results[modes[0]]}
            self._print(result, options["json"])
        else:
            for mode in modes:
                self._print({"mode": mode, **results[mode]}, False)
            if options["json"]:
                self.stdout.write(json.dumps(results))

    def _print(self, result: dict[str, Any], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(result))
            return
        self.stdout.write("  ".join(f"{key} {value}" for key, value in result.items()))
