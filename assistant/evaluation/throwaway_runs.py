"""Throw-away runs for `evaluate` and the benchmarks (bench/): where the public evaluation
data lives, and re-running a command as a fresh standalone installation in a temporary data
folder, so the real one is never touched. Never needed at run time."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError


def shared_data_dir() -> Path:
    """`ASSISTANT_SHARED_DATA`, or the `shared/data` folder beside the project checkout."""
    configured = os.environ.get("ASSISTANT_SHARED_DATA")
    return Path(configured) if configured else Path(settings.BASE_DIR).parent / "shared" / "data"


def scifact_corpus_path() -> Path:
    corpus = shared_data_dir() / "scifact" / "corpus.jsonl"
    if not corpus.is_file():
        raise CommandError(
            f"SciFact is not at {corpus}; set ASSISTANT_SHARED_DATA or pass --path FOLDER."
        )
    return corpus


# Settings a throw-away run must not inherit: it is a standalone installation of its own.
NOT_INHERITED_BY_THROWAWAY_RUNS = (
    "DATABASE_URL",
    "QDRANT_URL",
    "QDRANT_PATH",
    "ASSISTANT_MODE",
    "VLLM_URLS",
)

# A benchmark re-runs itself with this flag inside a throw-away data folder.
INNER_FLAG = "--inner-run"


def throwaway_env(data_dir: str) -> dict[str, str]:
    """This process's environment for a standalone installation in `data_dir`.

    It keeps this installation's compiled encoder: exporting it again for every throw-away
    folder would cost each run seconds of start-up and change nothing.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in NOT_INHERITED_BY_THROWAWAY_RUNS
    }
    env["ASSISTANT_DATA_DIR"] = data_dir
    env.setdefault("EMBEDDING_CACHE_DIR", str(settings.EMBEDDING_CACHE_DIR))
    return env


def run_isolated(command: str, arguments: list[str]) -> None:
    """Re-run a benchmark in a throw-away standalone data folder; the real one is not touched."""
    with tempfile.TemporaryDirectory(prefix=f"{command}-") as data_dir:
        done = subprocess.run(
            [sys.executable, "manage.py", command, INNER_FLAG, *arguments],
            cwd=settings.BASE_DIR,
            env=throwaway_env(data_dir),
        )
        if done.returncode:
            raise CommandError("The benchmark failed.")
