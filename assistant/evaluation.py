"""Retrieval quality: BEIR data sets and a company's own golden questions."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User

from ingestion.index import IndexedPassage, dense, passage_points, sparse
from ingestion.vector_index import VectorIndex, open_index
from ingestion.vector_index.base import SearchMode, SparseVec

EVAL_TAG = "public"
INDEX_BATCH = 256


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    gains = [relevance.get(doc_id, 0) for doc_id in ranked[:k]]
    dcg = sum((2**gain - 1) / math.log2(rank + 2) for rank, gain in enumerate(gains))
    ideal = sorted(relevance.values(), reverse=True)[:k]
    idcg = sum((2**gain - 1) / math.log2(rank + 2) for rank, gain in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / len(relevant)


def reciprocal_rank(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    for rank, doc_id in enumerate(ranked[:k], start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


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
    query_ids = sorted(data.queries)
    texts = [data.queries[q] for q in query_ids]
    dense_vectors = dense().encode(texts)
    sparse_encoder = sparse()
    totals = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0}
    for position, query_id in enumerate(query_ids):
        indices, values = sparse_encoder.encode_query(texts[position])
        hits = index.search(
            dense=dense_vectors[position].tolist(),
            sparse=SparseVec(indices, values),
            access_tags=[EVAL_TAG],
            limit=100,
            mode=mode,
            candidates=candidates or settings.RETRIEVAL_CANDIDATES,
            fusion=fusion,  # type: ignore[arg-type]
        )
        ranked = [str(hit.payload["source"]) for hit in hits]
        relevance = data.qrels[query_id]
        relevant = {doc for doc, grade in relevance.items() if grade > 0}
        totals["ndcg@10"] += ndcg_at_k(ranked, relevance, 10)
        totals["recall@10"] += recall_at_k(ranked, relevant, 10)
        totals["recall@100"] += recall_at_k(ranked, relevant, 100)
    count = len(query_ids) or 1
    result = {name: round(value / count, 4) for name, value in totals.items()}
    result["queries"] = len(query_ids)
    return result


def golden_evaluate(path: Path, user: User) -> dict[str, float]:
    """Document-level recall@5 and MRR@10 of a company's own questions, as `user` would ask."""
    from assistant.retrieval import passages_for_user

    recall_total = mrr_total = 0.0
    questions = 0
    for line_number, item in enumerate(_jsonl(path), start=1):
        question, wanted = item.get("question"), item.get("sources")
        if not isinstance(question, str) or not isinstance(wanted, list) or not wanted:
            raise ValueError(
                f"{path}:{line_number}: each line needs a 'question' and a list of 'sources'"
            )
        passages = passages_for_user(user=user, query=question, k=10)
        ranked_sources: list[str] = []
        for passage in passages:
            if passage.source not in ranked_sources:
                ranked_sources.append(passage.source)

        def matches(source: str, wanted: list[object] = wanted) -> str | None:
            return next((str(w) for w in wanted if source.endswith(str(w))), None)

        found_at_5 = {matches(s) for s in ranked_sources[:5]} - {None}
        recall_total += len(found_at_5) / len(wanted)
        first = next(
            (rank for rank, s in enumerate(ranked_sources[:10], start=1) if matches(s)), None
        )
        mrr_total += 1.0 / first if first else 0.0
        questions += 1
    count = questions or 1
    return {
        "recall@5": round(recall_total / count, 4),
        "mrr@10": round(mrr_total / count, 4),
        "questions": questions,
    }
