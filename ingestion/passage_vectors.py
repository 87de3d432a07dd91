"""Passages and questions as vectors: the encoders, the text each one sees, the index points."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from inference.embedder import DenseEncoder, SparseEncoder, dense_encoder, sparse_encoder
from ingestion.parsing import encoded_text
from ingestion.titles import file_label, file_name_words
from ingestion.vector_index.base import IndexPoint, SparseVec, point_id


def dense() -> DenseEncoder:
    return dense_encoder(
        settings.EMBEDDING_MODEL_PATH,
        settings.EMBEDDING_PRECISION,
        settings.EMBEDDING_BATCH_SIZE,
        backend=settings.EMBEDDING_BACKEND,
        cache_dir=str(settings.EMBEDDING_CACHE_DIR),
    )


def sparse() -> SparseEncoder:
    return sparse_encoder()


HEADING_SEPARATOR = " > "


def passage_for_embedding(*, title: str, heading: str, text: str, label: str = "") -> str:
    """What the dense encoder sees: the title, file label and heading give a passage context.

    A heading path that starts with the title does not repeat it.
    """
    head = f"{title} ({label})" if title and label else title or label
    path = [part for part in heading.split(HEADING_SEPARATOR) if part]
    if path and head and path[0].casefold() == title.casefold():
        path = path[1:]
    parts = [head] if head else []
    if path:
        parts.append(HEADING_SEPARATOR.join(path))
    parts.append(encoded_text(text))
    return "\n".join(parts)


def passage_for_lexical(
    *, title: str, heading: str, text: str, file_name: str = "", context: str = ""
) -> str:
    """What BM25 sees: the same, plus the file's name (people search by it, case numbers
    and all) and what the whole document is about (no length limit here)."""
    embedded = passage_for_embedding(title=title, heading=heading, text=text)
    return "\n".join(part for part in (file_name_words(file_name), embedded, context) if part)


@dataclass(frozen=True)
class QueryVectors:
    dense: list[float]
    sparse: SparseVec


def query_vectors(text: str) -> QueryVectors:
    indices, values = sparse().encode_query(text)
    return QueryVectors(dense=dense().encode_query(text), sparse=SparseVec(indices, values))


async def aquery_vectors(text: str) -> QueryVectors:
    """`query_vectors` for async callers: no thread waits while the question is encoded, so
    every question asked at the same moment joins one batch of the encoder."""
    dense_vector = await asyncio.wrap_future(dense().encode_query_later(text))
    indices, values = sparse().encode_query(text)
    return QueryVectors(dense=dense_vector, sparse=SparseVec(indices, values))


@dataclass(frozen=True)
class IndexedPassage:
    """A passage with everything its index point carries."""

    document_id: int
    version_id: int
    chunk_index: int
    title: str
    source: str
    groups: list[str]
    page: int | None
    heading: str
    text: str
    active: bool
    # The name of the uploaded file.
    file_name: str = ""
    # What every passage of the document carries into lexical search: running headers and
    # the document's opening words (`DocumentVersion.search_context`).
    context: str = ""


def passage_points(passages: Sequence[IndexedPassage]) -> list[IndexPoint]:
    """Embed passages (dense and sparse, in one batch) into the points the index stores."""
    texts = [
        passage_for_embedding(
            title=passage.title,
            heading=passage.heading,
            text=passage.text,
            label=file_label(passage.file_name, passage.title),
        )
        for passage in passages
    ]
    vectors = dense().encode(texts)
    sparse_encoder = sparse()
    points = []
    for passage, vector in zip(passages, vectors, strict=True):
        lexical = passage_for_lexical(
            title=passage.title,
            heading=passage.heading,
            text=passage.text,
            file_name=passage.file_name,
            context=passage.context,
        )
        indices, values = sparse_encoder.encode_document(lexical)
        points.append(
            IndexPoint(
                id=point_id(passage.version_id, passage.chunk_index),
                dense=vector.tolist(),
                sparse=SparseVec(indices, values),
                payload={
                    "document_id": passage.document_id,
                    "version_id": passage.version_id,
                    "groups": passage.groups,
                    "title": passage.title,
                    "source": passage.source,
                    "page": passage.page,
                    "heading": passage.heading,
                    "chunk_index": passage.chunk_index,
                    "text": passage.text,
                    "active": passage.active,
                },
            )
        )
    return points
