"""The one search function the assistant reads the index through, with the user's access."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User

from config.metrics import record_retrieval
from ingestion.access import access_tags_for_user, index_scope
from ingestion.passage_vectors import QueryVectors, aquery_vectors, query_vectors
from ingestion.vector_index.base import SearchMode
from ingestion.vector_index.configured import vector_index

# Passages whose word sets overlap this much say the same thing; the weaker one is dropped.
NEAR_DUPLICATE_JACCARD = 0.8
# A document's second-best passage adds this share of its score to the document's rank:
# two passages that match say more than one.
SECOND_PASSAGE_WEIGHT = 0.1
# The word sets of this many recent passages are kept (up to about 20 MB) for near-duplicates.
PASSAGE_WORD_SETS_KEPT = 1024


@dataclass(frozen=True)
class Passage:
    point_id: str
    document_id: int
    version_id: int
    title: str
    source: str
    page: int | None
    heading: str
    chunk_index: int
    text: str
    score: float
    rank: int

    def as_json(self, *, n: int | None = None) -> dict[str, Any]:
        """As search ranked it, or as source `n` of an answer (citations carry no rank)."""
        position = {"rank": self.rank} if n is None else {"n": n}
        return {
            **position,
            "point_id": self.point_id,
            "document_id": self.document_id,
            "version_id": self.version_id,
            "title": self.title,
            "source": self.source,
            "page": self.page,
            "heading": self.heading,
            "chunk_index": self.chunk_index,
            "score": round(self.score, 6),
            "text": self.text,
        }


@lru_cache(maxsize=PASSAGE_WORD_SETS_KEPT)
def _words(text: str) -> frozenset[str]:
    # Kept: the same passages come back question after question, and finding their words
    # was two thirds of removing near-duplicates (1.3 of 1.9 ms a search of SciFact abstracts).
    return frozenset(re.findall(r"\w+", text.lower()))


def documents_first(passages: list[Passage], k: int) -> list[Passage]:
    """The top `k` passages grouped by document, documents in the order of their evidence.

    At least half the places go to the best passage of as many documents, so the answer (and
    the person) sees the best few documents rather than ten passages of one; the rest go to
    the next best passages, wherever they are.
    """
    by_document: dict[int, list[Passage]] = {}
    for passage in passages:  # best first
        by_document.setdefault(passage.document_id, []).append(passage)

    def evidence(group: list[Passage]) -> float:
        second = group[1].score if len(group) > 1 else 0.0
        return group[0].score + SECOND_PASSAGE_WEIGHT * second

    documents = sorted(by_document.values(), key=evidence, reverse=True)
    chosen = {id(group[0]) for group in documents[: (k + 1) // 2]}
    for passage in passages:
        if len(chosen) >= k:
            break
        chosen.add(id(passage))
    return [passage for group in documents for passage in group if id(passage) in chosen]


def _near_duplicates(words: frozenset[str], other_words: frozenset[str]) -> bool:
    """Whether two passages' words overlap by NEAR_DUPLICATE_JACCARD or more.

    Counted without building the union, and not at all when the sizes alone rule it out (the
    overlap is at most the smaller set, the union at least the larger): comparing every pair
    of a search's candidates this way was a few milliseconds of each answer's wait.
    """
    smaller, larger = sorted((len(words), len(other_words)))
    if larger == 0 or smaller / larger < NEAR_DUPLICATE_JACCARD:
        return False
    shared = len(words & other_words)
    return shared / (smaller + larger - shared) >= NEAR_DUPLICATE_JACCARD


def _collapse(passages: list[Passage], k: int) -> list[Passage]:
    """Drop near-duplicates: the same text in two documents, or overlapping neighbours."""
    kept: list[Passage] = []
    kept_words: list[frozenset[str]] = []
    for passage in passages:
        words = _words(passage.text)
        if not any(_near_duplicates(words, other_words) for other_words in kept_words):
            kept.append(passage)
            kept_words.append(words)
        if len(kept) == k:
            break
    return kept


@cache
def _reranker(path: str) -> Any:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(path, device="cpu", local_files_only=True)


def _rerank(query: str, passages: list[Passage]) -> list[Passage]:
    model = _reranker(settings.RERANKER_MODEL_PATH)
    scores = model.predict([(query, passage.text) for passage in passages])
    ordered = sorted(zip(passages, scores, strict=True), key=lambda pair: -float(pair[1]))
    return [Passage(**{**passage.__dict__, "score": float(score)}) for passage, score in ordered]


def passages_for_user(
    *,
    user: User | AnonymousUser,
    query: str,
    k: int | None = None,
    mode: SearchMode = "hybrid",
    document_ids: Collection[int] | None = None,
) -> list[Passage]:
    """The top passages this user may read for the query; the access filter runs in Qdrant.

    With `document_ids` only those documents are searched, inside the same access filter.
    """
    return passages_for_tags(
        access_tags=access_tags_for_user(user),
        query=query,
        k=k,
        mode=mode,
        document_ids=document_ids,
    )


@cache
def _search_pool() -> ThreadPoolExecutor:
    """Searches touch no database, so they run side by side, one per core at most.

    Side by side, the questions they embed meet in one batch of the question encoder, and
    the index's readers work in parallel; on the shared thread of `sync_to_async` each
    search would wait for every other request's database work as well.
    """
    return ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="search")


async def apassages_for_tags(
    *,
    access_tags: frozenset[str],
    query: str,
    k: int | None = None,
    mode: SearchMode = "hybrid",
    document_ids: Collection[int] | None = None,
) -> list[Passage]:
    """`passages_for_tags` for async callers: the question joins the encoder's next batch
    with every other question asked at that moment, then the search runs on the pool."""
    scope = index_scope(access_tags, only_active=True, document_ids=document_ids)
    if scope is None or not query.strip():
        return []
    vectors = await aquery_vectors(query)
    search = partial(
        passages_for_tags,
        access_tags=access_tags,
        query=query,
        k=k,
        mode=mode,
        vectors=vectors,
        document_ids=document_ids,
    )
    return await asyncio.get_running_loop().run_in_executor(_search_pool(), search)


def passages_for_tags(
    *,
    access_tags: frozenset[str],
    query: str,
    k: int | None = None,
    mode: SearchMode = "hybrid",
    vectors: QueryVectors | None = None,
    document_ids: Collection[int] | None = None,
) -> list[Passage]:
    """The search itself, for tags already read from the database by `access_tags_for_user`.

    It touches no database, so many of them may run at once on any thread.
    """
    scope = index_scope(access_tags, only_active=True, document_ids=document_ids)
    if scope is None or not query.strip():
        return []
    k = k or settings.RETRIEVAL_TOP_K
    started = time.perf_counter()
    vectors = vectors or query_vectors(query)
    hits = vector_index().search(
        dense=vectors.dense,
        sparse=vectors.sparse,
        scope=scope,
        limit=k * 3,
        mode=mode,
        candidates=settings.RETRIEVAL_CANDIDATES,
        fusion="rrf" if settings.RETRIEVAL_FUSION == "rrf" else "dbsf",
    )
    record_retrieval((time.perf_counter() - started) * 1000)
    passages = [
        Passage(
            point_id=str(hit.id),
            document_id=int(hit.payload["document_id"]),
            version_id=int(hit.payload["version_id"]),
            title=str(hit.payload.get("title", "")),
            source=str(hit.payload.get("source", "")),
            page=hit.payload.get("page"),
            heading=str(hit.payload.get("heading", "")),
            chunk_index=int(hit.payload.get("chunk_index", 0)),
            text=str(hit.payload.get("text", "")),
            score=float(hit.score),
            rank=0,
        )
        for hit in hits
    ]
    if settings.RERANKER_MODEL_PATH and passages:
        passages = _rerank(query, passages)
    collapsed = documents_first(_collapse(passages, len(passages)), k)
    return [Passage(**{**p.__dict__, "rank": rank}) for rank, p in enumerate(collapsed, start=1)]
