"""Rebuilding the index from stored passages, on the server API and on the embedded shard."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import override_settings
from qdrant_client import QdrantClient

from assistant.retrieval import passages_for_user
from ingestion.passage_vectors import query_vectors
from ingestion.reindex import index_rebuild
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes
from ingestion.vector_index import IndexLockedError, open_index
from ingestion.vector_index.base import PointScope
from ingestion.vector_index.configured import current_index_dir, vector_index, vector_index_close

pytestmark = pytest.mark.django_db

PARKING = b"# Parking\n\nVisitors park on level minus two of the north garage.\n"
CANTEEN = b"# Canteen\n\nThe canteen serves lunch from half past eleven until two.\n"


@pytest.fixture
def reader() -> User:
    user = User.objects.create_user("reader")
    user.groups.add(Group.objects.create(name="staff"))
    return user


def ingest_two_documents() -> None:
    document_upload_bytes(name="parking.md", data=PARKING, is_public=True)
    document_upload_bytes(name="canteen.md", data=CANTEEN, is_public=True)
    run_pending_once()


def test_reindex_on_the_server_moves_the_alias_to_a_complete_new_collection(
    tmp_path: Path, reader: User
) -> None:
    qdrant_path = tmp_path / "qdrant"
    with override_settings(VECTOR_BACKEND="server", QDRANT_PATH=str(qdrant_path)):
        vector_index_close()
        ingest_two_documents()
        before = vector_index().count(only_active=True)
        assert before >= 2

        out = io.StringIO()
        call_command("reindex", "--collection", "passages-v2", stdout=out)
        assert "into passages-v2" in out.getvalue()
        index_rebuild(collection="passages-v3")

        client = QdrantClient(path=str(qdrant_path))
        try:
            aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
            names = {c.name for c in client.get_collections().collections}
        finally:
            client.close()
        assert aliases == {"passages": "passages-v3"}
        assert names == {"passages-v3"}
        assert vector_index().count(only_active=True) == before
        hits = passages_for_user(user=reader, query="where do visitors park")
        assert hits[0].source == "parking.md"
        vector_index_close()


def test_reindex_on_the_edge_switches_to_a_new_shard_folder() -> None:
    base = Path(settings.VECTOR_INDEX_DIR)
    ingest_two_documents()
    before = vector_index().count(only_active=True)

    report = index_rebuild(collection="v2")

    new_dir = current_index_dir(base)
    assert new_dir == base.parent / "index-v2"
    assert report.passages == before
    assert not base.exists()
    index = open_index(backend="edge", path=new_dir)
    try:
        assert index.count(only_active=True) == before
        vectors = query_vectors("where do visitors park")
        hits = index.search(
            dense=vectors.dense,
            sparse=vectors.sparse,
            scope=PointScope(groups_any=["public"], active=True),
            limit=1,
        )
        assert hits[0].payload["source"] == "parking.md"
    finally:
        index.close()


def test_reindex_on_the_edge_refuses_while_a_server_holds_the_shard() -> None:
    base = Path(settings.VECTOR_INDEX_DIR)
    ingest_two_documents()
    vector_index_close()
    # Another handle on the folder stands for the serving process.
    serving = open_index(backend="edge", path=base)
    try:
        with pytest.raises(IndexLockedError, match="stop it"):
            index_rebuild(collection="v2")
    finally:
        serving.close()
    assert current_index_dir(base) == base


def test_reindex_over_http_moves_the_alias_under_the_other_processes(
    standin: str, reader: User
) -> None:
    """On the Qdrant stand-in, over real HTTP: the path a cluster's workers take."""
    with override_settings(
        VECTOR_BACKEND="server",
        QDRANT_URL=standin,
        QDRANT_PATH="",
        VECTOR_COLLECTION="handbook",
        VECTOR_SHARDS=3,
        VECTOR_REPLICATION=2,
    ):
        vector_index_close()
        ingest_two_documents()
        before = vector_index().count(only_active=True)
        # A worker that opened the index by its name before the rebuild, and keeps it.
        other_worker = open_index(backend="server", url=standin, collection="handbook")

        index_rebuild(collection="handbook-v2")

        client = QdrantClient(url=standin, prefer_grpc=False)
        try:
            aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
            names = {c.name for c in client.get_collections().collections}
            params = client.get_collection("handbook").config.params
        finally:
            client.close()
        assert aliases["handbook"] == "handbook-v2"
        assert "handbook-v1" not in names
        assert (params.shard_number, params.replication_factor) == (3, 2)
        assert other_worker.count(only_active=True) == before
        other_worker.close()
        hits = passages_for_user(user=reader, query="where do visitors park")
        assert hits[0].source == "parking.md"
        vector_index_close()
