from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from ingestion.commands_support import INNER_FLAG, run_isolated, scifact_corpus_path


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
        parser.add_argument(INNER_FLAG, action="store_true", help="(internal)")

    def handle(self, *args: Any, **options: Any) -> None:
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

        from ingestion.index import dense, passage_for_embedding
        from ingestion.models import Chunk, DocumentVersion, VersionStatus
        from ingestion.runner import run_pending_once
        from ingestion.services import document_upload

        call_command("migrate", interactive=False, verbosity=0)
        source_dir = (
            Path(options["path"]) if options["path"] else self._write_scifact(options["docs"])
        )
        files = sorted(p for p in source_dir.rglob("*") if p.is_file())
        encoder = dense()
        encoder.encode(["warm up the model before the clock starts"])
        self.stderr.write(f"Ingesting {len(files)} files ({encoder.precision}) ...")

        started = time.perf_counter()
        for path in files:
            with path.open("rb") as handle:
                document_upload(
                    name=path.name,
                    file=File(handle, name=path.name),
                    source_path=str(path),
                    is_public=True,
                )
        run_pending_once()
        pipeline_s = time.perf_counter() - started

        failed = DocumentVersion.objects.exclude(status=VersionStatus.READY).count()
        chunks = list(Chunk.objects.select_related("version__document").order_by("id"))
        texts = [
            passage_for_embedding(
                title=chunk.version.document.title, heading=chunk.heading, text=chunk.text
            )
            for chunk in chunks
        ]
        self.stderr.write(f"{len(chunks)} passages; measuring the raw model on the same texts ...")

        started = time.perf_counter()
        encoder.encode(texts)
        raw_s = time.perf_counter() - started

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
            "pipeline_s": round(pipeline_s, 2),
            "pipeline_chunks_per_s": round(len(chunks) / pipeline_s, 2),
            "raw_chunks_per_s": round(len(chunks) / raw_s, 2),
            "raw_fp32_chunks_per_s": round(len(chunks) / raw_fp32_s, 2),
            "pipeline_vs_raw": round(raw_s / pipeline_s, 3),
            "pipeline_vs_raw_fp32": round(raw_fp32_s / pipeline_s, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "cpu": cpu_name(),
            "cpu_bf16": encoder.precision == "bf16",
        }
        self.stdout.write(
            f"documents           {result['documents']} ({failed} not ready)\n"
            f"passages            {result['chunks']}\n"
            f"precision           {result['precision']}\n"
            f"pipeline            {result['pipeline_chunks_per_s']} passages/s\n"
            f"raw model ({result['precision']})   {result['raw_chunks_per_s']} passages/s\n"
            f"raw model (fp32)    {result['raw_fp32_chunks_per_s']} passages/s\n"
            f"pipeline / raw      {result['pipeline_vs_raw']}x\n"
            f"pipeline / fp32     {result['pipeline_vs_raw_fp32']}x\n"
            f"peak memory         {result['peak_rss_mb']} MB\n"
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


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
