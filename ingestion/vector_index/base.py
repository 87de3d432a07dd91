"""The contract every vector index backend fulfils, and the rules they share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"

# Fixed forever: point ids derived from it must stay the same across releases, so that
# re-indexing a version overwrites its points instead of duplicating them.
POINT_ID_NAMESPACE = uuid.UUID("6f1f9a52-3c1e-4b7a-9d0e-5a8c2b7e4d10")

SearchMode = Literal["hybrid", "dense", "sparse"]
FusionMethod = Literal["rrf", "dbsf"]


class VectorIndexError(Exception):
    """A failure of the vector index, with a message fit to show to a person."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class IndexLockedError(VectorIndexError):
    """The embedded index folder is already held, by another process or another handle."""


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


class EncoderMismatchError(VectorIndexError):
    """The index was written by another encoder: its vectors would not match the questions'."""


# What an index records of its encoder (inference.embedder.encoder_identity); these keys
# must agree, the rest is informative. "vectors" is absent for full precision.
ENCODER_KEYS = ("model", "weights_sha256", "dimension", "vectors")


def encoder_check(recorded: dict[str, Any] | None, current: dict[str, Any], where: str) -> None:
    """Refuse to serve an index whose passages another encoder embedded.

    An index without a record (made before the record existed) is taken as it is; the
    caller then records the current encoder.
    """
    if recorded is None:
        return
    differing = [key for key in ENCODER_KEYS if recorded.get(key) != current.get(key)]
    if differing == ["vectors"]:
        built, now = (record.get("vectors") or "full precision" for record in (recorded, current))
        raise EncoderMismatchError(
            f"The index {where} holds {built} vectors, and EMBEDDING_PRECISION now gives "
            f"{now} ones: its passages and new questions would not be comparable. Set "
            f"EMBEDDING_PRECISION back to {'int8' if built == 'int8' else 'auto, fp32 or bf16'}, "
            "or keep it and run `manage.py reindex`, which embeds the stored passages again."
        )
    if differing:
        built = ", ".join(_described(recorded, key) for key in ENCODER_KEYS)
        now = ", ".join(_described(current, key) for key in ENCODER_KEYS)
        raise EncoderMismatchError(
            f"The index {where} was built with another encoder ({built}) than the one "
            f"configured now ({now}): its passages and new questions would not be "
            "comparable. Set EMBEDDING_MODEL_PATH back to the model it was built with, or "
            "use a new index folder or collection and ingest the documents again."
        )


def _described(record: dict[str, Any], key: str) -> str:
    if key == "vectors":
        return f"vectors {record.get(key) or 'full precision'}"
    return f"{key} {record.get(key)}"


@dataclass(frozen=True)
class IndexPoint:
    """One passage as stored in the index.

    payload keys: document_id:int, version_id:int, groups:list[str], title:str, source:str,
    page:int|None, heading:str, chunk_index:int, text:str, active:bool.
    """

    id: str
    dense: list[float]
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class IndexUpkeep:
    """The embedded index's pending upkeep, for /readyz and the documents page.

    `unindexed_points`: vectors searched by brute force until the segment optimizer builds
    their search graph; `optimize_due`: enough of them that the optimizer should run.
    """

    unindexed_points: int
    optimize_due: bool
    optimizing: bool
    deferred_to_quiet_moments: bool
    last_optimized_at: float | None = None
    last_optimize_s: float | None = None


class VectorIndex(Protocol):
    def upsert(self, points: Sequence[IndexPoint]) -> None: ...

    def upkeep(self) -> IndexUpkeep | None:
        """Pending upkeep this process must run; None where the server does its own."""
        ...

    def optimize(self) -> None:
        """Build the search graph of passages stored since the last time, now."""
        ...

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
        """Passages inside `scope` (from `ingestion.access.index_scope`), best first.

        The scope is a filter of the query itself, so a passage outside it is never a candidate.
        """
        ...

    def set_payload(
        self, *, values: dict[str, Any], document_id: int, version_id: int | None = None
    ) -> None: ...

    def activate_versions(self, version_ids: Sequence[int]) -> None:
        """Switch on the passages of fully indexed versions, many at once (one write)."""
        ...

    def delete(self, *, document_id: int | None = None, version_id: int | None = None) -> None: ...

    def count(
        self,
        *,
        document_id: int | None = None,
        version_id: int | None = None,
        only_active: bool = False,
    ) -> int: ...

    def point_ids(self, *, version_id: int) -> list[str]: ...

    def close(self) -> None: ...


def point_id(version_id: int, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_ID_NAMESPACE, f"{version_id}:{chunk_index}"))


@dataclass(frozen=True)
class PointScope:
    """Which points an operation touches; each backend turns it into its own filter.

    Every field that is set must hold (AND); `groups_any` holds when the point's groups
    share at least one tag with it.
    """

    groups_any: list[str] | None = None
    document_id: int | None = None
    # A reader's own choice of documents, always together with `groups_any`: it narrows what
    # they may read and can never widen it.
    document_ids: list[int] | None = None
    version_id: int | None = None
    version_ids: list[int] | None = None
    active: bool | None = None


def deletion_scope(*, document_id: int | None, version_id: int | None) -> PointScope:
    if document_id is None and version_id is None:
        raise VectorIndexError("Deleting passages needs a document or a version.")
    return PointScope(document_id=document_id, version_id=version_id)


def check_search_arguments(
    *,
    dense: list[float] | None,
    sparse: SparseVec | None,
    mode: SearchMode,
    limit: int,
    candidates: int,
) -> None:
    if limit < 1 or candidates < 1:
        raise VectorIndexError("Search needs a positive limit and candidate count.")
    if mode in ("hybrid", "dense") and dense is None:
        raise VectorIndexError(f"A {mode} search needs a dense query vector.")
    if mode in ("hybrid", "sparse") and sparse is None:
        raise VectorIndexError(f"A {mode} search needs a sparse query vector.")
