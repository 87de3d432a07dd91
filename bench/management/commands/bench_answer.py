from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation.throwaway_runs import INNER_FLAG, run_isolated
from bench.measures import CorpusText, machine_load, percentile, scifact_texts

GROUPS = 50
READER_GROUPS = 3
PASSAGES_PER_DOCUMENT = 8
# Copies of a real embedding are moved this far (per dimension) so that no two are equal:
# about 0.95 cosine to the original, like passages of one document.
NOISE_PER_DIMENSION = 0.02
UPSERT_BATCH = 2_000
WARM_UP_QUERIES = 10
WARM_UP_QUESTIONS = 2
ANSWER_EVENT_KINDS = ("reasoning", "answer", "reclassify")


def size_label(points: int) -> str:
    return f"{points // 1000}k" if points % 1000 == 0 else str(points)


class SyntheticPassages:
    """Passages that look like a company's to the index: real SciFact texts and BM25 vectors,
    dense vectors that are real embeddings of a few hundred of them plus a little noise, and
    each document readable by one or two of many groups, or by everyone."""

    def __init__(self, corpus: list[CorpusText], base_texts: int, group_tags: list[str]) -> None:
        from ingestion.passage_vectors import dense, passage_for_embedding, sparse

        self.corpus = corpus
        self.rng = np.random.default_rng(7)
        embedded = [
            passage_for_embedding(title=item.title, heading="", text=item.text)
            for item in corpus[:base_texts]
        ]
        self.base = dense().encode(embedded)
        self.sparse = [
            sparse().encode_document(passage_for_embedding(title=c.title, heading="", text=c.text))
            for c in corpus
        ]
        self.group_tags = group_tags

    def document_tags(self, document: int) -> list[str]:
        from ingestion.models import PUBLIC_TAG

        draw = (document * 2654435761) % 100
        first = self.group_tags[document % len(self.group_tags)]
        if draw < 15:
            return [PUBLIC_TAG]
        if draw < 30:
            second = self.group_tags[(document * 7 + 3) % len(self.group_tags)]
            return sorted({first, second})
        return [first]

    def points(self, start: int, stop: int) -> Iterator[Any]:
        from ingestion.vector_index import IndexPoint, SparseVec, point_id

        for batch_start in range(start, stop, UPSERT_BATCH):
            numbers = range(batch_start, min(stop, batch_start + UPSERT_BATCH))
            base = self.base[[number % len(self.base) for number in numbers]]
            noisy = base + self.rng.normal(0, NOISE_PER_DIMENSION, base.shape).astype(np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            batch = []
            for number, vector in zip(numbers, noisy, strict=True):
                document, chunk = divmod(number, PASSAGES_PER_DOCUMENT)
                text = self.corpus[number % len(self.corpus)]
                indices, values = self.sparse[number % len(self.corpus)]
                batch.append(
                    IndexPoint(
                        id=point_id(document + 1, chunk),
                        dense=vector.tolist(),
                        sparse=SparseVec(indices, values),
                        payload={
                            "document_id": document + 1,
                            "version_id": document + 1,
                            "groups": self.document_tags(document),
                            "title": text.title,
                            "source": f"scifact/{document + 1}.txt",
                            "page": None,
                            "heading": "",
                            "chunk_index": chunk,
                            "text": text.text,
                            "active": True,
                        },
                    )
                )
            yield batch


class Command(BaseCommand):
    help = (
        "Measure search latency with the access filter at 10k and 100k passages in the "
        "embedded index, and the answering service's own share of the time to first token."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--sizes", default="10000,100000", help="index sizes to measure, comma-separated"
        )
        parser.add_argument("--queries", type=int, default=200, help="timed searches per size")
        parser.add_argument("--questions", type=int, default=30, help="timed answers")
        parser.add_argument("--base-texts", type=int, default=400, help="texts embedded for real")
        parser.add_argument("--ttft-ms", type=float, default=200.0, help="simulator's first token")
        parser.add_argument("--tokens-per-s", type=float, default=200.0)
        parser.add_argument("--json", action="store_true", help="last line: one JSON object")
        parser.add_argument(INNER_FLAG, action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        sizes = sorted({int(size) for size in str(options["sizes"]).split(",") if size.strip()})
        if not sizes or sizes[0] < 1 or options["queries"] < 1 or options["questions"] < 1:
            raise CommandError("Sizes, queries and questions must be positive.")
        if not options["inner_run"]:
            arguments = [
                f"--sizes={','.join(map(str, sizes))}",
                f"--queries={options['queries']}",
                f"--questions={options['questions']}",
                f"--base-texts={options['base_texts']}",
                f"--ttft-ms={options['ttft_ms']}",
                f"--tokens-per-s={options['tokens_per_s']}",
            ]
            run_isolated("bench_answer", arguments + (["--json"] if options["json"] else []))
            return
        self._bench(sizes, options)

    def _bench(self, sizes: list[int], options: dict[str, Any]) -> None:
        from django.contrib.auth.models import Group, User

        from ingestion.access import access_tags_for_user
        from ingestion.models import group_tag
        from ingestion.passage_vectors import dense, sparse
        from ingestion.vector_index.configured import vector_index
        from ingestion.vector_index.edge import EdgeIndex

        load = machine_load()
        call_command("migrate", interactive=False, verbosity=0)
        groups = [Group.objects.create(name=f"department-{number}") for number in range(GROUPS)]
        reader = User.objects.create_user("bench-reader")
        reader.groups.set(groups[:READER_GROUPS])
        access_tags = sorted(access_tags_for_user(reader))

        corpus, queries = scifact_texts()
        self.stderr.write(f"Embedding {options['base_texts']} SciFact texts ...")
        passages = SyntheticPassages(
            corpus, options["base_texts"], [group_tag(group.id) for group in groups]
        )
        search_queries = queries[: options["queries"]]
        dense_queries = dense().encode(search_queries)
        sparse_queries = [sparse().encode_query(query) for query in search_queries]

        index = vector_index()
        result: dict[str, Any] = {}
        filled = 0
        for size in sizes:
            self.stderr.write(f"Filling the index to {size} passages ...")
            started = time.perf_counter()
            for batch in passages.points(filled, size):
                index.upsert(batch)
            if isinstance(index, EdgeIndex):
                index.optimize()
            filled = size
            fill_s = time.perf_counter() - started
            readable = index.count(only_active=True)
            label = size_label(size)
            without, with_embedding, hits = self._time_searches(
                index, access_tags, search_queries, dense_queries, sparse_queries
            )
            result.update(
                {
                    f"search_p50_ms_{label}": round(percentile(without, 0.5), 2),
                    f"search_p95_ms_{label}": round(percentile(without, 0.95), 2),
                    f"search_with_embedding_p50_ms_{label}": round(
                        percentile(with_embedding, 0.5), 2
                    ),
                    f"search_with_embedding_p95_ms_{label}": round(
                        percentile(with_embedding, 0.95), 2
                    ),
                    f"fill_s_{label}": round(fill_s, 1),
                    f"mean_hits_{label}": round(hits, 1),
                }
            )
            self.stdout.write(
                f"{size} passages ({readable} indexed, filled in {fill_s:.1f} s)\n"
                f"  search, access filter      p50 {result[f'search_p50_ms_{label}']} ms"
                f"  p95 {result[f'search_p95_ms_{label}']} ms\n"
                f"  search with embedding      p50 "
                f"{result[f'search_with_embedding_p50_ms_{label}']} ms"
                f"  p95 {result[f'search_with_embedding_p95_ms_{label}']} ms"
            )

        questions = queries[options["queries"] : options["queries"] + options["questions"]]
        overhead = self._time_first_tokens(reader, questions, options)
        result.update(overhead)
        result.update(
            {
                "queries": len(search_queries),
                "questions": len(questions),
                "reader_groups": READER_GROUPS,
                "groups": GROUPS,
                "simulator_ttft_ms": options["ttft_ms"],
                "question_backend": dense().question_backend,
                **load,
            }
        )
        self.stdout.write(
            f"questions encoded by {dense().question_note or dense().question_backend}\n"
            f"time to first token, {len(questions)} answers on {size_label(sizes[-1])} passages\n"
            f"  through the service        p50 {overhead['app_ttft_p50_ms']} ms"
            f"  p95 {overhead['app_ttft_p95_ms']} ms\n"
            f"  the simulator's own        p50 {overhead['simulator_ttft_p50_ms']} ms"
            f"  p95 {overhead['simulator_ttft_p95_ms']} ms\n"
            f"  overhead (difference)      p50 {overhead['overhead_ttft_p50_ms']} ms"
            f"  p95 {overhead['overhead_ttft_p95_ms']} ms\n"
            f"{load['cpus']} CPUs, load average {load['load_average_1m']} before it started"
        )
        if options["json"]:
            self.stdout.write(json.dumps(result))

    def _time_searches(
        self,
        index: Any,
        access_tags: list[str],
        queries: list[str],
        dense_queries: np.ndarray,
        sparse_queries: list[tuple[list[int], list[float]]],
    ) -> tuple[list[float], list[float], float]:
        """Milliseconds per search as answers search, without and with embedding the query."""
        from ingestion.access import index_scope
        from ingestion.passage_vectors import query_vectors
        from ingestion.vector_index import SparseVec

        scope = index_scope(access_tags, only_active=True)
        assert scope is not None, "the reader holds tags"

        def search(dense: list[float], sparse: SparseVec) -> int:
            hits = index.search(
                dense=dense,
                sparse=sparse,
                scope=scope,
                limit=settings.RETRIEVAL_TOP_K * 3,
                mode="hybrid",
                candidates=settings.RETRIEVAL_CANDIDATES,
                fusion="rrf" if settings.RETRIEVAL_FUSION == "rrf" else "dbsf",
            )
            return len(hits)

        prepared = [
            (vector.tolist(), SparseVec(*sparse))
            for vector, sparse in zip(dense_queries, sparse_queries, strict=True)
        ]
        for dense, sparse in prepared[:WARM_UP_QUERIES]:
            search(dense, sparse)
        without: list[float] = []
        hits = 0
        for dense, sparse in prepared:
            started = time.perf_counter()
            hits += search(dense, sparse)
            without.append((time.perf_counter() - started) * 1000)
        with_embedding: list[float] = []
        for query in queries:
            started = time.perf_counter()
            vectors = query_vectors(query)
            search(vectors.dense, vectors.sparse)
            with_embedding.append((time.perf_counter() - started) * 1000)
        return without, with_embedding, hits / len(prepared)

    def _time_first_tokens(
        self, reader: Any, questions: list[str], options: dict[str, Any]
    ) -> dict[str, float]:
        """Time to the first reasoning or answer token through the answering service, minus
        the simulator's own time to first token for the same request."""
        from assistant.api import answer_stream
        from inference.simulator import run_simulator_in_thread

        async def first_token_ms(question: str) -> float | None:
            started = time.perf_counter()
            first: float | None = None
            events = answer_stream(
                user=reader, question=question, conversation_id=None, request_id=""
            )
            async with aclosing(events):
                async for event in events:
                    if first is None and event.kind in ANSWER_EVENT_KINDS and event.text:
                        first = (time.perf_counter() - started) * 1000
            return first

        async def measure() -> tuple[list[float], list[float]]:
            service: list[float] = []
            simulator: list[float] = []
            for number, question in enumerate(questions_with_warm_up):
                before = len(handle.stats.records())
                seen = await first_token_ms(question)
                records = handle.stats.records()[before:]
                if number < WARM_UP_QUESTIONS:
                    continue
                # Like with like: the first text either side shows, not the think tag.
                own = [r.first_text_s for r in records if r.stream and r.first_text_s is not None]
                if seen is None or len(own) != 1:
                    raise CommandError(f"No streamed first token for question {question!r}.")
                service.append(seen)
                simulator.append(own[0] * 1000)
            return service, simulator

        questions_with_warm_up = questions[:WARM_UP_QUESTIONS] + questions
        with run_simulator_in_thread(
            port=0, ttft_ms=options["ttft_ms"], tokens_per_s=options["tokens_per_s"]
        ) as handle:
            settings.VLLM_URLS = [handle.url]
            service, simulator = async_to_sync(measure)()
        overheads = [seen - own for seen, own in zip(service, simulator, strict=True)]
        return {
            "app_ttft_p50_ms": round(percentile(service, 0.5), 1),
            "app_ttft_p95_ms": round(percentile(service, 0.95), 1),
            "simulator_ttft_p50_ms": round(percentile(simulator, 0.5), 1),
            "simulator_ttft_p95_ms": round(percentile(simulator, 0.95), 1),
            "overhead_ttft_p50_ms": round(percentile(overheads, 0.5), 1),
            "overhead_ttft_p95_ms": round(percentile(overheads, 0.95), 1),
        }
