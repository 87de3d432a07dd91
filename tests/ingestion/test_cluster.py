"""Cluster mode end to end: PostgreSQL, Redis, real Celery worker processes, a killed worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis

from bench.loopback_cluster import celery_worker_command

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.db_name = f"assistant_e2e_{uuid.uuid4().hex[:8]}"
        self.redis_db = 7
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ASSISTANT_MODE": "cluster",
            "ASSISTANT_DATA_DIR": str(tmp / "data"),
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.db_name}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            # qdrant-client local mode stands in for the Qdrant server here.
            "QDRANT_PATH": str(tmp / "qdrant"),
            "CELERY_VISIBILITY_TIMEOUT": "5",
            "CELERY_RESTORE_INTERVAL_S": "1",
            "CELERY_RESTORE_THROTTLE": "1",
            "INGEST_EMBED_BATCH": "16",
            "HF_HUB_OFFLINE": "1",
        }
        self.tmp = tmp
        self.workers: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        worker = subprocess.Popen(
            celery_worker_command(name),
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type,unused-ignore]

    def index_snapshot(self, query: str, tags: list[str]) -> dict[str, object]:
        """Counts and a search, read from the index by a separate process (workers stopped)."""
        script = f"""
import django, json
django.setup()
from ingestion.access import index_scope
from ingestion.vector_index.configured import vector_index
from ingestion.passage_vectors import query_vectors
from ingestion.models import DocumentVersion
index = vector_index()
vectors = query_vectors({query!r})
scope = index_scope({tags!r}, only_active=True)
hits = index.search(dense=vectors.dense, sparse=vectors.sparse, scope=scope, limit=5)
counts = {{v.id: index.count(version_id=v.id) for v in DocumentVersion.objects.all()}}
print(json.dumps({{"hits": [h.payload for h in hits], "counts": counts}}))
"""
        done = subprocess.run(
            [PYTHON, "-c", script],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        snapshot: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
        return snapshot

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()


@contextmanager
def cluster_prepared(tmp_path: Path, **env: str) -> Iterator[Cluster]:
    """A cluster with its own migrated database and Redis database, dropped afterwards."""
    the_cluster = Cluster(tmp_path)
    the_cluster.env.update(env)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{the_cluster.db_name}"')
    redis.Redis(db=the_cluster.redis_db).flushdb()
    migrated = the_cluster.manage("migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    try:
        yield the_cluster
    finally:
        the_cluster.stop()
        redis.Redis(db=the_cluster.redis_db).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{the_cluster.db_name}" WITH (FORCE)')


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster_prepared(tmp_path) as the_cluster:
        yield the_cluster


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_folder_is_ingested_by_workers_and_a_killed_worker_is_replaced(
    cluster: Cluster, shared_data: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "handbook"
    folder.mkdir()
    commandline = shared_data / "samples" / "docker-md" / "reference" / "commandline"
    for name in ("checkpoint.md", "config.md", "context.md", "container.md"):
        shutil.copy(commandline / name, folder / name)

    cluster.start_worker("first")
    ingested = cluster.manage("ingest", str(folder), "--groups", "engineering", "--wait")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert ingested.stdout.count("READY") == 4
    statuses = cluster.query("SELECT status FROM ingestion_documentversion")
    assert {status for (status,) in statuses} == {"READY"}

    # A long document (several embedding batches); the worker is killed while embedding it.
    long_document = shared_data / "samples" / "flask-html" / "quickstart.html"
    queued = cluster.manage("ingest", str(long_document), "--groups", "engineering")
    assert queued.returncode == 0, queued.stderr

    def mid_document() -> bool:
        rows = cluster.query(
            "SELECT status, chunks_done, chunks_total FROM ingestion_documentversion "
            "WHERE original_name = %s",
            "quickstart.html",
        )
        return bool(rows) and rows[0][0] == "EMBEDDING" and 0 < rows[0][1] < rows[0][2]  # type: ignore[operator]

    wait_until(mid_document, 180, "the worker to be in the middle of the document")
    cluster.workers[0].send_signal(signal.SIGKILL)
    cluster.workers[0].wait()

    cluster.start_worker("second")

    def document_ready() -> bool:
        rows = cluster.query(
            "SELECT status FROM ingestion_documentversion WHERE original_name = %s",
            "quickstart.html",
        )
        return rows[0][0] == "READY"

    wait_until(document_ready, 300, "the second worker to finish the document")
    cluster.stop()

    ((version_id, chunks_total, attempts),) = cluster.query(
        "SELECT id, chunks_total, attempts FROM ingestion_documentversion WHERE original_name = %s",
        "quickstart.html",
    )
    assert attempts >= 2  # type: ignore[operator]
    ((chunk_rows,),) = cluster.query(
        "SELECT count(*) FROM ingestion_chunk WHERE version_id = %s", version_id
    )
    assert chunk_rows == chunks_total

    group_id = cluster.query("SELECT id FROM auth_group WHERE name = 'engineering'")[0][0]
    snapshot = cluster.index_snapshot(
        "freeze a running container by checkpointing it", [f"group:{group_id}"]
    )
    assert snapshot["counts"][str(version_id)] == chunks_total  # type: ignore[index]
    assert snapshot["hits"][0]["source"].endswith("checkpoint.md")  # type: ignore[index]
    outsider = cluster.index_snapshot(
        "freeze a running container by checkpointing it", ["group:999"]
    )
    assert outsider["hits"] == []
