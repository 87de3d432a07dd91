"""The process's one handle on the configured vector index.

Embedded engines lock their folder, so each process opens the index once and shares it.
For the edge engine, `<VECTOR_INDEX_DIR>.current` names the shard folder to open after a
rebuild (ingestion/reindex.py writes it).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from inference.embedder import embedding_dimension, encoder_identity
from ingestion.vector_index import VectorIndex, VectorIndexError, open_index

if TYPE_CHECKING:
    from ingestion.vector_index.server import CollectionLayout

POINTER_SUFFIX = ".current"


def current_index_dir(base: Path) -> Path:
    """The shard folder to open: the one `<base>.current` names, else `base` itself."""
    pointer = pointer_file(base)
    if not pointer.exists():
        return base
    name = pointer.read_text(encoding="utf-8").strip()
    target = base.parent / name
    if not name or "/" in name or not target.is_dir():
        # Opening `base` instead would silently serve an empty or outdated index.
        raise VectorIndexError(f"{pointer} names {name!r}, which is not a shard folder.")
    return target


def pointer_file(base: Path) -> Path:
    return base.with_name(base.name + POINTER_SUFFIX)


_index: VectorIndex | None = None
_index_lock = threading.Lock()


def vector_index() -> VectorIndex:
    """Open the configured index once per process (embedded engines lock their folder)."""
    global _index
    with _index_lock:
        if _index is None:
            if settings.VECTOR_BACKEND == "edge":
                _index = open_index(
                    backend="edge",
                    path=current_index_dir(settings.VECTOR_INDEX_DIR),
                    collection=settings.VECTOR_COLLECTION,
                    dense_size=embedding_dimension(settings.EMBEDDING_MODEL_PATH),
                    encoder=encoder_identity(
                        settings.EMBEDDING_MODEL_PATH, settings.EMBEDDING_PRECISION
                    ),
                )
            else:
                _index = open_index(
                    backend="server",
                    url=settings.QDRANT_URL or None,
                    path=Path(settings.QDRANT_PATH) if settings.QDRANT_PATH else None,
                    api_key=settings.QDRANT_API_KEY or None,
                    collection=settings.VECTOR_COLLECTION,
                    dense_size=embedding_dimension(settings.EMBEDDING_MODEL_PATH),
                    layout=collection_layout(),
                    encoder=encoder_identity(
                        settings.EMBEDDING_MODEL_PATH, settings.EMBEDDING_PRECISION
                    ),
                )
        return _index


def collection_layout() -> CollectionLayout:
    """Shards, replication and write consistency of a new collection, from settings."""
    from ingestion.vector_index.server import CollectionLayout

    return CollectionLayout(
        shards=settings.VECTOR_SHARDS,
        replication=settings.VECTOR_REPLICATION,
        write_consistency=settings.VECTOR_WRITE_CONSISTENCY,
    )


def vector_index_close() -> None:
    global _index
    with _index_lock:
        if _index is not None:
            _index.close()
            _index = None
