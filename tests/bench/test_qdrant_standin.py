"""The Qdrant stand-in stops when asked, however it was started, and keeps its collections."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from qdrant_client import QdrantClient, models

from bench.loopback_processes import Process, free_port, standin_command

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# What a shell does to a background job: SIGINT ignored, which exec keeps for the program.
AS_A_BACKGROUND_JOB = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, sys.argv[1:])"
)


def standin_started(folder: Path, port: int) -> Process:
    log = folder / "standin.log"
    command = standin_command(port=port, folder=folder / "data")
    with log.open("ab") as output:
        popen = subprocess.Popen(
            [sys.executable, "-c", AS_A_BACKGROUND_JOB, *command],
            cwd=PROJECT_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    process = Process("qdrant stand-in", f"http://127.0.0.1:{port}", popen, log)
    process.wait_until_answering("/healthz")
    return process


def test_a_stand_in_started_in_the_background_stops_on_sigint_and_keeps_its_collections(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = standin_started(tmp_path, port)
    try:
        client = QdrantClient(
            url=first.url, prefer_grpc=False, timeout=10, check_compatibility=False
        )
        client.create_collection(
            "notes", vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE)
        )
        client.upsert(
            "notes",
            points=[models.PointStruct(id=n, vector=[1.0, float(n), 0.5]) for n in range(3)],
        )
        # The client keeps its connection open, as the product's processes do.
        first.popen.send_signal(signal.SIGINT)
        # Before, it ignored the signal and was killed after the caller's 30 s.
        assert first.popen.wait(timeout=10) == 0, first.log_tail()
    finally:
        first.stop()

    second = standin_started(tmp_path, port)
    try:
        client = QdrantClient(
            url=second.url, prefer_grpc=False, timeout=10, check_compatibility=False
        )
        assert client.count("notes").count == 3
    finally:
        second.stop()
