from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Servers and commands that tests start get a fresh data folder each; they share one encoder
# cache, as the processes of one install do, so the model is exported to the compiled engine
# and the engines are measured once per machine rather than once per process.
os.environ.setdefault(
    "EMBEDDING_CACHE_DIR", str(Path(tempfile.gettempdir()) / "assistant-test-encoders")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public sample documents and SciFact, kept beside the project for tests only."""
    if not SHARED_DATA.is_dir():
        pytest.skip("shared sample data is not available")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def fresh_rate_limits() -> None:
    """Each test starts with no questions or uploads counted, as a fresh server process would."""
    from accounts.limits import limiter_reset

    limiter_reset()


@pytest.fixture(autouse=True)
def isolated_storage(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """Each test gets its own stored files and vector index, as a fresh install would."""
    if "django_db_setup" not in request.fixturenames and "db" not in request.fixturenames:
        marker = request.node.get_closest_marker("django_db")
        if marker is None:
            yield None
            return
    settings = request.getfixturevalue("settings")
    from ingestion.vector_index.configured import vector_index_close

    vector_index_close()
    settings.VECTOR_INDEX_DIR = tmp_path / "index"
    settings.MEDIA_ROOT = tmp_path / "files"
    settings.AUDIT_ANCHOR_FILE = tmp_path / "audit-anchors.jsonl"
    yield settings
    vector_index_close()
