"""What every benchmark shares: percentiles, the machine's load, and SciFact's texts."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.evaluation.throwaway_runs import scifact_corpus_path
from inference.embedder import cpu_model_name


def percentile(values: list[float], fraction: float) -> float:
    """The value at `fraction` of the sorted values (nearest rank), 0.0 when there are none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def machine_load() -> dict[str, Any]:
    """How busy the machine was when the clock started: other work skews every figure."""
    return {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)}


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system, every thread) a process has used so far.

    Unlike wall-clock figures it barely moves when other work shares the machine, so it
    compares two versions of the server measured on a busy machine.
    """
    return _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def _stat_fields(path: Path) -> list[str]:
    # After the command name, which may hold spaces: the state is the first field.
    return path.read_text().rsplit(")", 1)[1].split()


def _ticks_s(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def _stat_cpu_s(path: Path) -> float:
    """The CPU time a process's or thread's `stat` file counts (utime and stime, the 14th
    and 15th fields)."""
    fields = _stat_fields(path)
    return _ticks_s(int(fields[11]) + int(fields[12]))


def threads_cpu_s() -> dict[int, float]:
    """CPU time each live thread of this process has used so far, by its native thread id."""
    used = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            used[int(task.name)] = _stat_cpu_s(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
    return used


def children_cpu_s() -> float:
    """CPU time of this process's child processes, those it has waited for and those still
    running with the children they have waited for (a fork server's parsers): work that
    `process_cpu_s` of this process does not count."""
    own = _stat_fields(Path("/proc/self/stat"))
    # cutime and cstime: the children this process has waited for.
    total = _ticks_s(int(own[13]) + int(own[14]))
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry / "stat")
        except OSError:
            continue
        if fields[1] == me:
            # utime, stime, and the same of the children it has waited for.
            total += _ticks_s(sum(int(field) for field in fields[11:15]))
    return total


def thread_native_id(name: str) -> int | None:
    """The native id of this process's live Python thread called `name`, if there is one."""
    return next((t.native_id for t in threading.enumerate() if t.name == name), None)


@dataclass(frozen=True)
class CpuSnapshot:
    """What `cpu_split` compares: the process, its threads, its child processes."""

    process_s: float
    threads_s: dict[int, float]
    children_s: float


def cpu_snapshot() -> CpuSnapshot:
    return CpuSnapshot(process_cpu_s(os.getpid()), threads_cpu_s(), children_cpu_s())


def cpu_split(
    before: CpuSnapshot, after: CpuSnapshot, named: dict[str, int | None]
) -> dict[str, float]:
    """Where the CPU time between two snapshots went: each named thread (by native id), the
    threads Python did not start (an inference engine's, an index's), child processes, and
    "other" for the rest of the process (Python threads not named, threads that ended)."""
    python_threads = {thread.native_id for thread in threading.enumerate()}

    def spent(thread_id: int) -> float:
        return after.threads_s.get(thread_id, 0.0) - before.threads_s.get(thread_id, 0.0)

    split = {
        name: round(spent(thread_id), 2) if thread_id is not None else 0.0
        for name, thread_id in named.items()
    }
    split["native_threads"] = round(
        sum(spent(thread_id) for thread_id in after.threads_s if thread_id not in python_threads),
        2,
    )
    process_s = after.process_s - before.process_s
    split["other"] = round(max(0.0, process_s - sum(split.values())), 2)
    split["child_processes"] = round(after.children_s - before.children_s, 2)
    split["total"] = round(process_s + split["child_processes"], 2)
    return split


@dataclass(frozen=True)
class CorpusText:
    title: str
    text: str


def scifact_texts() -> tuple[list[CorpusText], list[str]]:
    corpus_path = scifact_corpus_path()
    with corpus_path.open() as lines:
        corpus = [CorpusText(r["title"], r["text"]) for r in map(json.loads, lines)]
    with (corpus_path.parent / "queries.jsonl").open() as lines:
        queries = [record["text"] for record in map(json.loads, lines)]
    return corpus, queries


def processor_name() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it: figures mean little without it."""
    return cpu_model_name()
