"""A Qdrant server or cluster through qdrant-client: the cluster backend.

qdrant-client's local mode (a folder instead of a URL) speaks the same API and stands in
for the server in tests.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ApiException, UnexpectedResponse

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

UPSERT_BATCH = 256
SCROLL_PAGE = 1_000
REQUEST_TIMEOUT_SECONDS = 30
# The collection a new installation's name first points to (an alias of that name).
FIRST_COLLECTION_SUFFIX = "-v1"
# The collection metadata key of the encoder record (inference.embedder.encoder_identity).
ENCODER_METADATA_KEY = "encoder"


@dataclass(frozen=True)
class CollectionLayout:
    """How a new collection is spread over a distributed Qdrant.

    shards: parts the points are split into, spread over the peers; replication: copies of
    each shard on different peers (2 survives the loss of one); write_consistency: copies
    that must confirm a write before it counts as done. A single server uses 1, 1, 1.
    """

    shards: int = 1
    replication: int = 1
    write_consistency: int = 1

    def __post_init__(self) -> None:
        if self.shards < 1 or self.replication < 1:
            raise VectorIndexError("VECTOR_SHARDS and VECTOR_REPLICATION must be at least 1.")
        if not 1 <= self.write_consistency <= self.replication:
            raise VectorIndexError(
                "VECTOR_WRITE_CONSISTENCY must be between 1 and VECTOR_REPLICATION "
                f"({self.replication}); it is {self.write_consistency}."
            )


class ServerIndex:
    """One collection of a Qdrant server, cluster, or qdrant-client local folder.

    With `behind_alias`, a name that does not exist yet is created as an alias of a
    collection `<name>-v1`, so that a later re-index only ever moves the alias (one
    atomic request) and never has to delete a collection that holds the name.
    """

    def __init__(
        self,
        client: QdrantClient,
        *,
        collection: str,
        dense_size: int,
        local: bool,
        layout: CollectionLayout | None = None,
        behind_alias: bool = False,
        encoder: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._collection = collection
        self._layout = layout or CollectionLayout()
        self._behind_alias = behind_alias
        # Local mode is not safe for a reader and a writer at once (searches index arrays
        # that an upsert is growing); a server is, so its requests run concurrently.
        self._access: AbstractContextManager[Any] = threading.Lock() if local else nullcontext()
        try:
            with self._request("prepare the index"):
                self._ensure_collection(dense_size)
                if encoder is not None:
                    self._encoder_record(encoder)
        except BaseException:
            client.close()
            raise

    @classmethod
    def connect(
        cls,
        *,
        url: str,
        api_key: str | None,
        collection: str,
        dense_size: int,
        layout: CollectionLayout | None = None,
        encoder: dict[str, Any] | None = None,
    ) -> ServerIndex:
        client = QdrantClient(
            url=url, api_key=api_key, prefer_grpc=False, timeout=REQUEST_TIMEOUT_SECONDS
        )
        return cls(
            client,
            collection=collection,
            dense_size=dense_size,
            local=False,
            layout=layout,
            behind_alias=True,
            encoder=encoder,
        )

    @classmethod
    def open_folder(
        cls,
        *,
        path: Path,
        collection: str,
        dense_size: int,
        encoder: dict[str, Any] | None = None,
    ) -> ServerIndex:
        try:
            client = QdrantClient(path=str(path))
        except RuntimeError as error:
            # qdrant-client holds a portalocker lock on the folder and reports a second
            # opener this way, without naming the holder.
            if "already accessed" in str(error):
                raise IndexLockedError(
                    f"The embedded index at {path} is in use by another process."
                ) from error
            raise VectorIndexError(f"Could not open the index at {path}: {error}") from error
        return cls(
            client,
            collection=collection,
            dense_size=dense_size,
            local=True,
            behind_alias=True,
            encoder=encoder,
        )

    def upkeep(self) -> IndexUpkeep | None:
        return None  # a Qdrant server runs its optimizers itself, off this process

    def optimize(self) -> None:
        return None  # as above: nothing for this process to run

    def upsert(self, points: Sequence[IndexPoint]) -> None:
        structs = [
            models.PointStruct(
                id=point.id,
                vector={
                    DENSE_VECTOR: list(point.dense),
                    SPARSE_VECTOR: models.SparseVector(
                        indices=list(point.sparse.indices), values=list(point.sparse.values)
                    ),
                },
                payload=point.payload,
            )
            for point in points
        ]
        with self._request("store passages"):
            for start in range(0, len(structs), UPSERT_BATCH):
                self._client.upsert(
                    self._collection, points=structs[start : start + UPSERT_BATCH], wait=True
                )

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
        dense_query = list(dense or [])
        sparse_query = models.SparseVector(
            indices=list(sparse.indices if sparse else []),
            values=list(sparse.values if sparse else []),
        )
        with self._request("search the index"):
            if mode == "hybrid":
                response = self._client.query_points(
                    self._collection,
                    prefetch=[
                        models.Prefetch(
                            query=dense_query, using=DENSE_VECTOR, limit=candidates, filter=readable
                        ),
                        models.Prefetch(
                            query=sparse_query,
                            using=SPARSE_VECTOR,
                            limit=candidates,
                            filter=readable,
                        ),
                    ],
                    query=models.FusionQuery(
                        fusion=models.Fusion.RRF if fusion == "rrf" else models.Fusion.DBSF
                    ),
                    query_filter=readable,
                    limit=limit,
                    with_payload=True,
                )
            else:
                response = self._client.query_points(
                    self._collection,
                    query=dense_query if mode == "dense" else sparse_query,
                    using=DENSE_VECTOR if mode == "dense" else SPARSE_VECTOR,
                    query_filter=readable,
                    limit=limit,
                    with_payload=True,
                )
        return [
            Hit(id=str(point.id), score=point.score, payload=point.payload or {})
            for point in response.points
        ]

    def set_payload(
        self, *, values: dict[str, Any], document_id: int, version_id: int | None = None
    ) -> None:
        selected = _filter(PointScope(document_id=document_id, version_id=version_id))
        with self._request("update passages"):
            self._client.set_payload(self._collection, payload=values, points=selected, wait=True)

    def activate_versions(self, version_ids: Sequence[int]) -> None:
        if not version_ids:
            return
        selected = _filter(PointScope(version_ids=list(version_ids)))
        with self._request("activate passages"):
            self._client.set_payload(
                self._collection, payload={"active": True}, points=selected, wait=True
            )

    def delete(self, *, document_id: int | None = None, version_id: int | None = None) -> None:
        selected = _filter(deletion_scope(document_id=document_id, version_id=version_id))
        with self._request("delete passages"):
            self._client.delete(
                self._collection, points_selector=models.FilterSelector(filter=selected), wait=True
            )

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
        with self._request("count passages"):
            return self._client.count(
                self._collection, count_filter=_filter(scope), exact=True
            ).count

    def point_ids(self, *, version_id: int) -> list[str]:
        selected = _filter(PointScope(version_id=version_id))
        ids: list[str] = []
        offset: models.ExtendedPointId | None = None
        with self._request("list passages"):
            while True:
                records, offset = self._client.scroll(
                    self._collection,
                    scroll_filter=selected,
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=False,
                    with_vectors=False,
                )
                ids.extend(str(record.id) for record in records)
                if offset is None:
                    return ids

    def close(self) -> None:
        with self._access:
            self._client.close()

    @contextmanager
    def _request(self, action: str) -> Iterator[None]:
        with self._access, _client_errors(action):
            yield

    def _ensure_collection(self, dense_size: int) -> None:
        # An alias counts: Qdrant resolves aliases in every collection request.
        if not self._client.collection_exists(self._collection):
            if self._behind_alias:
                first = self._collection + FIRST_COLLECTION_SUFFIX
                self._create_collection(first, dense_size)
                # Creating an alias that exists only points it again (Qdrant overwrites),
                # so workers starting together all end with the same alias.
                self._client.update_collection_aliases(
                    change_aliases_operations=[
                        models.CreateAliasOperation(
                            create_alias=models.CreateAlias(
                                collection_name=first, alias_name=self._collection
                            )
                        )
                    ]
                )
            else:
                self._create_collection(self._collection, dense_size)
        self._check_dense_size(dense_size)
        with warnings.catch_warnings():
            # Local mode ignores payload indexes and says so; a server builds them.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field, schema in (
                ("groups", models.PayloadSchemaType.KEYWORD),
                ("document_id", models.PayloadSchemaType.INTEGER),
                ("version_id", models.PayloadSchemaType.INTEGER),
                ("active", models.PayloadSchemaType.BOOL),
            ):
                self._client.create_payload_index(
                    self._collection, field_name=field, field_schema=schema, wait=True
                )

    def _create_collection(self, name: str, dense_size: int) -> None:
        try:
            self._client.create_collection(
                name,
                vectors_config={
                    DENSE_VECTOR: models.VectorParams(
                        size=dense_size, distance=models.Distance.COSINE
                    )
                },
                sparse_vectors_config={
                    SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
                },
                shard_number=self._layout.shards,
                replication_factor=self._layout.replication,
                write_consistency_factor=self._layout.write_consistency,
            )
        except UnexpectedResponse as error:
            # Another worker created it between the check and the call.
            if error.status_code != 409:
                raise
        except ValueError as error:
            # Local mode says the same with a ValueError.
            if "already exists" not in str(error):
                raise

    def _encoder_record(self, encoder: dict[str, Any]) -> None:
        """Check the collection's encoder record (its metadata); write it where there is none."""
        metadata = self._client.get_collection(self._collection).config.metadata or {}
        recorded = metadata.get(ENCODER_METADATA_KEY)
        encoder_check(recorded, encoder, f"collection {self._collection!r}")
        if recorded is None:
            self._client.update_collection(
                self._collection, metadata={ENCODER_METADATA_KEY: encoder}
            )

    def _check_dense_size(self, dense_size: int) -> None:
        vectors = self._client.get_collection(self._collection).config.params.vectors
        stored = vectors.get(DENSE_VECTOR) if isinstance(vectors, dict) else None
        if stored is None or stored.size != dense_size:
            raise VectorIndexError(
                f"The collection {self._collection!r} was not made for {dense_size}-dimensional "
                "dense vectors; use another collection name or re-index into a new one."
            )


def _filter(scope: PointScope) -> models.Filter:
    conditions: list[models.Condition] = []
    if scope.groups_any is not None:
        conditions.append(
            models.FieldCondition(key="groups", match=models.MatchAny(any=scope.groups_any))
        )
    if scope.document_id is not None:
        conditions.append(
            models.FieldCondition(
                key="document_id", match=models.MatchValue(value=scope.document_id)
            )
        )
    if scope.document_ids is not None:
        conditions.append(
            models.FieldCondition(key="document_id", match=models.MatchAny(any=scope.document_ids))
        )
    if scope.version_id is not None:
        conditions.append(
            models.FieldCondition(key="version_id", match=models.MatchValue(value=scope.version_id))
        )
    if scope.version_ids is not None:
        conditions.append(
            models.FieldCondition(key="version_id", match=models.MatchAny(any=scope.version_ids))
        )
    if scope.active is not None:
        conditions.append(
            models.FieldCondition(key="active", match=models.MatchValue(value=scope.active))
        )
    return models.Filter(must=conditions)


@contextmanager
def _client_errors(action: str) -> Iterator[None]:
    try:
        yield
    except VectorIndexError:
        raise
    except (ApiException, OSError, ValueError, RuntimeError) as error:
        raise VectorIndexError(f"Could not {action}: {error}") from error
