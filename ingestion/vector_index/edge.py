"""Qdrant embedded in the process through qdrant-edge: the standalone default."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as edge

from ingestion.vector_index.base import (
    DENSE_VECTOR,
    SPARSE_VECTOR,
    FusionMethod,
    Hit,
    IndexLockedError,
    IndexPoint,
    IndexUpkeep,
    PointScope,
    SearchMode,
    SparseVec,
    VectorIndexError,
    check_search_arguments,
    deletion_scope,
    encoder_check,
)

CONFIG_FILE = "edge_config.json"
LOCK_FILE = ".lock"
# The encoder that wrote the shard's vectors (inference.embedder.encoder_identity).
ENCODER_FILE = "encoder.json"

# Points that only sit in plain (not yet HNSW-indexed) segments are searched by brute
# force: cheap for a few thousand, about 12 ms per query at 100k on two cores. Past this
# many of them the shard should be optimized. qdrant-edge keeps the interpreter lock
# while it optimizes (5 s for 30k points on two cores, about a minute at 100k), stalling
# every thread of the process; hence few, large steps, and in a serving process only at
# a quiet moment (defer_optimize).
UNINDEXED_POINTS_BEFORE_OPTIMIZE = 20_000
# Even a process that is never quiet optimizes past this, before search slows too much.
UNINDEXED_POINTS_LIMIT = 150_000

# Fixed by Qdrant's RRF default, so that both backends rank alike.
RRF_K = 2

SCROLL_PAGE = 1_000


class EdgeIndex:
    """A qdrant-edge shard in a folder that this process holds exclusively."""

    def __init__(
        self, *, path: Path, dense_size: int, encoder: dict[str, Any] | None = None
    ) -> None:
        self._path = path
        self._lock_fd: int | None = _lock_folder(path)
        # The shard is not documented as safe for concurrent updates; serialising the
        # writes keeps an optimize or a flush from interleaving with another writer.
        self._write_lock = threading.Lock()
        self._shard: edge.EdgeShard | None = None
        self._optimize_deferred = False
        self._optimizing = False
        self._last_optimized_at: float | None = None
        self._last_optimize_s: float | None = None
        try:
            self._shard = _load_or_create_shard(path, dense_size)
            if encoder is not None:
                _encoder_record(path, encoder)
            self._ensure_payload_indexes()
        except BaseException:
            self.close()
            raise

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        """Store the points durably; now and then also builds the search graph (slow)."""
        if not points:
            return
        edge_points = [
            edge.Point(
                point.id,
                {
                    DENSE_VECTOR: list(point.dense),
                    SPARSE_VECTOR: edge.SparseVector(
                        indices=list(point.sparse.indices), values=list(point.sparse.values)
                    ),
                },
                point.payload,
            )
            for point in points
        ]
        with self._write_lock, _edge_errors("store passages"):
            shard = self._current_shard()
            shard.update(edge.UpdateOperation.upsert_points(edge_points))
            shard.flush()
            limit = (
                UNINDEXED_POINTS_LIMIT
                if self._optimize_deferred
                else UNINDEXED_POINTS_BEFORE_OPTIMIZE
            )
            if _unindexed_points(shard) > limit:
                self._optimize_locked(shard)

    def optimize(self) -> None:
        """Run the segment optimizers now, e.g. after a bulk import, not at the threshold."""
        with self._write_lock, _edge_errors("optimize the index"):
            self._optimize_locked(self._current_shard())

    def defer_optimize(self) -> None:
        """Upserts stop optimizing at the threshold: a serving process calls optimize() at
        a quiet moment instead (ingestion.index_upkeep), so that no answer stalls."""
        self._optimize_deferred = True

    def upkeep(self) -> IndexUpkeep | None:
        unindexed = _unindexed_points(self._current_shard())
        return IndexUpkeep(
            unindexed_points=unindexed,
            optimize_due=unindexed > UNINDEXED_POINTS_BEFORE_OPTIMIZE,
            optimizing=self._optimizing,
            deferred_to_quiet_moments=self._optimize_deferred,
            last_optimized_at=self._last_optimized_at,
            last_optimize_s=self._last_optimize_s,
        )

    def _optimize_locked(self, shard: edge.EdgeShard) -> None:
        self._optimizing = True
        started = time.monotonic()
        try:
            shard.optimize()
            shard.flush()
        finally:
            self._optimizing = False
            self._last_optimize_s = round(time.monotonic() - started, 2)
            self._last_optimized_at = time.time()

    def search(
        self,
        *,
        dense: list[float] | None,
        sparse: SparseVec | None,
        scope: PointScope,
        limit: int = 10,
        mode: SearchMode = "hybrid",
        candidates: int = 100,
        fusion: FusionMethod = "dbsf",
    ) -> list[Hit]:
        check_search_arguments(
            dense=dense, sparse=sparse, mode=mode, limit=limit, candidates=candidates
        )
        readable = _filter(scope)
        dense_query = edge.Query.Nearest(list(dense or []), using=DENSE_VECTOR)
        sparse_query = edge.Query.Nearest(
            edge.SparseVector(
                indices=list(sparse.indices if sparse else []),
                values=list(sparse.values if sparse else []),
            ),
            using=SPARSE_VECTOR,
        )
        if mode == "hybrid":
            fused = edge.Fusion.Rrf(k=RRF_K) if fusion == "rrf" else edge.Fusion.Dbsf()
            request = edge.QueryRequest(
                limit=limit,
                prefetches=[
                    edge.Prefetch(limit=candidates, query=dense_query, filter=readable),
                    edge.Prefetch(limit=candidates, query=sparse_query, filter=readable),
                ],
                # The stubs type this as the Fusion namespace; the binding takes its members.
                query=fused,  # type: ignore[arg-type]
                filter=readable,
                with_payload=True,
            )
        else:
            request = edge.QueryRequest(
                limit=limit,
                query=dense_query if mode == "dense" else sparse_query,
                filter=readable,
                with_payload=True,
            )
        with _edge_errors("search the index"):
            found = self._current_shard().query(request)
        return [
            Hit(id=str(point.id), score=point.score, payload=point.payload or {}) for point in found
        ]

    def set_payload(
        self, *, values: dict[str, Any], document_id: int, version_id: int | None = None
    ) -> None:
        selected = _filter(PointScope(document_id=document_id, version_id=version_id))
        with self._write_lock, _edge_errors("update passages"):
            shard = self._current_shard()
            shard.update(edge.UpdateOperation.set_payload_by_filter(selected, values))
            shard.flush()

    def activate_versions(self, version_ids: Sequence[int]) -> None:
        if not version_ids:
            return
        selected = _filter(PointScope(version_ids=list(version_ids)))
        with self._write_lock, _edge_errors("activate passages"):
            shard = self._current_shard()
            shard.update(edge.UpdateOperation.set_payload_by_filter(selected, {"active": True}))
            shard.flush()

    def delete(self, *, document_id: int | None = None, version_id: int | None = None) -> None:
        selected = _filter(deletion_scope(document_id=document_id, version_id=version_id))
        with self._write_lock, _edge_errors("delete passages"):
            shard = self._current_shard()
            shard.update(edge.UpdateOperation.delete_points_by_filter(selected))
            shard.flush()

    def count(
        self,
        *,
        document_id: int | None = None,
        version_id: int | None = None,
        only_active: bool = False,
    ) -> int:
        scope = PointScope(
            document_id=document_id, version_id=version_id, active=True if only_active else None
        )
        with _edge_errors("count passages"):
            return self._current_shard().count(edge.CountRequest(exact=True, filter=_filter(scope)))

    def point_ids(self, *, version_id: int) -> list[str]:
        selected = _filter(PointScope(version_id=version_id))
        ids: list[str] = []
        offset: edge.PointId | None = None
        with _edge_errors("list passages"):
            shard = self._current_shard()
            while True:
                records, offset = shard.scroll(
                    edge.ScrollRequest(
                        offset=offset, limit=SCROLL_PAGE, filter=selected, with_payload=False
                    )
                )
                ids.extend(str(record.id) for record in records)
                if offset is None:
                    return ids

    def close(self) -> None:
        with self._write_lock:
            shard, self._shard = self._shard, None
            try:
                if shard is not None:
                    with _edge_errors("close the index"):
                        shard.flush()
                        shard.close()
            finally:
                self._release_folder()

    def _current_shard(self) -> edge.EdgeShard:
        if self._shard is None:
            raise VectorIndexError(f"The index at {self._path} is closed.")
        return self._shard

    def _ensure_payload_indexes(self) -> None:
        # Only the ACL tags earn per-value search graphs (filtered HNSW); graphs per
        # document, version or the active flag would double the indexing time for nothing.
        wanted: dict[str, edge.PayloadSchemaType | edge.PayloadSchemaParams] = {
            "groups": edge.PayloadSchemaType.Keyword,
            "document_id": edge.IntegerIndexParams(lookup=True, range=False, enable_hnsw=False),
            "version_id": edge.IntegerIndexParams(lookup=True, range=False, enable_hnsw=False),
            "active": edge.BoolIndexParams(enable_hnsw=False),
        }
        with _edge_errors("prepare the index"):
            shard = self._current_shard()
            existing = set(shard.info().payload_schema)
            for field, schema in wanted.items():
                if field not in existing:
                    shard.update(edge.UpdateOperation.create_field_index(field, schema))
            shard.flush()

    def _release_folder(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _load_or_create_shard(path: Path, dense_size: int) -> edge.EdgeShard:
    config = edge.EdgeConfig(
        vectors={
            DENSE_VECTOR: edge.EdgeVectorParams(size=dense_size, distance=edge.Distance.Cosine)
        },
        sparse_vectors={SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        # int8 copies of the dense vectors (rescored with the originals) halve both the
        # filtered search time and the time to build the graph on a small CPU.
        quantization_config=edge.ScalarQuantizationConfig(
            edge.ScalarType.Int8, quantile=0.99, memory=edge.Memory.Cached
        ),
    )
    with _edge_errors(f"open the index at {path}"):
        if (path / CONFIG_FILE).exists():
            return edge.EdgeShard.load(str(path), config)
        return edge.EdgeShard.create(str(path), config)


def _encoder_record(path: Path, encoder: dict[str, Any]) -> None:
    """Check the shard's encoder record against `encoder`; write it where there is none."""
    record = path / ENCODER_FILE
    try:
        recorded = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError) as error:
        raise VectorIndexError(
            f"The index's encoder record {record} is unreadable: {error}"
        ) from error
    encoder_check(recorded, encoder, f"at {path}")
    if recorded is None:
        record.write_text(json.dumps(encoder, sort_keys=True) + "\n", encoding="utf-8")


def _lock_folder(path: Path) -> int:
    """Take the folder for this process, or say which process has it.

    qdrant-edge refuses a second opener through its WAL lock, but only after touching the
    folder and with an opaque message; this lock comes first and names the holder.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise VectorIndexError(f"The index folder {path} cannot be opened: {error}") from error
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock_fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(lock_fd)
        raise IndexLockedError(
            f"The embedded index at {path} is in use by another process (pid {holder})."
        ) from None
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return lock_fd


def _unindexed_points(shard: edge.EdgeShard) -> int:
    # Every point carries a dense and a sparse vector; sparse vectors are always indexed,
    # dense ones only once their segment has been optimized into an HNSW segment.
    info = shard.info()
    return max(0, 2 * info.points_count - info.indexed_vectors_count)


def _filter(scope: PointScope) -> edge.Filter:
    conditions: list[edge.ConditionType] = []
    if scope.groups_any is not None:
        conditions.append(edge.FieldCondition("groups", match=edge.MatchAny(scope.groups_any)))
    if scope.document_id is not None:
        conditions.append(
            edge.FieldCondition("document_id", match=edge.MatchValue(scope.document_id))
        )
    if scope.document_ids is not None:
        conditions.append(
            edge.FieldCondition("document_id", match=edge.MatchAny(scope.document_ids))
        )
    if scope.version_id is not None:
        conditions.append(
            edge.FieldCondition("version_id", match=edge.MatchValue(scope.version_id))
        )
    if scope.version_ids is not None:
        conditions.append(edge.FieldCondition("version_id", match=edge.MatchAny(scope.version_ids)))
    if scope.active is not None:
        # qdrant-edge 0.9 reads a Python bool as the integer 0/1, which never equals a
        # stored JSON boolean; numpy's bool reaches Qdrant as a real boolean.
        active = edge.MatchValue(np.bool_(scope.active))  # type: ignore[arg-type]
        conditions.append(edge.FieldCondition("active", match=active))
    return edge.Filter(must=conditions)


@contextmanager
def _edge_errors(action: str) -> Iterator[None]:
    try:
        yield
    except VectorIndexError:
        raise
    except Exception as error:  # qdrant-edge raises bare Exception for every failure
        raise VectorIndexError(f"Could not {action}: {error}") from error
