"""Fixtures shared by the ingestion tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.loopback_processes import Process, free_port, standin_command

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Qdrant stand-in in its own process; its URL."""
    folder = tmp_path_factory.mktemp("standin")
    port = free_port()
    log = folder / "standin.log"
    with log.open("wb") as output:
        popen = subprocess.Popen(
            standin_command(port=port, folder=folder / "data"),
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    process = Process("qdrant stand-in", f"http://127.0.0.1:{port}", popen, log)
    try:
        process.wait_until_answering("/healthz")
        yield process.url
    finally:
        process.stop()
