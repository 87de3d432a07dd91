"""The embedded index's optimizer waits for a quiet moment in a serving process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.test import Client

from config.activity import serving_activity
from ingestion import index_upkeep
from ingestion.vector_index import IndexPoint, SparseVec, open_index
from ingestion.vector_index import edge as edge_module
from ingestion.vector_index.configured import vector_index
from ingestion.vector_index.edge import EdgeIndex

# Smaller than the real threshold for a quick test, but above the size from which Qdrant
# builds a segment's search graph at all (about 6,700 vectors of 384 dimensions).
THRESHOLD = 5_000
STORED = 7_000


def random_points(count: int, seed: int = 7) -> list[IndexPoint]:
    vectors = np.random.default_rng(seed).standard_normal((count, 384))
    return [
        IndexPoint(
            id=str(uuid.uuid4()),
            dense=vector.tolist(),
            sparse=SparseVec(indices=[1, 2], values=[0.5, 0.5]),
            payload={"groups": ["public"], "document_id": 1, "version_id": 1, "active": True},
        )
        for vector in vectors
    ]


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge_module, "UNINDEXED_POINTS_BEFORE_OPTIMIZE", THRESHOLD)


def test_a_process_that_serves_nobody_optimizes_as_it_stores(
    small_threshold: None, tmp_path: Path
) -> None:
    index = open_index(backend="edge", path=tmp_path / "index")
    try:
        index.upsert(random_points(STORED))
        upkeep = index.upkeep()
    finally:
        index.close()

    assert upkeep is not None
    assert not upkeep.optimize_due
    assert upkeep.unindexed_points == 0
    assert upkeep.last_optimize_s is not None


@pytest.mark.django_db
def test_a_serving_process_optimizes_only_once_nobody_is_served(
    small_threshold: None, settings: object, admin_client: Client
) -> None:
    settings.INDEX_OPTIMIZE_QUIET_S = 0.2  # type: ignore[attr-defined]
    index = vector_index()
    index_upkeep.index_upkeep_stop()
    assert isinstance(index, EdgeIndex)
    index.defer_optimize()
    index.upsert(random_points(STORED))

    waiting = index.upkeep()
    assert waiting is not None
    assert waiting.optimize_due
    assert waiting.unindexed_points >= THRESHOLD
    ready = admin_client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["index_upkeep"]["optimize_due"] is True
    assert "wait for their search graph" in str(ready["checks"])
    page = admin_client.get("/documents/").content.decode()
    assert "wait for their" in page
    assert "search graph" in page

    with serving_activity.serving():
        assert not index_upkeep.optimize_if_quiet()
    assert not index_upkeep.optimize_if_quiet(), "it waits for a quiet moment first"
    time.sleep(0.25)
    assert index_upkeep.optimize_if_quiet()

    done = index.upkeep()
    assert done is not None
    assert not done.optimize_due
    assert done.unindexed_points == 0
    assert "search graph" not in admin_client.get("/documents/").content.decode()
