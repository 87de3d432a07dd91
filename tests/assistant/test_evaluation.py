from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from django.core.management import call_command

from assistant.evaluation import ndcg_at_k, recall_at_k, reciprocal_rank
from tests.assistant.conftest import Library

TOPICS = {
    "d1": ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose."),
    "d2": ("Volcanoes", "Magma rises through the crust and erupts as lava and volcanic ash."),
    "d3": ("Tides", "The gravitational pull of the moon raises ocean tides twice a day."),
    "d4": ("Antibiotics", "Penicillin kills bacteria by breaking down their cell walls."),
    "d5": ("Glaciers", "Compacted snow turns into ice that slowly flows downhill."),
    "d6": ("Batteries", "Lithium ions move between electrodes when a battery charges."),
}
QUERIES = {
    "q1": ("How do plants make glucose from sunlight?", "d1"),
    "q2": ("What makes the ocean tides rise?", "d3"),
    "q3": ("How does penicillin kill bacteria?", "d4"),
}


def test_ndcg_matches_a_hand_computed_value() -> None:
    relevance = {"a": 2, "b": 1}
    # DCG = (2^1-1)/log2(2) + (2^2-1)/log2(3); IDCG = 3/1 + 1/log2(3)
    expected = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert ndcg_at_k(["b", "a", "c"], relevance) == pytest.approx(expected)
    assert ndcg_at_k(["a", "b"], relevance) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], relevance) == 0.0


def test_recall_and_reciprocal_rank() -> None:
    assert recall_at_k(["a", "x", "b"], {"a", "b"}, 2) == 0.5
    assert recall_at_k(["a", "x", "b"], {"a", "b"}, 3) == 1.0
    assert reciprocal_rank(["x", "y", "a"], {"a"}) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"], {"a"}) == 0.0


def write_beir(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as corpus:
        for doc_id, (title, text) in TOPICS.items():
            corpus.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (folder / "queries.jsonl").open("w") as queries:
        for query_id, (text, _) in QUERIES.items():
            queries.write(json.dumps({"_id": query_id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, (_, d) in QUERIES.items()]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_evaluate_scores_a_small_beir_set_perfectly(
    tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_beir(tmp_path / "tiny")
    call_command("evaluate", "--beir", str(tmp_path / "tiny"), "--mode", mode, "--json")
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["queries"] == 3
    assert result["ndcg@10"] == 1.0
    assert result["recall@10"] == 1.0
    assert result["recall@100"] == 1.0


def test_golden_questions_are_scored_as_the_user_would_ask(
    library: Library, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        json.dumps({"question": "launch code of Project Nightjar", "sources": ["nightjar.md"]})
        + "\n"
        + json.dumps({"question": "meal expenses per day", "sources": ["travel-policy.md"]})
        + "\n"
    )
    call_command("evaluate", "--golden", str(golden), "--user", "alice", "--json")
    alice = json.loads(capsys.readouterr().out.strip())
    assert alice == {"recall@5": 1.0, "mrr@10": 1.0, "questions": 2}
    call_command("evaluate", "--golden", str(golden), "--user", "bob", "--json")
    bob = json.loads(capsys.readouterr().out.strip())
    assert bob["recall@5"] == 0.5
