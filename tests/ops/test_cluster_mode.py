"""Cluster mode end to end, every part in its own process, over real HTTP on loopback.

Running here: PostgreSQL and Redis (the machine's own), the ASGI server with two worker
processes (`manage.py serve --workers 2` in cluster mode, as deploy/Dockerfile runs it),
two Celery worker processes, two R1 simulators as the vLLM pool (`VLLM_URLS`), and the
Qdrant stand-in.

The stand-in, because no Qdrant server can run on this machine: `manage.py
qdrant_standin` serves the part of Qdrant's REST API that this application calls, parsed
with qdrant-client's own models and executed by qdrant-client's local mode, one request
at a time. The app talks to it with the real qdrant-client over HTTP, exactly as to a
server. What this test therefore does NOT cover, and a real Qdrant deployment must be
trusted (or tested separately) for: sharding and replication behaviour (the layout is
sent and recorded, not applied), distributed consistency and the write consistency
factor, HNSW indexes on disk and payload indexes (local mode searches exhaustively), the
server's own alias atomicity under concurrent searches, concurrent request handling in
Qdrant, and gRPC.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from bench.loopback_cluster import (
    ClusterOptions,
    LoopbackCluster,
    StreamedAnswer,
    ask_streamed,
    versions_wait_final,
)

pytestmark = pytest.mark.cluster

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_DB = 12
COMMANDLINE = Path("samples") / "docker-md" / "reference" / "commandline"
HANDBOOK = ("checkpoint.md", "config.md", "context.md", "container.md")
CANARY = b"# Vault\n\nThe night vault code for the Rotterdam office is 7-ALPHA-TANGO.\n"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LoopbackCluster]:
    database = f"assistant_cluster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    redis.Redis(db=REDIS_DB).flushdb()
    the_cluster = LoopbackCluster(
        ClusterOptions(
            database_url=f"postgres://postgres@127.0.0.1:5432/{database}",
            broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
            folder=tmp_path / "cluster",
            extra_env={"VECTOR_SHARDS": "3", "VECTOR_REPLICATION": "2"},
        )
    )
    try:
        the_cluster.start()
        yield the_cluster
    finally:
        the_cluster.stop()
        redis.Redis(db=REDIS_DB).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def client_for(cluster: LoopbackCluster, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


async def ask_all(cluster: LoopbackCluster, asked: list[tuple[str, str]]) -> list[StreamedAnswer]:
    """Each (API key, question) at the same time, as different people would."""

    async def ask(key: str, question: str) -> StreamedAnswer:
        async with httpx.AsyncClient(
            base_url=cluster.url, headers={"Authorization": f"Bearer {key}"}, timeout=180
        ) as client:
            return await ask_streamed(client, question)

    return list(await asyncio.gather(*(ask(key, question) for key, question in asked)))


def worker_processes(cluster: LoopbackCluster) -> int:
    """Child processes of the web server: uvicorn's workers."""
    assert cluster.server is not None
    pid = cluster.server.popen.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return len(children)


def test_documents_uploaded_over_rest_are_answered_with_citations_by_the_cluster(
    cluster: LoopbackCluster, shared_data: Path
) -> None:
    readers = [f"reader{number}" for number in range(4)]
    keys = cluster.accounts(users=readers, admins=["librarian"], group="staff")
    keys.update(cluster.accounts(users=["visitor"], admins=[], group="visitors"))
    files = [
        ("files", (name, (shared_data / COMMANDLINE / name).read_bytes())) for name in HANDBOOK
    ]
    files.append(("files", ("vault.md", CANARY)))

    with client_for(cluster, keys["librarian"]) as librarian:
        uploaded = librarian.post("/api/documents/", files=files, data={"groups": "staff"})
        assert uploaded.status_code == 201, uploaded.text
        versions = {result["version_id"] for result in uploaded.json()["results"]}
        statuses = versions_wait_final(librarian, versions, timeout_s=600)
        ready = librarian.get("/readyz")
    assert statuses == dict.fromkeys(versions, "READY"), cluster.log_tails()
    assert ready.status_code == 200, ready.text
    assert worker_processes(cluster) >= 2

    questions = [
        "How do I checkpoint a running container?",
        "What is the night vault code for the Rotterdam office?",
        "How do I create a Docker config from a file?",
        "How do I switch between docker contexts?",
    ]
    answers = asyncio.run(
        ask_all(cluster, [(keys[r], q) for r, q in zip(readers, questions, strict=True)])
    )

    assert [answer.error for answer in answers] == [""] * len(questions)
    assert [answer.status for answer in answers] == ["answered"] * len(questions)
    assert all(answer.first_token_s is not None for answer in answers)
    assert answers[0].citations[0]["source"] == "checkpoint.md"
    assert answers[2].citations[0]["source"] == "config.md"
    assert "7-ALPHA-TANGO" in answers[1].answer
    assert {c["source"] for c in answers[1].citations} == {"vault.md"}

    (outsider,) = asyncio.run(ask_all(cluster, [(keys["visitor"], questions[1])]))
    assert outsider.status == "abstained"
    assert outsider.citations == []
    assert "7-ALPHA-TANGO" not in outsider.answer

    verified = cluster.manage("audit_verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    audited = cluster.query(
        "SELECT count(DISTINCT answer_id) FROM assistant_auditrecord WHERE answer_id = ANY(%s)",
        [answer.answer_id for answer in [*answers, outsider]],
    )
    assert audited == [(len(questions) + 1,)]

    stats = cluster.standin_stats()
    (created,) = stats["collections_created"]
    assert created["collection"] == "passages-v1"
    assert (created["body"]["shard_number"], created["body"]["replication_factor"]) == (3, 2)
    assert stats["requests"]["POST /collections/{name}/points/query"] >= len(questions)
