"""What every benchmark shares: percentiles, the machine's load, and SciFact's texts."""

from __future__ import annotations

import json
import os
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
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime field 14 and stime field 15.
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / os.sysconf("SC_CLK_TCK")


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
