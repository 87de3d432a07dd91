"""The evaluation kit: golden sets over real documents, each measured end to end.

Every set is ingested with the product's own pipeline into a throw-away data folder (a
child process of `evaluate`, so nothing of the real knowledge base is touched), asked as a
user who may read everything, and compared with the naive baseline on the same files.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management import call_command

from assistant.evaluation.golden import (
    GoldenQuestion,
    GoldenRun,
    golden_load,
    golden_run,
    summarize,
)
from assistant.evaluation.retrievers import naive_pipeline_for, product_retriever
from assistant.evaluation.throwaway_runs import throwaway_env
from ingestion.local_files import files_under, local_files_upload
from ingestion.models import DocumentVersion, VersionStatus
from ingestion.runner import run_pending_once

KIT_DIR = Path(__file__).resolve().parent / "kit"
KIT_USER = "kit-evaluator"


class KitError(Exception):
    """The kit cannot run; the message says what is missing."""


@dataclass(frozen=True)
class KitSet:
    name: str
    documents: Path
    questions: tuple[Path, ...]

    def golden(self) -> list[GoldenQuestion]:
        return [question for path in self.questions for question in golden_load(path)]


@dataclass(frozen=True)
class Kit:
    sets: list[KitSet]
    beir: Path | None


def kit_load(kit_dir: Path, data_dir: Path, only: Sequence[str] = ()) -> Kit:
    definition = kit_dir / "sets.json"
    if not definition.is_file():
        raise KitError(f"{definition} is missing; is {kit_dir} an evaluation kit?")
    spec = json.loads(definition.read_text())
    sets = [
        KitSet(name, data_dir / item["documents"], _question_files(kit_dir, item["questions"]))
        for name, item in spec["sets"].items()
        if not only or name in only
    ]
    unknown = set(only) - {kit_set.name for kit_set in sets}
    if unknown:
        raise KitError(f"No such set in the kit: {', '.join(sorted(unknown))}")
    for kit_set in sets:
        for needed in (kit_set.documents, *kit_set.questions):
            if not needed.exists():
                raise KitError(f"{needed} is missing (set {kit_set.name}).")
    beir = data_dir / spec["beir"] if spec.get("beir") else None
    return Kit(sets=sets, beir=beir)


def _question_files(kit_dir: Path, questions: str | list[str]) -> tuple[Path, ...]:
    names = [questions] if isinstance(questions, str) else questions
    return tuple(kit_dir / name for name in names)


def run_in_throwaway_folder(arguments: list[str]) -> dict[str, Any]:
    """Run `manage.py ARGUMENTS` as a fresh standalone installation; its last JSON line."""
    with tempfile.TemporaryDirectory(prefix="evaluate-") as data_dir:
        env = throwaway_env(data_dir)
        # Progress goes to stderr; every passage indexed need not.
        env.setdefault("LOG_LEVEL", "WARNING")
        done = subprocess.run(
            [sys.executable, "manage.py", *arguments],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode or not lines:
        raise KitError(f"manage.py {' '.join(arguments)} failed (exit {done.returncode}).")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def fresh_installation() -> User:
    """Prepare a throw-away data folder: tables, and a user who may read everything."""
    call_command("migrate", interactive=False, verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=KIT_USER)
    return user


def folder_ingest(folder: Path, progress: Callable[[str], None] = lambda _: None) -> int:
    """Ingest every file under `folder` for everyone, here and now; returns how many failed."""
    files = files_under([str(folder)])
    local_files_upload(files, is_public=True)
    progress(f"ingesting {len(files)} files from {folder}")
    run_pending_once()
    failed = DocumentVersion.objects.exclude(status=VersionStatus.READY)
    for version in failed:
        progress(f"not ready: {version.original_name}: {version.status_message}")
    return failed.count()


@dataclass(frozen=True)
class SetResult:
    product: GoldenRun
    baseline: GoldenRun | None
    baseline_dense: GoldenRun | None

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = dict(self.product.summary())
        if self.baseline is not None:
            result.update(self.baseline.summary("baseline_"))
        if self.baseline_dense is not None:
            result.update(self.baseline_dense.summary("baseline_dense_"))
        return result

    def per_question(self) -> list[dict[str, Any]]:
        """Each question's measures, so that kinds can be pooled across sets."""
        rows = []
        for position, score in enumerate(self.product.scores):
            row: dict[str, Any] = {
                "line": score.question.line,
                "kind": score.question.kind,
                "product": score.measures,
            }
            if self.baseline is not None:
                row["baseline"] = self.baseline.scores[position].measures
            rows.append(row)
        return rows


def set_measure(questions: Sequence[GoldenQuestion], user: User, *, baseline: bool) -> SetResult:
    product = golden_run(questions, product_retriever(user))
    if not baseline:
        return SetResult(product, None, None)
    naive = naive_pipeline_for(user)
    return SetResult(
        product,
        golden_run(questions, naive.search),
        golden_run(questions, lambda question: naive.search(question, mode="dense")),
    )


def pooled_kind(rows: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The measures of one kind of question (say "multi") pooled over every set."""
    chosen = [row for row in rows if row["kind"] == kind]
    result: dict[str, Any] = {}
    for side, prefix in (("product", ""), ("baseline", "baseline_")):
        if chosen and all(side in row for row in chosen):
            result.update(summarize([row[side] for row in chosen], prefix))
    return result
