"""Rebuilding the whole vector index from the stored passages, e.g. for a new embedding model.

The passages already sit in the database as Chunk rows, so nothing is parsed again: each
current version's chunks are embedded with the configured model and written to a new
collection (server) or a new shard folder (edge), which then replaces the old one in a
single step.

Server: `VECTOR_COLLECTION` becomes an alias; searches keep reading the old collection
until the alias moves, in one request, to the complete new one. The very first rebuild
of an installation turns a plain collection into an alias, and for that one step (a
collection deletion, then the alias creation) search has nothing to read.

Edge: the shard folder is held by the one process that serves, so the rebuild runs
while that process is stopped; the file `<VECTOR_INDEX_DIR>.current` then names the
shard folder to open (see `current_index_dir`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from inference.embedder import encoder_identity
from ingestion.access import document_access_tags
from ingestion.models import Chunk, Document, VersionStatus
from ingestion.passage_vectors import IndexedPassage, dense, passage_points
from ingestion.vector_index import IndexLockedError, IndexPoint, VectorIndexError
from ingestion.vector_index.configured import (
    collection_layout,
    current_index_dir,
    pointer_file,
    vector_index_close,
)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RebuildReport:
    backend: str
    target: str
    previous: str | None
    previous_removed: bool
    versions: int
    passages: int
    caught_up_documents: int
    seconds: float


def index_rebuild(
    *,
    collection: str | None = None,
    keep_previous: bool = False,
    progress: Progress | None = None,
) -> RebuildReport:
    """Embed every current passage again into a new collection or shard and switch to it.

    `collection` names the new collection (server) or the new shard folder's suffix
    (edge); by default it is made from the time. The previous one is removed after the
    switch unless `keep_previous`.
    """
    started = time.perf_counter()
    if settings.VECTOR_BACKEND == "edge":
        report = _rebuild_edge(name=collection, keep_previous=keep_previous, progress=progress)
    else:
        report = _rebuild_server(name=collection, keep_previous=keep_previous, progress=progress)
    return RebuildReport(**{**report, "seconds": round(time.perf_counter() - started, 1)})


def _rebuild_edge(
    *, name: str | None, keep_previous: bool, progress: Progress | None
) -> dict[str, Any]:
    from ingestion.vector_index.edge import EdgeIndex

    base = Path(settings.VECTOR_INDEX_DIR)
    # This process lets go of the shard it may hold, so that the lock below tells
    # whether another process (a running server) still serves it.
    vector_index_close()
    previous = current_index_dir(base)
    target = base.parent / f"{base.name}-{name or _stamp()}"
    if target.exists() or target == previous:
        raise VectorIndexError(f"{target} already exists; choose another name.")
    with _folder_held(previous):
        new_index = EdgeIndex(
            path=target,
            dense_size=dense().dimension,
            encoder=encoder_identity(settings.EMBEDDING_MODEL_PATH, settings.EMBEDDING_PRECISION),
        )
        try:
            versions, passages = _copy_current_passages(new_index.upsert, progress)
            new_index.optimize()
        finally:
            new_index.close()
        _pointer_switch(base, target)
    previous_removed = False
    if not keep_previous and previous.exists():
        shutil.rmtree(previous)
        previous_removed = True
    return {
        "backend": "edge",
        "target": str(target),
        "previous": str(previous),
        "previous_removed": previous_removed,
        "versions": versions,
        "passages": passages,
        "caught_up_documents": 0,
    }


def _rebuild_server(
    *, name: str | None, keep_previous: bool, progress: Progress | None
) -> dict[str, Any]:
    from qdrant_client import QdrantClient, models

    from ingestion.vector_index.server import REQUEST_TIMEOUT_SECONDS, ServerIndex

    alias = settings.VECTOR_COLLECTION
    local = not settings.QDRANT_URL
    if local:
        # Local mode locks its folder to one client: this process's own must go first.
        vector_index_close()
        client = QdrantClient(path=settings.QDRANT_PATH)
    else:
        client = QdrantClient(
            url=settings.QDRANT_URL,
            api_key=settings.QDRANT_API_KEY or None,
            prefer_grpc=False,
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
    try:
        aliased = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        collections = {c.name for c in client.get_collections().collections}
        previous = aliased.get(alias) or (alias if alias in collections else None)
        target = name or f"{alias}-{_stamp()}"
        if target == alias or target in collections or target in aliased:
            raise VectorIndexError(f"The collection {target!r} already exists; choose another.")
        since = timezone.now()
        # The client stays open for the alias switch: ServerIndex would close it.
        new_index = ServerIndex(
            client,
            collection=target,
            dense_size=dense().dimension,
            local=local,
            layout=collection_layout(),
            encoder=encoder_identity(settings.EMBEDDING_MODEL_PATH, settings.EMBEDDING_PRECISION),
        )
        versions, passages = _copy_current_passages(new_index.upsert, progress)
        operations: list[models.AliasOperations] = []
        if alias in aliased:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
            )
        elif previous is not None:
            # A plain collection holds the name the alias needs.
            client.delete_collection(previous)
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=target, alias_name=alias)
            )
        )
        # One request: searches see the old collection or the new one, never neither.
        client.update_collection_aliases(change_aliases_operations=operations)
        caught_up = _catch_up(new_index.upsert, new_index.delete, new_index.set_payload, since)
        previous_removed = previous == alias
        if previous is not None and previous != alias and not keep_previous:
            client.delete_collection(previous)
            previous_removed = True
    finally:
        client.close()
    return {
        "backend": "server",
        "target": target,
        "previous": previous,
        "previous_removed": previous_removed,
        "versions": versions,
        "passages": passages,
        "caught_up_documents": caught_up,
    }


def _served_chunks() -> Any:
    """The chunks search serves: those of each live document's current, ready version."""
    return Chunk.objects.filter(
        version__status=VersionStatus.READY,
        version__document__deleted_at__isnull=True,
        version__document__current_version=F("version"),
    )


def _copy_current_passages(
    upsert: Callable[[Sequence[IndexPoint]], None], progress: Progress | None
) -> tuple[int, int]:
    chunks = _served_chunks()
    total = chunks.count()
    done = 0
    versions: set[int] = set()
    if progress is not None:
        progress(0, total)
    for batch in _passage_batches(chunks.order_by("version_id", "index"), active=True):
        upsert(passage_points(batch))
        versions.update(passage.version_id for passage in batch)
        done += len(batch)
        if progress is not None:
            progress(done, total)
    return len(versions), done


def _passage_batches(chunks: Any, *, active: bool) -> Iterator[list[IndexedPassage]]:
    tags_of: dict[int, list[str]] = {}
    batch: list[IndexedPassage] = []
    for chunk in chunks.select_related("version__document").iterator(chunk_size=2000):
        document = chunk.version.document
        if document.id not in tags_of:
            tags_of[document.id] = document_access_tags(document)
        batch.append(
            IndexedPassage(
                document_id=document.id,
                version_id=chunk.version_id,
                chunk_index=chunk.index,
                title=document.title,
                source=document.source_path,
                groups=tags_of[document.id],
                page=chunk.page,
                heading=chunk.heading,
                text=chunk.text,
                active=active,
                file_name=chunk.version.original_name,
                context=chunk.version.search_context,
            )
        )
        if len(batch) >= settings.INGEST_EMBED_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _catch_up(
    upsert: Callable[[Sequence[IndexPoint]], None],
    delete: Callable[..., None],
    set_payload: Callable[..., None],
    since: datetime,
) -> int:
    """Apply to the new collection what changed in the database while it was being built.

    Ingestion workers wrote those changes to the old collection. Documents touched since
    the copy began (new current version, readers changed, deleted) are written again;
    versions still being embedded get their chunks, so that their activation, which
    now lands in the new collection, finds every passage.
    """
    changed = list(Document.objects.filter(updated_at__gte=since))
    for document in changed:
        if document.deleted_at is not None:
            delete(document_id=document.id)
            continue
        set_payload(values={"groups": document_access_tags(document)}, document_id=document.id)
        for version_id in document.versions.exclude(
            id=document.current_version_id or 0
        ).values_list("id", flat=True):
            delete(version_id=version_id)
    served = _served_chunks().filter(version__document__in=[d.id for d in changed])
    in_progress = Chunk.objects.filter(
        version__status=VersionStatus.EMBEDDING, version__document__deleted_at__isnull=True
    )
    for chunks, active in ((served, True), (in_progress, False)):
        for batch in _passage_batches(chunks.order_by("version_id", "index"), active=active):
            upsert(passage_points(batch))
    return len(changed)


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _pointer_switch(base: Path, target: Path) -> None:
    """Name `target` in the pointer file; a reader sees the old name or the new, whole."""
    pointer = pointer_file(base)
    staged = pointer.with_name(pointer.name + ".tmp")
    with staged.open("w", encoding="utf-8") as out:
        out.write(target.name + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(staged, pointer)
    directory = os.open(base.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextmanager
def _folder_held(path: Path) -> Iterator[None]:
    """Hold the shard folder's lock so that no server opens it while the rebuild runs."""
    path.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLockedError(
                f"The index at {path} is in use by a running server; stop it, then re-index."
            ) from None
        yield
    finally:
        os.close(lock_fd)
