from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sentence_transformers import CrossEncoder

from assistant.retrieval import passages_for_user
from inference.embedder import bundled_model_path
from tests.assistant.conftest import Library


@pytest.fixture(scope="module")
def local_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder saved to a local folder, as an operator would configure one."""
    folder = tmp_path_factory.mktemp("reranker")
    CrossEncoder(str(bundled_model_path()), num_labels=1, device="cpu").save(str(folder))
    return folder


def test_a_configured_reranker_orders_the_passages(
    library: Library, local_cross_encoder: Path, settings: Any
) -> None:
    query = "travel rules for employees"
    settings.RERANKER_MODEL_PATH = str(local_cross_encoder)
    reranked = passages_for_user(user=library.alice, query=query, k=5)
    scores = CrossEncoder(str(local_cross_encoder), device="cpu").predict(
        [(query, passage.text) for passage in reranked]
    )
    assert [p.rank for p in reranked] == list(range(1, len(reranked) + 1))
    assert list(scores) == sorted(scores, reverse=True)
    assert [p.score for p in reranked] == pytest.approx([float(s) for s in scores], rel=1e-4)


def test_search_never_returns_another_groups_passage(library: Library) -> None:
    for user, hidden in ((library.bob, "nightjar.md"), (library.alice, "pricing.md")):
        for query in ("launch code Nightjar", "Kestrel licence price", "approval"):
            sources = {p.source for p in passages_for_user(user=user, query=query, k=10)}
            assert hidden not in sources
