"""Cluster mode: a source's run is a Celery task; a worker killed mid-run is replaced and the
next worker finishes the run without duplicates."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ingestion.test_cluster import PYTHON, ROOT, Cluster, cluster_prepared

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

FILES = 300


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster_prepared(tmp_path, SOURCE_RUN_STALE_S="3") as the_cluster:
        yield the_cluster


def count(cluster: Cluster, sql: str) -> int:
    return int(cluster.query(sql)[0][0])  # type: ignore[call-overload]


def test_a_killed_worker_s_run_is_finished_by_the_next_worker(
    cluster: Cluster, tmp_path: Path
) -> None:
    share = tmp_path / "share"
    share.mkdir()
    for number in range(FILES):
        (share / f"memo-{number:03}.txt").write_text(f"Memo {number} of the board.\n")
    added = cluster.manage("source_add", "share", "--kind", "folder", "--path", str(share))
    assert added.returncode == 0, added.stderr

    first = cluster.start_worker("first")
    command = subprocess.Popen(
        [PYTHON, "manage.py", "source_sync", "share", "--json"],
        cwd=ROOT,
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while count(cluster, "SELECT count(*) FROM sources_sourceitem") < 30:
        assert time.monotonic() < deadline, "the worker did not start the run"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert count(cluster, "SELECT count(*) FROM sources_sourceitem") < FILES
    assert count(cluster, "SELECT count(*) FROM sources_sourcerun WHERE status = 'running'") == 1

    cluster.start_worker("second")
    output, errors = command.communicate(timeout=300)
    assert command.returncode == 0, output + errors
    result = json.loads(output.strip().splitlines()[-1])
    assert (result["status"], result["new"], result["unchanged"]) == ("ok", FILES, 0)
    assert count(cluster, "SELECT count(*) FROM sources_sourcerun") == 1
    assert count(cluster, "SELECT attempts FROM sources_sourcerun") == 2
    assert count(cluster, "SELECT count(*) FROM ingestion_document") == FILES
    assert count(cluster, "SELECT count(DISTINCT source_path) FROM ingestion_document") == FILES
    assert count(cluster, "SELECT count(*) FROM ingestion_documentversion") == FILES
