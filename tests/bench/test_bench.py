"""The answering benchmark, run with tiny sizes: it must finish and report every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(shared_data: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASSISTANT_SHARED_DATA": str(shared_data), "HF_HUB_OFFLINE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *arguments, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bench_answer_reports_search_and_overhead_figures_last(shared_data: Path) -> None:
    done = _bench(
        shared_data,
        "bench_answer",
        "--sizes=1000,3000",
        "--queries=5",
        "--questions=2",
        "--base-texts=20",
        "--tokens-per-s=0",
    )

    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    for key in (
        "search_p50_ms_1k",
        "search_p95_ms_3k",
        "search_with_embedding_p50_ms_3k",
        "app_ttft_p50_ms",
        "simulator_ttft_p50_ms",
    ):
        assert figures[key] > 0, key
    assert "overhead_ttft_p50_ms" in figures
    assert "overhead_ttft_p95_ms" in figures
    assert figures["simulator_ttft_p50_ms"] >= 200
    assert figures["mean_hits_3k"] > 0
    assert figures["questions"] == 2
    assert any(line.startswith("3000 passages") for line in lines)


def test_bench_ingest_ingests_every_file_and_reports_both_baselines(shared_data: Path) -> None:
    done = _bench(shared_data, "bench_ingest", "--docs=40")

    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["documents"] == 40
    assert figures["failed"] == 0
    assert figures["chunks"] >= 40
    assert figures["backend"] in ("torch", "openvino")
    for key in ("pipeline_chunks_per_s", "raw_chunks_per_s", "raw_default_fp32_chunks_per_s"):
        assert figures[key] > 0, key
    assert 0 < figures["upload_s"] <= figures["pipeline_s"]
    # Where the cores went: the engine's threads and storing the uploads did work, the parts
    # add up to the whole, and the whole is no more than the cores could give.
    cpu = figures["pipeline_cpu_s"]
    assert cpu["native_threads"] > 0
    assert cpu["uploads"] > 0
    parts = ("uploads", "runner", "native_threads", "other", "child_processes")
    assert sum(cpu[part] for part in parts) == pytest.approx(cpu["total"], abs=0.05)
    assert cpu["total"] <= figures["pipeline_cores_s"] * 1.05
    assert figures["raw_cpu_s"] > 0
