"""The audit ledger benchmark, run small: it must finish and report every figure."""

from __future__ import annotations

import json
import subprocess
import sys

from django.conf import settings


def test_bench_audit_prints_one_json_object_last() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "bench_audit",
            "--records",
            "300",
            "--samples",
            "5",
            "--json",
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["records"] >= 300
    assert result["write_p50_ms"] > 0
    assert result["write_ratio"] > 1
    assert result["verify_records_per_s"] > 0
    assert result["concurrent_chain_intact"] is True
