"""The vector index of passages: one small interface, an embedded and a server backend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ingestion.vector_index.base import (
    EncoderMismatchError,
    FusionMethod,
    Hit,
    IndexLockedError,
    IndexPoint,
    IndexUpkeep,
    SearchMode,
    SparseVec,
    VectorIndex,
    VectorIndexError,
    point_id,
)

if TYPE_CHECKING:
    from ingestion.vector_index.server import CollectionLayout

__all__ = [
    "EncoderMismatchError",
    "FusionMethod",
    "Hit",
    "IndexLockedError",
    "IndexPoint",
    "IndexUpkeep",
    "SearchMode",
    "SparseVec",
    "VectorIndex",
    "VectorIndexError",
    "open_index",
    "point_id",
]


def open_index(
    *,
    backend: Literal["edge", "server"],
    path: Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    collection: str = "passages",
    dense_size: int = 384,
    layout: CollectionLayout | None = None,
    encoder: dict[str, Any] | None = None,
) -> VectorIndex:
    """Open the index, creating its shard or collection on first use.

    edge: an embedded shard in `path`, held by this process alone (`collection` is not
    used: the folder is the collection). server: the Qdrant at `url`, or with `path`
    instead, qdrant-client's local mode in that folder. `layout` (shards, replication) applies
    when the server backend creates the collection. `encoder`
    (inference.embedder.encoder_identity) is recorded with a new index and checked against
    an existing one's record: an index another model wrote is refused.
    """
    # Backends are imported here so that a deployment loads only the one it uses.
    if backend == "edge":
        if path is None:
            raise VectorIndexError("The embedded index needs a folder (path).")
        from ingestion.vector_index.edge import EdgeIndex

        return EdgeIndex(path=path, dense_size=dense_size, encoder=encoder)
    if backend == "server":
        from ingestion.vector_index.server import ServerIndex

        if url is not None:
            return ServerIndex.connect(
                url=url,
                api_key=api_key,
                collection=collection,
                dense_size=dense_size,
                layout=layout,
                encoder=encoder,
            )
        if path is not None:
            return ServerIndex.open_folder(
                path=path, collection=collection, dense_size=dense_size, encoder=encoder
            )
        raise VectorIndexError("The server index needs a URL (or a folder for local mode).")
    raise VectorIndexError(f"Unknown vector index backend {backend!r}.")
