"""The import contracts of pyproject.toml hold, and they bite: a back-edge fails the check.

Each case writes one import that the layered design forbids (the back-edges and circles the
code once had) into a copy of the project, and expects `lint-imports` to refuse it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "config",
    "audit",
    "accounts",
    "ingestion",
    "sources",
    "assistant",
    "inference",
    "bench",
)
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for package in PACKAGES:
        shutil.copytree(
            PROJECT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(PROJECT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_project_keeps_every_contract(project_copy: Path) -> None:
    checked = lint_imports(project_copy)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "BROKEN" not in checked.stdout


BACK_EDGES = {
    # A lower layer reaching up: the ledger, people and documents must not know answers.
    "ingestion/services.py": ("import assistant.answering", "Layers"),
    "accounts/roles.py": ("import ingestion.models", "Layers"),
    "config/logs.py": ("import audit.ledger", "Layers"),
    "audit/ledger.py": ("import assistant.models", "Layers"),
    # Documents know nothing of the sources that sync them, nor sources of answers.
    "ingestion/models.py": ("import sources.models", "Layers"),
    "sources/sync.py": ("import assistant.retrieval", "Layers"),
    # The model client stays free of Django and of the apps.
    "inference/llm.py": ("import django.db", "inference knows no Django"),
    "inference/prompting.py": ("import ingestion.models", "inference knows no Django"),
    # The product never leans on a benchmark rig.
    "ingestion/access.py": ("import bench.loopback_cluster", "Nothing in the product"),
    # A circle: the index handle importing the rebuild that imports it.
    "ingestion/vector_index/configured.py": ("import ingestion.reindex", "No import circle"),
}


@pytest.mark.parametrize("module", sorted(BACK_EDGES))
def test_a_forbidden_import_fails_the_check(project_copy: Path, module: str) -> None:
    statement, contract = BACK_EDGES[module]
    path = project_copy / module
    original = path.read_text(encoding="utf-8")
    try:
        path.write_text(f"{original}\n{statement}  # noqa\n", encoding="utf-8")
        checked = lint_imports(project_copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert checked.returncode != 0, f"{statement} in {module} went unnoticed"
    broken = checked.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, checked.stdout
