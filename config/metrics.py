"""The process's Prometheus metrics: one registry, and the functions each layer counts with.

The registry is exposed at /metrics (assistant/probes.py), which adds the values read at
scrape time.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

ANSWERS = Counter(
    "assistant_answers",
    "Answers saved, by final status and by mode (llm or extractive).",
    ["status", "mode"],
    registry=REGISTRY,
)
ANSWER_SECONDS = Histogram(
    "assistant_answer_seconds",
    "Time from the question to the saved answer.",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
FIRST_TOKEN_SECONDS = Histogram(
    "assistant_answer_first_token_seconds",
    "Time from the question to the first streamed token (reasoning or answer).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
    registry=REGISTRY,
)
TOKENS = Counter(
    "assistant_answer_tokens",
    "Tokens the model pool spent on answers (prompt and completion).",
    registry=REGISTRY,
)
RETRIEVAL_SECONDS = Histogram(
    "assistant_retrieval_seconds",
    "Time to find the passages a user may read for a query.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
PASSAGES_INDEXED = Counter(
    "assistant_passages_indexed",
    "Passages embedded and written to the vector index.",
    registry=REGISTRY,
)


def record_answer(
    status: str, mode: str, total_ms: float, first_token_ms: float | None, tokens: int | None
) -> None:
    ANSWERS.labels(status=status, mode=mode).inc()
    ANSWER_SECONDS.observe(total_ms / 1000)
    if first_token_ms is not None:
        FIRST_TOKEN_SECONDS.observe(first_token_ms / 1000)
    if tokens:
        TOKENS.inc(tokens)


def record_retrieval(ms: float) -> None:
    RETRIEVAL_SECONDS.observe(ms / 1000)


def record_passages_indexed(n: int) -> None:
    if n > 0:
        PASSAGES_INDEXED.inc(n)
