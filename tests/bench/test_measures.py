"""What the benchmarks measure with, checked on this process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

from bench.measures import cpu_snapshot, cpu_split, process_cpu_s, thread_native_id


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


def _busy_for(cpu_s: float) -> None:
    """Work until this thread has used `cpu_s` of CPU time (a busy machine may take longer)."""
    deadline = time.perf_counter() + 20
    started = time.thread_time()
    while time.thread_time() - started < cpu_s and time.perf_counter() < deadline:
        for _ in range(200):
            hashlib.sha256(b"x" * 4096).digest()


def test_cpu_split_names_the_thread_that_worked_and_counts_child_processes() -> None:
    before = cpu_snapshot()
    worker = threading.Thread(target=_busy_for, args=(0.3,), name="bench-worker")
    worker.start()
    worker_id = thread_native_id("bench-worker")
    # A child process that works and is waited for, as a parser child is.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass",
        ],
        check=True,
    )
    worker.join()
    split = cpu_split(
        before, cpu_snapshot(), {"worker": worker_id, "main": threading.main_thread().native_id}
    )

    assert worker_id is not None
    # The worker ended before the second snapshot: its time is the process's "other" time.
    assert split["worker"] == 0.0
    assert split["other"] >= 0.25
    assert split["child_processes"] >= 0.25
    assert split["total"] >= split["other"] + split["child_processes"]


def test_cpu_split_counts_a_live_named_thread_under_its_name() -> None:
    done = threading.Event()
    stop = threading.Event()

    def work() -> None:
        _busy_for(0.3)
        done.set()
        stop.wait(30)

    worker = threading.Thread(target=work, name="bench-live-worker")
    before = cpu_snapshot()
    worker.start()
    done.wait(30)
    split = cpu_split(before, cpu_snapshot(), {"worker": thread_native_id("bench-live-worker")})
    stop.set()
    worker.join()

    assert split["worker"] >= 0.25
    assert split["other"] < 0.25
