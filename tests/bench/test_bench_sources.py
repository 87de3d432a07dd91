"""The sources benchmark, run small: it must finish, count right and download no body."""

from __future__ import annotations

import json
import subprocess
import sys

from django.conf import settings


def test_bench_sources_reports_resyncs_and_no_body_downloads() -> None:
    done = subprocess.run(
        [sys.executable, "manage.py", "bench_sources", "--files", "200", "--pages", "30", "--json"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    folder, web = result["folder"], result["web"]
    assert folder["first_sync_new"] == 200
    assert folder["resync_counts"] == {
        "new": 0, "changed": 2, "unchanged": 198, "deleted": 0, "failed": 0,
    }  # fmt: skip
    assert folder["resync_changed_s"] > 0
    assert web["first_sync_new"] == 30
    assert web["resync_counts"]["unchanged"] == 30
    assert web["resync_body_downloads"] == 0
