from __future__ import annotations

import functools
import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction
from django.db.models import Avg
from django.db.models.functions import Length

from assistant.evaluation.throwaway_runs import INNER_FLAG, run_isolated
from bench.measures import percentile

FILL_BATCH = 500
CONCURRENT_THREADS = 8
CONCURRENT_APPENDS = 25

WORDS = [
    "policy",
    "travel",
    "expense",
    "approval",
    "director",
    "contract",
    "licence",
    "price",
    "discount",
    "security",
    "board",
    "launch",
    "schedule",
    "flight",
    "trial",
    "wind",
    "tunnel",
    "receipt",
    "meal",
    "hotel",
    "train",
    "class",
    "journey",
    "seat",
    "renewal",
    "customer",
    "invoice",
    "payment",
    "supplier",
    "audit",
    "review",
    "quarter",
    "budget",
    "forecast",
    "risk",
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class AnswerShapes:
    """Answers of realistic size: eight passages of a few hundred words, shown twice (as
    passages and inside the prompt), reasoning, an answer citing two of them."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.passage_texts = [_text(rng, 150) for _ in range(64)]
        self.reasonings = [_text(rng, 300) for _ in range(16)]
        self.answers = [_text(rng, 90) + " [1] [3]" for _ in range(16)]

    def fields(self, number: int) -> dict[str, Any]:
        rng = self.rng
        passages = [
            {
                "n": rank,
                "rank": rank,
                "point_id": f"00000000-0000-4000-8000-{(number * 8 + rank):012d}",
                "document_id": rng.randrange(1, 2000),
                "version_id": rng.randrange(1, 4000),
                "title": f"Document {rank}",
                "source": f"docs/document-{rank}.pdf",
                "page": rank,
                "heading": "Policy > Details",
                "score": round(rng.random(), 6),
                "text": rng.choice(self.passage_texts),
            }
            for rank in range(1, 9)
        ]
        question = f"Question {number}: what does the {rng.choice(WORDS)} policy say?"
        sources = "\n\n".join(f"[{p['n']}] {p['text']}" for p in passages)
        return {
            "question": question,
            "searched_query": question,
            "answer": rng.choice(self.answers),
            "reasoning": rng.choice(self.reasonings),
            "status": rng.choice(["answered"] * 8 + ["abstained", "failed"]),
            "mode": "llm",
            "passages": passages,
            "citations": [1, 3],
            "dropped_citations": [],
            "model_name": "deepseek-r1",
            "endpoint": "http://vllm-1:8000/v1",
            "prompt": [{"role": "user", "content": f"Answer from the sources.\n\n{sources}"}],
            "sampling": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096},
            "prompt_tokens": 2400,
            "completion_tokens": 600,
            "first_token_ms": 420.0,
            "total_ms": 9100.0,
            "error": "",
        }


class Command(BaseCommand):
    help = (
        "Measure the audit ledger: the cost of writing one answer record (p50, p95) beside the "
        "answer transaction without it, and audit_verify throughput on N records. Runs in a "
        "throw-away standalone data folder; the real ledger is not touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--records", type=int, default=100_000, help="ledger size to verify")
        parser.add_argument("--samples", type=int, default=200, help="timed answer transactions")
        parser.add_argument("--json", action="store_true", help="last line: one JSON object")
        parser.add_argument(INNER_FLAG, action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["records"] < 1 or options["samples"] < 1:
            raise CommandError("--records and --samples must be 1 or more.")
        if not options["inner_run"]:
            self._run_isolated(options)
            return
        self._bench(options)

    def _run_isolated(self, options: dict[str, Any]) -> None:
        arguments = ["--records", str(options["records"]), "--samples", str(options["samples"])]
        run_isolated("bench_audit", [*arguments, "--json"] if options["json"] else arguments)

    def _bench(self, options: dict[str, Any]) -> None:
        from django.contrib.auth.models import Group, User

        from audit.ledger import LedgerEntry, ledger_append_many
        from audit.models import AuditRecord
        from audit.verify import ledger_verify

        call_command("migrate", interactive=False, verbosity=0)
        user = User.objects.create_user("bench-employee")
        user.groups.add(Group.objects.create(name="bench-readers"))
        shapes = AnswerShapes()

        self.stderr.write(
            f"Timing {options['samples']} answer transactions with and without a record ..."
        )
        timings = self._time_answers(user, shapes, options["samples"])

        self.stderr.write(f"Filling the ledger to {options['records']:,} records ...")
        started = time.perf_counter()
        while (missing := options["records"] - AuditRecord.objects.count()) > 0:
            entries = [
                LedgerEntry(event="answer", actor=user, details=shapes.fields(number))
                for number in range(min(FILL_BATCH, missing))
            ]
            with transaction.atomic():
                ledger_append_many(entries)
        fill_s = time.perf_counter() - started
        records = AuditRecord.objects.count()

        self.stderr.write("Verifying the chain ...")
        started = time.perf_counter()
        verified = ledger_verify()
        verify_s = time.perf_counter() - started
        if not verified.intact:
            raise CommandError(f"The fresh ledger did not verify: {verified.problem}")

        list_ms = self._time_listing(user)
        concurrent_intact = self._concurrent_appends(user, shapes)
        details_chars = AuditRecord.objects.aggregate(average=Avg(Length("details")))["average"]
        result = {
            "database": connections["default"].vendor,
            "write_p50_ms": round(statistics.median(timings["write"]), 3),
            "write_p95_ms": round(percentile(timings["write"], 0.95), 3),
            "answer_tx_p50_ms": round(statistics.median(timings["without"]), 3),
            "answer_tx_with_record_p50_ms": round(statistics.median(timings["with"]), 3),
            "write_ratio": round(
                statistics.median(timings["with"]) / statistics.median(timings["without"]), 3
            ),
            "records": records,
            "details_kb_avg": round(details_chars / 1024, 1),
            "fill_records_per_s": round(records / fill_s),
            "verify_s": round(verify_s, 2),
            "verify_records_per_s": round(verified.checked / verify_s),
            "list_p50_ms": list_ms,
            "concurrent_appends": CONCURRENT_THREADS * CONCURRENT_APPENDS,
            "concurrent_chain_intact": concurrent_intact,
        }
        self.stdout.write(
            f"answer transaction          {result['answer_tx_p50_ms']} ms p50 without a record\n"
            f"  with its audit record     {result['answer_tx_with_record_p50_ms']} ms p50 "
            f"({result['write_ratio']}x)\n"
            f"writing the record          {result['write_p50_ms']} ms p50, "
            f"{result['write_p95_ms']} ms p95\n"
            f"ledger                      {records:,} records, "
            f"details of {result['details_kb_avg']} KB each\n"
            f"audit_verify                {result['verify_s']} s, "
            f"{result['verify_records_per_s']:,} records/s\n"
            f"review list (first page)    "
            + ", ".join(f"{name} {ms} ms" for name, ms in list_ms.items())
            + "\n"
            f"concurrent appends          {result['concurrent_appends']} from "
            f"{CONCURRENT_THREADS} threads, chain intact: {concurrent_intact}"
        )
        if options["json"]:
            self.stdout.write(json.dumps(result))

    def _time_answers(
        self, user: Any, shapes: AnswerShapes, samples: int
    ) -> dict[str, list[float]]:
        """The same answer transaction, alternately without and with its ledger record."""
        from assistant.models import Answer, Conversation
        from audit.ledger import ledger_append

        conversation = Conversation.objects.create(user=user, title="Benchmark")
        columns = {field.name for field in Answer._meta.concrete_fields}

        def answer_transaction(number: int, record: bool) -> tuple[float, float]:
            fields = shapes.fields(number)
            started = time.perf_counter()
            write_ms = 0.0
            with transaction.atomic():
                answer = Answer.objects.create(
                    conversation=conversation,
                    user=user,
                    **{name: value for name, value in fields.items() if name in columns},
                )
                if record:
                    write_started = time.perf_counter()
                    ledger_append(
                        event="answer", actor=user, details={**fields, "answer_id": answer.id}
                    )
                    write_ms = (time.perf_counter() - write_started) * 1000
            return (time.perf_counter() - started) * 1000, write_ms

        for number in range(10):
            answer_transaction(number, record=number % 2 == 0)
        timings: dict[str, list[float]] = {"without": [], "with": [], "write": []}
        for number in range(samples):
            timings["without"].append(answer_transaction(number, record=False)[0])
            total_ms, write_ms = answer_transaction(number, record=True)
            timings["with"].append(total_ms)
            timings["write"].append(write_ms)
        return timings

    def _time_listing(self, user: Any) -> dict[str, float]:
        """The review list's first page (50 rows and the count) under common filters."""
        from audit.review import AuditFilters, audit_records_filtered

        cases = {
            "all": AuditFilters(),
            "user": AuditFilters(username=user.get_username()),
            "status": AuditFilters(status="failed"),
            "document": AuditFilters(document_id=42),
            "flagged": AuditFilters(flagged=True),
            "text": AuditFilters(text="Question 4"),
        }
        results = {}
        for name, filters in cases.items():
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                records = audit_records_filtered(filters)
                records.count()
                list(records.values_list("sequence", "summary")[:50])
                runs.append((time.perf_counter() - started) * 1000)
            results[name] = round(statistics.median(runs), 1)
        return results

    def _concurrent_appends(self, user: Any, shapes: AnswerShapes) -> bool:
        """Threads appending at once must leave one linear chain."""
        from audit.ledger import ledger_append
        from audit.verify import ledger_verify

        errors: list[BaseException] = []
        barrier = threading.Barrier(CONCURRENT_THREADS)

        def append_some(offset: int) -> None:
            try:
                barrier.wait()
                for number in range(CONCURRENT_APPENDS):
                    with transaction.atomic():
                        ledger_append(
                            event="answer", actor=user, details=shapes.fields(offset + number)
                        )
            except BaseException as error:  # reported below, the thread must not die silently
                errors.append(error)
            finally:
                connections.close_all()

        _run_threads(
            [
                functools.partial(append_some, n * CONCURRENT_APPENDS)
                for n in range(CONCURRENT_THREADS)
            ]
        )
        if errors:
            raise CommandError(f"A concurrent append failed: {errors[0]!r}")
        return ledger_verify().intact


def _run_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
