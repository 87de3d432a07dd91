"""What the benchmarks measure with, checked on this process."""

from __future__ import annotations

import hashlib
import os
import time

from bench.measures import process_cpu_s


def test_process_cpu_time_counts_work_and_not_waiting() -> None:
    before = process_cpu_s(os.getpid())
    time.sleep(0.3)
    after_waiting = process_cpu_s(os.getpid())
    # Work until 0.2 s of CPU time is counted; a busy machine may take longer by the clock.
    deadline = time.perf_counter() + 20
    while process_cpu_s(os.getpid()) - after_waiting < 0.2 and time.perf_counter() < deadline:
        for _ in range(200):
            hashlib.sha256(b"x" * 4096).digest()

    assert after_waiting - before < 0.1
    assert process_cpu_s(os.getpid()) - after_waiting >= 0.2
