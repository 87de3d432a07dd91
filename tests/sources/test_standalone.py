"""Standalone mode: the server's own scheduler carries out a run a command asks for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.ingestion.test_standalone import Server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    the_server = Server(tmp_path / "var")
    the_server.start()
    yield the_server
    the_server.stop()


def test_source_sync_beside_the_running_server_waits_for_its_scheduler(
    server: Server, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "holidays.txt").write_text("Employees accrue twenty-six days of paid holiday.\n")
    added = server.manage("source_add", "share", "--kind", "folder", "--path", str(share),
                          "--everyone")  # fmt: skip
    assert added.returncode == 0, added.stderr
    synced = server.manage("source_sync", "share", "--wait", "--json")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "server carries out the run" in synced.stderr
    result = json.loads(synced.stdout.strip().splitlines()[-1])
    assert (result["status"], result["new"]) == ("ok", 1)

    token = server.manage("apitoken", "create", "admin", "--name", "t", "--scopes", "read")
    client = httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Bearer {token.stdout.strip()}"},
        timeout=30,
    )
    documents = client.get("/api/documents/").json()["results"]
    assert [document["title"] for document in documents] == ["holidays"]
    assert documents[0]["status"] == "READY"
