from __future__ import annotations

import contextlib
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from assistant.evaluation.throwaway_runs import (
    INNER_FLAG,
    run_isolated,
    scifact_corpus_path,
    shared_data_dir,
)
from bench.measures import cpu_snapshot, cpu_split, processor_name, thread_native_id


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Command(BaseCommand):
    help = (
        "Measure ingestion throughput end to end against the raw embedding model "
        "(fp32 and the configured precision) on the same passages."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--docs", type=int, default=1000, help="SciFact abstracts to ingest")
        parser.add_argument("--path", default="", help="ingest this folder instead of SciFact")
        parser.add_argument("--json", action="store_true", help="last line: one JSON object")
        parser.add_argument(
            "--parse-only",
            action="store_true",
            help="only compare parsing in this process with parsing in the sandbox, on --path "
            "or the shared sample documents",
        )
        parser.add_argument("--rounds", type=int, default=3, help="with --parse-only: passes")
        parser.add_argument(INNER_FLAG, action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["parse_only"]:
            # Parsing writes nothing, so it needs no throw-away data folder.
            self._bench_parse(options)
            return
        if not options["inner_run"]:
            self._run_isolated(options)
            return
        self._bench(options)

    def _run_isolated(self, options: dict[str, Any]) -> None:
        arguments = ["--docs", str(options["docs"])]
        if options["path"]:
            arguments += ["--path", str(Path(options["path"]).resolve())]
        run_isolated("bench_ingest", [*arguments, "--json"] if options["json"] else arguments)

    def _bench(self, options: dict[str, Any]) -> None:
        from sentence_transformers import SentenceTransformer

        from inference.embedder import best_precision
        from ingestion.local_files import local_files_upload
        from ingestion.models import FINAL_STATUSES, Chunk, DocumentVersion, VersionStatus
        from ingestion.passage_vectors import dense, passage_for_embedding
        from ingestion.runner import RUNNER_THREAD_NAME, runner_start, runner_stop

        call_command("migrate", interactive=False, verbosity=0)
        source_dir = (
            Path(options["path"]) if options["path"] else self._write_scifact(options["docs"])
        )
        files = sorted(p for p in source_dir.rglob("*") if p.is_file())
        encoder = dense()
        encoder.encode(["warm up the model before the clock starts"])
        self.stderr.write(
            f"Ingesting {len(files)} files ({encoder.backend}, {encoder.precision}) ..."
        )

        # As `ingest` does: the runner reads and embeds files while the rest are stored.
        cpu_before = cpu_snapshot()
        started = time.perf_counter()
        runner_start()
        try:
            local_files_upload([(path, str(path)) for path in files], is_public=True)
            upload_s = time.perf_counter() - started
            unfinished = DocumentVersion.objects.exclude(status__in=FINAL_STATUSES)
            while unfinished.exists():
                time.sleep(0.05)
            pipeline_s = time.perf_counter() - started
            # Where the cores went meanwhile: the engine's own threads, storing the uploads
            # (this thread), the runner's parsing and bookkeeping, the parser processes.
            cpu_s = cpu_split(
                cpu_before,
                cpu_snapshot(),
                {
                    "uploads": threading.main_thread().native_id,
                    "runner": thread_native_id(RUNNER_THREAD_NAME),
                },
            )
        finally:
            runner_stop()

        failed = DocumentVersion.objects.exclude(status=VersionStatus.READY).count()
        chunks = list(Chunk.objects.select_related("version__document").order_by("id"))
        texts = [
            passage_for_embedding(
                title=chunk.version.document.title, heading=chunk.heading, text=chunk.text
            )
            for chunk in chunks
        ]
        self.stderr.write(f"{len(chunks)} passages; measuring the raw model on the same texts ...")

        raw_cpu_before = cpu_snapshot()
        started = time.perf_counter()
        encoder.encode(texts)
        raw_s = time.perf_counter() - started
        raw_cpu_s = cpu_split(raw_cpu_before, cpu_snapshot(), {})["total"]

        # sentence-transformers as it comes: torch, fp32, its own defaults.
        default_model = SentenceTransformer(str(encoder.model_path), device="cpu")
        default_model.encode(texts[:8])
        started = time.perf_counter()
        default_model.encode(texts)
        raw_fp32_s = time.perf_counter() - started

        result = {
            "documents": len(files),
            "failed": failed,
            "chunks": len(chunks),
            "precision": encoder.precision,
            "backend": encoder.backend,
            "backend_note": encoder.backend_note,
            "pipeline_s": round(pipeline_s, 2),
            # Storing each file and its ledger record, while the first files are ingested.
            "upload_s": round(upload_s, 2),
            "pipeline_chunks_per_s": round(len(chunks) / pipeline_s, 2),
            "raw_chunks_per_s": round(len(chunks) / raw_s, 2),
            "raw_fp32_chunks_per_s": round(len(chunks) / raw_fp32_s, 2),
            "raw_default_fp32_chunks_per_s": round(len(chunks) / raw_fp32_s, 2),
            "pipeline_vs_raw": round(raw_s / pipeline_s, 3),
            "pipeline_vs_raw_fp32": round(raw_fp32_s / pipeline_s, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            # CPU seconds, for what stands between the pipeline and its engine: the cores'
            # time while the pipeline ran, where it went, and what the engine alone needs.
            "pipeline_cpu_s": cpu_s,
            "pipeline_cores_s": round(pipeline_s * (os.cpu_count() or 1), 2),
            "raw_cpu_s": raw_cpu_s,
            "cpu": processor_name(),
            # Whether the CPU computes bf16 natively, whatever precision was configured.
            "cpu_bf16": best_precision() == "bf16",
        }
        self.stdout.write(
            f"documents           {result['documents']} ({failed} not ready)\n"
            f"passages            {result['chunks']}\n"
            f"precision           {result['precision']}\n"
            f"backend             {result['backend']} ({result['backend_note']})\n"
            f"pipeline            {result['pipeline_chunks_per_s']} passages/s\n"
            f"  uploads took      {result['upload_s']} s of {result['pipeline_s']} s\n"
            f"raw model ({result['precision']})   {result['raw_chunks_per_s']} passages/s\n"
            f"raw model (fp32)    {result['raw_fp32_chunks_per_s']} passages/s\n"
            f"pipeline / raw      {result['pipeline_vs_raw']}x\n"
            f"pipeline / fp32     {result['pipeline_vs_raw_fp32']}x\n"
            f"CPU while ingesting {cpu_s['total']} s of {result['pipeline_cores_s']} s: "
            f"native threads (the engine's) {cpu_s['native_threads']}, uploads "
            f"{cpu_s['uploads']}, runner {cpu_s['runner']}, parser processes "
            f"{cpu_s['child_processes']}, other {cpu_s['other']}\n"
            f"CPU of the raw model {raw_cpu_s} s\n"
            f"peak memory         {result['peak_rss_mb']} MB\n"
            f"cpu                 {result['cpu']}"
        )
        if options["json"]:
            self.stdout.write(json.dumps(result))

    def _bench_parse(self, options: dict[str, Any]) -> None:
        from ingestion.parsing import ParseError, parse_document
        from ingestion.sandbox import (
            limits_from_settings,
            parse_document_isolated,
            sandbox_warm_up,
        )

        folder = Path(options["path"]) if options["path"] else shared_data_dir() / "samples"
        paths = sorted(path for path in folder.rglob("*") if path.is_file())
        files = [(path.name, data) for path in paths if (data := path.read_bytes())]
        if not files:
            raise CommandError(f"No files under {folder}.")
        limits, sandbox = limits_from_settings()

        def in_process(name: str, data: bytes) -> None:
            parse_document(data, name, limits=limits)

        def isolated(name: str, data: bytes) -> None:
            parse_document_isolated(data, name, limits=limits, sandbox=sandbox)

        started = time.perf_counter()
        sandbox_warm_up()
        server_start_s = time.perf_counter() - started
        totals = {in_process: 0.0, isolated: 0.0}
        for _ in range(max(1, options["rounds"])):
            for name, data in files:
                # Interleaved, so that a slower moment of the machine weighs on both alike.
                for parse in (in_process, isolated):
                    started = time.perf_counter()
                    with contextlib.suppress(ParseError):
                        parse(name, data)
                    totals[parse] += time.perf_counter() - started
        parses = len(files) * max(1, options["rounds"])
        in_process_ms = totals[in_process] / parses * 1000
        isolated_ms = totals[isolated] / parses * 1000
        result = {
            "documents": len(files),
            "megabytes": round(sum(len(data) for _, data in files) / (1024 * 1024), 1),
            "rounds": max(1, options["rounds"]),
            "in_process_ms_per_document": round(in_process_ms, 2),
            "sandbox_ms_per_document": round(isolated_ms, 2),
            "sandbox_overhead_ms_per_document": round(isolated_ms - in_process_ms, 2),
            "sandbox_vs_in_process": round(isolated_ms / in_process_ms, 3),
            "sandbox_server_start_s": round(server_start_s, 2),
            "cpu": processor_name(),
        }
        self.stdout.write(
            f"documents           {result['documents']} ({result['megabytes']} MB), "
            f"{result['rounds']} rounds\n"
            f"in process          {result['in_process_ms_per_document']} ms/document\n"
            f"sandbox             {result['sandbox_ms_per_document']} ms/document\n"
            f"sandbox overhead    {result['sandbox_overhead_ms_per_document']} ms/document\n"
            f"sandbox / process   {result['sandbox_vs_in_process']}x\n"
            f"server start        {result['sandbox_server_start_s']} s (once per process)\n"
            f"cpu                 {result['cpu']}"
        )
        if options["json"]:
            self.stdout.write(json.dumps(result))

    def _write_scifact(self, limit: int) -> Path:
        corpus = scifact_corpus_path()
        folder = Path(settings.DATA_DIR) / "scifact-docs"
        folder.mkdir(parents=True, exist_ok=True)
        with corpus.open() as lines:
            for count, line in enumerate(lines):
                if count >= limit:
                    break
                record = json.loads(line)
                (folder / f"{record['_id']}.md").write_text(
                    f"# {record['title']}\n\n{record['text']}\n"
                )
        return folder
