from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from django.core.management import call_command

from assistant.evaluation.baseline import NaivePipeline, StoredFile
from assistant.evaluation.golden import (
    Found,
    GoldenFileError,
    GoldenQuestion,
    WantedSource,
    golden_load,
    question_score,
    source_matches,
)
from assistant.evaluation.metrics import ndcg_at_k, recall_at_k, reciprocal_rank
from ingestion.passage_vectors import dense
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


def write_library_golden(folder: Path) -> Path:
    """One question on a document only research may read, one on a public document."""
    golden = folder / "golden.jsonl"
    golden.write_text(
        json.dumps({"question": "launch code of Project Nightjar", "sources": ["nightjar.md"]})
        + "\n"
        + json.dumps({"question": "meal expenses per day", "sources": ["travel-policy.md"]})
        + "\n"
    )
    return golden


def test_golden_questions_are_scored_as_the_user_would_ask(
    library: Library, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = write_library_golden(tmp_path)
    call_command("evaluate", "--golden", str(golden), "--user", "alice", "--json")
    alice = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {key: alice[key] for key in ("recall@5", "mrr@10", "questions")} == {
        "recall@5": 1.0,
        "mrr@10": 1.0,
        "questions": 2,
    }
    assert alice["hit@5"] == 1.0
    assert alice["ndcg@10"] == 1.0
    call_command("evaluate", "--golden", str(golden), "--user", "bob", "--json")
    bob = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert bob["recall@5"] == 0.5
    assert bob["hit@5"] == 0.5


def found(*sources: str, page: int | None = None) -> list[Found]:
    return [Found(source=s, pages=frozenset({page}) if page else frozenset()) for s in sources]


def question(*wanted: str, pages: tuple[int, ...] = ()) -> GoldenQuestion:
    return GoldenQuestion(
        line=1,
        question="q",
        sources=tuple(WantedSource(document=w, pages=frozenset(pages)) for w in wanted),
    )


def test_documents_are_counted_once_in_the_order_their_best_passage_came() -> None:
    passages = found("/srv/a.md", "/srv/a.md", "/srv/b.md", "/srv/c.md")

    score = question_score(question("b.md", "c.md", "z.md"), passages).measures

    assert score["hit@5"] == 1.0
    assert score["recall@5"] == pytest.approx(2 / 3)
    assert score["mrr@10"] == pytest.approx(1 / 2)  # documents a, b, c: b is second
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert score["ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal)


def test_a_document_beyond_the_fifth_distinct_one_is_not_a_hit_at_5() -> None:
    passages = found(*(f"d{n}.md" for n in range(6)))

    score = question_score(question("d5.md"), passages).measures

    assert score["hit@5"] == 0.0
    assert score["mrr@10"] == pytest.approx(1 / 6)


def test_sources_match_at_a_folder_boundary_only() -> None:
    assert source_matches("/srv/docs/handbook/leave.md", "handbook/leave.md")
    assert source_matches("leave.md", "leave.md")
    assert not source_matches("/srv/docs/myleave.md", "leave.md")


def test_page_level_credit_goes_once_to_each_wanted_page() -> None:
    passages = [
        Found("report.pdf", frozenset({3})),
        Found("report.pdf", frozenset({2})),
        Found("report.pdf", frozenset({2})),
        Found("report.pdf", frozenset({5})),
    ]

    score = question_score(question("report.pdf", pages=(2, 5)), passages).measures

    assert score["hit@5"] == 1.0
    assert score["page_hit@5"] == 1.0
    assert score["page_mrr@10"] == pytest.approx(1 / 2)
    ideal = 1 + 1 / math.log2(3)
    assert score["page_ndcg@10"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)


def test_a_golden_file_with_a_bad_line_is_refused_with_its_line_number(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text(
        json.dumps({"question": "fine", "sources": ["a.md"]})
        + "\n"
        + json.dumps({"question": "pages", "sources": [{"document": "a.pdf", "pages": [0]}]})
        + "\n"
    )

    with pytest.raises(GoldenFileError, match=r"golden.jsonl:2: 'pages'"):
        golden_load(path)


def test_sources_may_name_pages_and_repeat_a_document(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    sources = [{"document": "a.pdf", "pages": [2]}, {"document": "a.pdf", "pages": [4]}, "b.md"]
    path.write_text(json.dumps({"question": "q", "sources": sources, "kind": "multi"}) + "\n")

    (loaded,) = golden_load(path)

    assert loaded.kind == "multi"
    assert loaded.sources == (
        WantedSource("a.pdf", frozenset({2, 4})),
        WantedSource("b.md", frozenset()),
    )


@pytest.mark.django_db
def test_the_naive_baseline_cuts_fixed_windows_prefixed_with_the_file_name() -> None:
    words = " ".join(f"word{n}" for n in range(500))
    files = [
        StoredFile(source="/srv/long.txt", name="long.txt", data=words.encode()),
        StoredFile(
            source="/srv/kestrel-pricing.md",
            name="kestrel-pricing.md",
            data=b"The list price of a seat rises next year.",
        ),
    ]

    naive = NaivePipeline(files, dense().encode)

    # 500 words in windows of 200 that start every 160 words: 0, 160, 320.
    assert naive.window_count == 3 + 1
    # The file name is part of each window, so a question naming it finds the file.
    assert naive.search("kestrel pricing", k=1)[0].source == "/srv/kestrel-pricing.md"
    assert naive.search("word333", k=1, mode="bm25")[0].source == "/srv/long.txt"


def test_golden_with_baseline_prints_both_and_the_baseline_keys(
    library: Library, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = write_library_golden(tmp_path)

    call_command("evaluate", "--golden", str(golden), "--user", "alice", "--baseline", "--json")

    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("hit@5", "recall@5", "mrr@10", "ndcg@10", "questions"):
        assert key in result
        assert f"baseline_{key}" in result
    assert result["baseline_questions"] == 2
    # Alice may not read the pricing document: the baseline is built from her files only.
    assert result["baseline_hit@5"] == 1.0
    assert any(line.startswith("hit@5") and "+" in line for line in lines)


def test_misses_show_the_question_and_what_came_back(
    library: Library, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        json.dumps({"question": "Kestrel licence list price", "sources": ["pricing.md"]}) + "\n"
    )

    call_command("evaluate", "--golden", str(golden), "--user", "alice", "--misses")

    out = capsys.readouterr().out
    assert "MISS line 1 [-] Kestrel licence list price" in out
    assert "wanted: pricing.md" in out
    # What came back is what alice may read, never the pricing document itself.
    assert "pricing.md p." not in out


@pytest.mark.slow
def test_the_kit_ingests_each_set_end_to_end_and_measures_scifact_both_ways(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    documents = data / "samples" / "tiny"
    documents.mkdir(parents=True)
    for title, text in TOPICS.values():
        (documents / f"{title.lower()}.md").write_text(f"# {title}\n\n{text}\n")
    write_beir(data / "scifact")
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "tiny.jsonl").write_text(
        "".join(
            json.dumps({"question": text, "sources": [f"tiny/{TOPICS[doc][0].lower()}.md"]}) + "\n"
            for text, doc in QUERIES.values()
        )
    )
    (kit / "sets.json").write_text(
        json.dumps(
            {
                "sets": {"tiny": {"documents": "samples/tiny", "questions": "tiny.jsonl"}},
                "beir": "scifact",
            }
        )
    )

    call_command("evaluate", "--kit", "--kit-dir", str(kit), "--data", str(data), "--json")

    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    tiny = result["sets"]["tiny"]
    assert tiny["questions"] == 3
    assert tiny["hit@5"] == 1.0
    assert tiny["baseline_hit@5"] == 1.0
    assert result["scifact_ingested_ndcg@10"] == 1.0
    assert result["scifact_points_ndcg@10"] == 1.0
