"""Retrieval quality on a BEIR data set, one point per document or through ingestion.

One point per document measures the index and the encoders alone. Through ingestion, each
document becomes a Markdown file (its title a heading) that goes through the product's
parsing, chunking and search as a user asks, so the figure is the pipeline users get.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User

from assistant.evaluation.metrics import distinct, ndcg_at_k, recall_at_k
from assistant.retrieval import passages_for_user
from ingestion.access import index_scope
from ingestion.passage_vectors import IndexedPassage, dense, passage_points, sparse
from ingestion.vector_index import VectorIndex, open_index
from ingestion.vector_index.base import SearchMode, SparseVec

EVAL_TAG = "public"
INDEX_BATCH = 256


@dataclass(frozen=True)
class BeirSet:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def _jsonl(path: Path) -> Iterator[dict[str, str]]:
    with path.open() as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def beir_load(folder: Path, split: str) -> BeirSet:
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for needed in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} is missing; is {folder} a BEIR data set?")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open() as lines:
        for line in lines:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or not parts[2].lstrip("-").isdigit():
                continue  # the header line
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    corpus = {
        str(doc["_id"]): (str(doc.get("title", "")), str(doc.get("text", "")))
        for doc in _jsonl(folder / "corpus.jsonl")
    }
    queries = {
        str(query["_id"]): str(query["text"])
        for query in _jsonl(folder / "queries.jsonl")
        if str(query["_id"]) in qrels
    }
    return BeirSet(corpus=corpus, queries=queries, qrels=qrels)


def _eval_index_dir(folder: Path, data: BeirSet) -> Path:
    """One index per corpus, model and precision, reused by later runs."""
    encoder = dense()
    digest = hashlib.sha256()
    digest.update(str(encoder.model_path).encode())
    digest.update(encoder.precision.encode())
    for doc_id in sorted(data.corpus):
        digest.update(doc_id.encode())
        digest.update("\x00".join(data.corpus[doc_id]).encode())
    return Path(settings.DATA_DIR) / "evaluation" / f"{folder.name}-{digest.hexdigest()[:16]}"


def beir_index(
    folder: Path, data: BeirSet, progress: Callable[[int, int], None] | None = None
) -> VectorIndex:
    index_dir = _eval_index_dir(folder, data)
    complete = index_dir / "complete"
    index = open_index(backend="edge", path=index_dir / "shard")
    if complete.exists():
        return index
    doc_ids = sorted(data.corpus)
    for start in range(0, len(doc_ids), INDEX_BATCH):
        batch = doc_ids[start : start + INDEX_BATCH]
        points = passage_points(
            [
                IndexedPassage(
                    document_id=start + position,
                    version_id=0,
                    chunk_index=start + position,
                    title=data.corpus[doc_id][0],
                    source=doc_id,
                    groups=[EVAL_TAG],
                    page=None,
                    heading="",
                    text=data.corpus[doc_id][1],
                    active=True,
                )
                for position, doc_id in enumerate(batch)
            ]
        )
        index.upsert(points)
        if progress is not None:
            progress(min(start + INDEX_BATCH, len(doc_ids)), len(doc_ids))
    complete.write_text("ok")
    return index


def beir_evaluate(
    index: VectorIndex,
    data: BeirSet,
    *,
    mode: SearchMode,
    fusion: str = "dbsf",
    candidates: int | None = None,
) -> dict[str, float]:
    """One point per document: the index searched directly with the product's encoders."""
    query_ids = sorted(data.queries)
    texts = [data.queries[q] for q in query_ids]
    dense_vectors = dense().encode(texts)
    sparse_encoder = sparse()
    rankings: dict[str, list[str]] = {}
    scope = index_scope([EVAL_TAG], only_active=True)
    assert scope is not None, "one tag always gives a scope"
    for position, query_id in enumerate(query_ids):
        indices, values = sparse_encoder.encode_query(texts[position])
        hits = index.search(
            dense=dense_vectors[position].tolist(),
            sparse=SparseVec(indices, values),
            scope=scope,
            limit=100,
            mode=mode,
            candidates=candidates or settings.RETRIEVAL_CANDIDATES,
            fusion=fusion,  # type: ignore[arg-type]
        )
        rankings[query_id] = [str(hit.payload["source"]) for hit in hits]
    return beir_scores(data, rankings)


def beir_scores(data: BeirSet, rankings: dict[str, list[str]]) -> dict[str, float]:
    """nDCG@10 and recall@10/@100 of each query's ranked document ids."""
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0}
    for query_id, ranked in rankings.items():
        relevance = data.qrels[query_id]
        relevant = {doc for doc, grade in relevance.items() if grade > 0}
        totals["ndcg@10"] += ndcg_at_k(ranked, relevance, 10)
        totals["recall@10"] += recall_at_k(ranked, relevant, 10)
        totals["recall@100"] += recall_at_k(ranked, relevant, 100)
    count = len(rankings) or 1
    result = {name: round(value / count, 4) for name, value in totals.items()}
    result["queries"] = len(rankings)
    return result


_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")


def beir_file_name(doc_id: str) -> str:
    return f"{_UNSAFE_IN_NAME.sub('_', doc_id)[:150]}.md"


def beir_write_files(data: BeirSet, folder: Path) -> dict[str, str]:
    """Write each document as Markdown, its title a heading; returns file name -> doc id."""
    folder.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for doc_id, (title, text) in data.corpus.items():
        name = beir_file_name(doc_id)
        if name in names:
            name = f"{len(names)}-{name}"
        names[name] = doc_id
        heading = f"# {' '.join(title.split())}\n\n" if title.strip() else ""
        (folder / name).write_text(f"{heading}{text}\n", encoding="utf-8")
    return names


def beir_evaluate_as_user(data: BeirSet, user: User, names: dict[str, str]) -> dict[str, float]:
    """Through ingestion: documents ranked by their best passage, as `user` searches."""
    rankings: dict[str, list[str]] = {}
    for query_id in sorted(data.queries):
        passages = passages_for_user(user=user, query=data.queries[query_id], k=100)
        rankings[query_id] = distinct(
            [names.get(Path(passage.source).name, passage.source) for passage in passages]
        )
    return beir_scores(data, rankings)
