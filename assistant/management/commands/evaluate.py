from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation.beir import (
    BeirSet,
    beir_evaluate,
    beir_evaluate_as_user,
    beir_index,
    beir_load,
    beir_write_files,
)
from assistant.evaluation.golden import (
    MEASURES,
    PAGE_MEASURES,
    GoldenFileError,
    QuestionScore,
    golden_load,
)
from assistant.evaluation.kit import (
    KIT_DIR,
    KitError,
    SetResult,
    folder_ingest,
    fresh_installation,
    kit_load,
    pooled_kind,
    run_in_throwaway_folder,
    set_measure,
)
from assistant.evaluation.throwaway_runs import INNER_FLAG, shared_data_dir


class Command(BaseCommand):
    help = (
        "Measure retrieval quality: your own golden questions (--golden), a BEIR data set "
        "(--beir), or the whole evaluation kit (--kit), each against a naive baseline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--golden", default="", metavar="FILE.jsonl")
        parser.add_argument("--user", default="", help="with --golden: ask as this user")
        parser.add_argument(
            "--baseline",
            action="store_true",
            help="with --golden: also run the naive pipeline on the same files and questions",
        )
        parser.add_argument(
            "--misses", action="store_true", help="print each missed question and what came back"
        )
        parser.add_argument("--beir", default="", metavar="DIR", help="a BEIR-format folder")
        parser.add_argument(
            "--through-ingestion",
            action="store_true",
            help="with --beir: ingest each document as a file into a throw-away data folder",
        )
        parser.add_argument("--split", default="test")
        parser.add_argument(
            "--mode", default="hybrid", choices=["dense", "sparse", "hybrid", "all"]
        )
        parser.add_argument("--fusion", default="dbsf", choices=["dbsf", "rrf"])
        parser.add_argument(
            "--candidates", type=int, default=None, help="candidates per retriever before fusion"
        )
        parser.add_argument("--kit", action="store_true", help="run every set of the kit")
        parser.add_argument("--kit-dir", default=str(KIT_DIR), help="a kit folder (sets.json)")
        parser.add_argument(
            "--data", default="", help="the folder the kit's documents are under (shared data)"
        )
        parser.add_argument("--sets", default="", help="with --kit: only these sets (a,b)")
        parser.add_argument("--json", action="store_true", help="last line: one JSON object")
        parser.add_argument("--kit-set", default="", help="(internal)")
        parser.add_argument(INNER_FLAG, action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        chosen = [name for name in ("golden", "beir", "kit", "kit_set") if options[name]]
        if len(chosen) != 1:
            raise CommandError("Give one of --golden FILE --user NAME, --beir DIR or --kit.")
        try:
            if options["kit_set"]:
                self._kit_set(options)
            elif options["kit"]:
                self._kit(options)
            elif options["golden"]:
                self._golden(options)
            elif options["through_ingestion"]:
                self._beir_through_ingestion(options)
            else:
                self._beir(options)
        except (KitError, GoldenFileError) as error:
            raise CommandError(str(error)) from error

    # --- golden questions -------------------------------------------------------------------

    def _golden(self, options: dict[str, Any]) -> None:
        if not options["user"]:
            raise CommandError("--golden needs --user NAME: questions are asked as that user.")
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No such user: {options['user']}")
        path = Path(options["golden"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}")
        result = set_measure(golden_load(path), user, baseline=options["baseline"])
        if options["misses"]:
            self._print_misses(result)
        self._print_comparison(result.summary(), options["json"])

    def _print_misses(self, result: SetResult) -> None:
        baseline = result.baseline.scores if result.baseline is not None else None
        for position, score in enumerate(result.product.scores):
            # A right document below the first place costs MRR: shown too, marked LATE.
            if not score.missed and score.measures["mrr@10"] == 1.0:
                continue
            self.stdout.write(self._miss_text(score))
            if baseline is not None:
                other = baseline[position]
                self.stdout.write(
                    "  baseline: "
                    + (
                        "missed too"
                        if other.missed
                        else f"first right document at rank {_first_rank(other)}"
                    )
                )

    @staticmethod
    def _miss_text(score: QuestionScore) -> str:
        question = score.question
        wanted = ", ".join(
            source.document
            + (f" p.{','.join(map(str, sorted(source.pages)))}" if source.pages else "")
            for source in question.sources
        )
        label = "MISS" if score.missed else f"LATE (rank {_first_rank(score)})"
        lines = [
            f"{label} line {question.line} [{question.kind or '-'}] {question.question}",
            f"  wanted: {wanted}",
        ]
        for rank, found in enumerate(score.found[:5], start=1):
            pages = ",".join(map(str, sorted(found.pages))) or "-"
            snippet = " ".join(found.text.split())[:90]
            heading = f" [{found.heading}]" if found.heading else ""
            lines.append(f"  {rank}. {found.source} p.{pages}{heading}: {snippet}")
        return "\n".join(lines)

    def _print_comparison(self, summary: dict[str, Any], as_json: bool) -> None:
        if not as_json or "baseline_hit@5" in summary:
            self._print_table(summary)
        if as_json:
            self.stdout.write(json.dumps(summary))

    def _print_table(self, summary: dict[str, Any]) -> None:
        has_baseline = "baseline_hit@5" in summary
        header = f"{'':<14}{'product':>9}"
        if has_baseline:
            header += f"{'baseline':>10}{'difference':>12}{'naive dense':>13}"
        self.stdout.write(header)
        for measure in (*MEASURES, *PAGE_MEASURES):
            if measure not in summary:
                continue
            line = f"{measure:<14}{summary[measure]:>9.3f}"
            if has_baseline and f"baseline_{measure}" in summary:
                base = summary[f"baseline_{measure}"]
                dense = summary.get(f"baseline_dense_{measure}", float("nan"))
                line += f"{base:>10.3f}{summary[measure] - base:>+12.3f}{dense:>13.3f}"
            self.stdout.write(line)
        questions = f"{summary['questions']} questions"
        if "page_questions" in summary:
            questions += f" ({summary['page_questions']} with pages)"
        self.stdout.write(questions)

    # --- the kit ----------------------------------------------------------------------------

    def _kit(self, options: dict[str, Any]) -> None:
        data_dir = Path(options["data"]) if options["data"] else shared_data_dir()
        kit_dir = Path(options["kit_dir"]).resolve()
        only = [name.strip() for name in options["sets"].split(",") if name.strip()]
        kit = kit_load(kit_dir, data_dir.resolve(), only)
        sets: dict[str, Any] = {}
        rows: list[dict[str, Any]] = []
        for kit_set in kit.sets:
            self.stderr.write(f"== {kit_set.name}: ingesting {kit_set.documents} ...")
            arguments = ["evaluate", "--kit-set", kit_set.name, "--kit-dir", str(kit_dir)]
            arguments += ["--data", str(data_dir.resolve()), "--json"]
            if options["misses"]:
                arguments.append("--misses")
            inner = run_in_throwaway_folder(arguments)
            sets[kit_set.name] = inner["summary"]
            if len(kit_set.questions) == 1:  # a set that re-asks others' questions is not pooled
                rows.extend(inner["questions"])
            self.stdout.write(f"== {kit_set.name}")
            self._print_table(inner["summary"])
        if any(row["kind"] == "multi" for row in rows):
            sets["multi-document"] = pooled_kind(rows, "multi")
            self.stdout.write("== multi-document (the multi questions of every set)")
            self._print_table(sets["multi-document"])
        result: dict[str, Any] = {"sets": sets}
        if kit.beir is not None and not only:
            result.update(self._kit_beir(kit.beir))
        if options["json"]:
            self.stdout.write(json.dumps(result))

    def _kit_beir(self, folder: Path) -> dict[str, float]:
        self.stderr.write(f"== {folder.name} through ingestion ...")
        ingested = run_in_throwaway_folder(
            ["evaluate", "--beir", str(folder), "--through-ingestion", INNER_FLAG, "--json"]
        )
        self.stderr.write(f"== {folder.name} one point per document ...")
        data = beir_load(folder, "test")
        index = beir_index(folder, data)
        try:
            points = beir_evaluate(index, data, mode="hybrid")
        finally:
            index.close()
        name = folder.name
        self.stdout.write(
            f"== {name}: nDCG@10 through ingestion {ingested['ndcg@10']}, "
            f"one point per document {points['ndcg@10']}"
        )
        return {
            f"{name}_ingested_ndcg@10": ingested["ndcg@10"],
            f"{name}_points_ndcg@10": points["ndcg@10"],
        }

    def _kit_set(self, options: dict[str, Any]) -> None:
        """Inside a throw-away data folder: ingest one set, measure it, print one JSON line."""
        data_dir = Path(options["data"]) if options["data"] else shared_data_dir()
        kit = kit_load(Path(options["kit_dir"]), data_dir, [options["kit_set"]])
        kit_set = kit.sets[0]
        user = fresh_installation()
        failed = folder_ingest(kit_set.documents, self.stderr.write)
        if failed:
            self.stderr.write(f"{failed} files of {kit_set.name} did not become ready.")
        result = set_measure(kit_set.golden(), user, baseline=True)
        if options["misses"]:
            self.stderr.write(f"== misses of {kit_set.name}")
            self.stdout, saved = self.stderr, self.stdout
            try:
                self._print_misses(result)
            finally:
                self.stdout = saved
        self.stdout.write(
            json.dumps({"summary": result.summary(), "questions": result.per_question()})
        )

    # --- BEIR -------------------------------------------------------------------------------

    def _beir_through_ingestion(self, options: dict[str, Any]) -> None:
        folder = Path(options["beir"]).resolve()
        if not options["inner_run"]:
            arguments = ["evaluate", "--beir", str(folder), "--through-ingestion", INNER_FLAG]
            arguments += ["--split", options["split"], "--json"]
            result = run_in_throwaway_folder(arguments)
            self._print({"through_ingestion": True, **result}, options["json"])
            return
        data = self._beir_data(folder, options["split"])
        user: User = fresh_installation()
        files_dir = Path(settings.DATA_DIR) / "beir-files" / folder.name
        names = beir_write_files(data, files_dir)
        failed = folder_ingest(files_dir, self.stderr.write)
        if failed:
            self.stderr.write(f"{failed} documents did not become ready.")
        self._print(beir_evaluate_as_user(data, user, names), True)

    def _beir_data(self, folder: Path, split: str) -> BeirSet:
        try:
            return beir_load(folder, split)
        except FileNotFoundError as error:
            raise CommandError(str(error)) from error

    def _beir(self, options: dict[str, Any]) -> None:
        folder = Path(options["beir"])
        data = self._beir_data(folder, options["split"])

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


def _first_rank(score: QuestionScore) -> int:
    """The rank of the first right document (reciprocal of the question's MRR)."""
    reciprocal = score.measures["mrr@10"]
    return round(1 / reciprocal) if reciprocal else 0
