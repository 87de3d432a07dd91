from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from sentence_transformers import CrossEncoder

from assistant.retrieval import (
    NEAR_DUPLICATE_JACCARD,
    Passage,
    _collapse,
    documents_first,
    passages_for_user,
)
from inference.embedder import bundled_model_path
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes
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


def test_a_paragraph_copied_into_two_documents_is_shown_once(library: Library) -> None:
    paragraph = (
        "Visitors to the Leeds office sign in at the front desk, wear their badge at all "
        "times and are escorted by the employee who invited them until they leave."
    )
    document_upload_bytes(
        name="visitors.md", data=f"# Visitors\n\n{paragraph}\n".encode(), is_public=True
    )
    document_upload_bytes(
        name="leeds-office.md",
        data=f"# Leeds office guide\n\n{paragraph} Lunch is served from noon.\n".encode(),
        is_public=True,
    )
    run_pending_once()

    found = passages_for_user(user=library.alice, query="how are visitors escorted", k=10)

    with_paragraph = [p.source for p in found if "escorted by the employee" in p.text]
    assert len(with_paragraph) == 1, with_paragraph
    # Other passages are not mistaken for copies: the travel policy is still there.
    assert "travel-policy.md" in {p.source for p in found}


def passage(document_id: int, score: float, text: str = "") -> Passage:
    return Passage(
        point_id=f"{document_id}-{score}",
        document_id=document_id,
        version_id=document_id,
        title=f"Document {document_id}",
        source=f"doc{document_id}.md",
        page=None,
        heading="",
        chunk_index=0,
        text=text,
        score=score,
        rank=0,
    )


def test_passages_are_dropped_as_copies_exactly_when_their_words_overlap_enough() -> None:
    # Pairs of passages around the threshold, the exact boundary included: a copy is never
    # kept twice, and a passage that is not one is never dropped.
    rng = random.Random(7)
    vocabulary = [f"word{n}" for n in range(3000)]
    for _ in range(400):
        shared = rng.sample(vocabulary, rng.randint(20, 200))
        rest = [word for word in vocabulary if word not in set(shared)]
        own = rng.sample(rest, rng.randint(0, 30))
        theirs = rng.sample([word for word in rest if word not in set(own)], rng.randint(0, 30))
        one, other = shared + own, shared + theirs
        overlap = len(shared) / (len(shared) + len(own) + len(theirs))
        kept = _collapse([passage(1, 0.9, " ".join(one)), passage(2, 0.8, " ".join(other))], 2)
        assert len(kept) == (1 if overlap >= NEAR_DUPLICATE_JACCARD else 2), overlap
    at_threshold = vocabulary[:100]
    kept = _collapse(
        [passage(1, 0.9, " ".join(at_threshold)), passage(2, 0.8, " ".join(at_threshold[:80]))], 2
    )
    assert [p.document_id for p in kept] == [1]


def test_the_top_ten_shows_at_least_five_documents_when_there_are_five() -> None:
    # One document matches everywhere; four others match a little.
    ranked = [passage(1, 0.99 - n / 100) for n in range(12)]
    ranked += [passage(document_id, 0.5) for document_id in (2, 3, 4, 5)]

    chosen = documents_first(sorted(ranked, key=lambda p: -p.score), 10)

    assert len(chosen) == 10
    assert [p.document_id for p in chosen][:6] == [1, 1, 1, 1, 1, 1]
    assert {p.document_id for p in chosen} == {1, 2, 3, 4, 5}


def test_passages_of_a_document_stay_together_in_the_order_of_its_evidence() -> None:
    ranked = [passage(1, 0.9), passage(2, 0.88), passage(2, 0.87), passage(1, 0.5)]

    chosen = documents_first(ranked, 4)

    # Document 2 has two strong passages; document 1 only one.
    assert [p.document_id for p in chosen] == [2, 2, 1, 1]
