"""How well an answer is supported: for each sentence, does a passage it cites say the same?

No model is asked. Each sentence of the answer is held against the passages it cites (its own
[n] markers; a sentence without one against every passage the answer cites):

- lexical overlap: the share of the sentence's content words found in the passage;
- embedding cosine: the product's own encoder (`ingestion.passage_vectors.dense`), the best
  cosine between the sentence and the passage or one of the passage's sentences;
- numbers: every number in the sentence must occur in the passage ("25 days" is not
  supported by a passage saying "20 days", however alike the two sentences read).

A sentence is supported when its numbers are in a cited passage and that passage overlaps it
enough, lexically or in meaning (the thresholds below). Sentences of fewer than
`MIN_WORDS` words (headings, "Sources:") are not measured.

The measure runs after the answer is recorded, on a thread of its own (`support_later`, from
a post-save hook: the stream has ended by then), or when an auditor first looks
(`support_for_answer`). It never runs while its own answer streams; while others are
being served it encodes on one core and takes a bounded share of it.
"""

from __future__ import annotations

import atexit
import logging
import queue
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import QuerySet

from assistant.extractive import STOPWORDS
from assistant.insight.vectors import VectorCache
from assistant.models import Answer, AnswerStatus, AnswerSupport
from config.activity import serving_activity

logger = logging.getLogger(__name__)

METHOD = "overlap-cosine-numbers/1"
# Answers worth measuring: they say something; abstentions and failures do not.
SUPPORT_STATUSES = (
    AnswerStatus.ANSWERED,
    AnswerStatus.CUT_OFF,
    AnswerStatus.CANCELLED,
    AnswerStatus.INTERRUPTED,
)
MIN_WORDS = 3
# Supported when the numbers match and: most content words are in the passage, or the
# meaning is very close, or both are fairly close.
OVERLAP_ALONE = 0.6
COSINE_ALONE = 0.75
OVERLAP_WITH_COSINE = 0.3
COSINE_WITH_OVERLAP = 0.55
# A passage is compared sentence by sentence; a very long one only by its first sentences.
MAX_PASSAGE_UNITS = 40
PASSAGE_UNIT_CACHE = 20_000

_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_LEADING_CITATIONS = re.compile(r"^(?:\s*\[\d{1,3}(?:\s*,\s*\d{1,3})*\])+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LINE_MARK = re.compile(r"^\s*(?:#{1,6}\s+|[-*+]\s+|\d{1,3}[.)]\s+|>\s*)+")
_WORD = re.compile(r"[^\W_]+(?:[.,'\u2019][^\W_]+)*")
_MARKUP = re.compile(r"[*_`|]+")


@dataclass(frozen=True)
class Sentence:
    text: str
    cited: tuple[int, ...] = ()


@dataclass
class SentenceSupport:
    text: str
    cited: list[int]
    supported: bool
    passage: int | None = None
    overlap: float = 0.0
    cosine: float = 0.0
    reason: str = ""


@dataclass
class SupportResult:
    sentences: list[SentenceSupport] = field(default_factory=list)

    @property
    def supported_count(self) -> int:
        return sum(1 for sentence in self.sentences if sentence.supported)


# ---- Text --------------------------------------------------------------------------------------


_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
)
_TENS_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_UNITS = {word: value for value, word in enumerate(_NUMBER_WORDS.split(" "))}
_TENS = {word: 10 * value for value, word in enumerate(_TENS_WORDS.split(" "), start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}


def _clean(text: str) -> str:
    cleaned = " ".join(_MARKUP.sub(" ", _CITATION.sub(" ", text)).split())
    return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", cleaned)


def sentences_of(text: str) -> list[Sentence]:
    """The answer's sentences, each with the passage numbers it cites.

    Markdown line marks, emphasis and code fences are dropped; a marker just after a sentence's
    full stop ("… euros. [1]") belongs to that sentence.
    """
    pieces: list[tuple[str, list[int]]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("```") or set(line) <= set("|-: "):
            continue
        line = _LINE_MARK.sub("", line)
        for part in _SENTENCE_END.split(line):
            leading = _LEADING_CITATIONS.match(part)
            if leading and pieces:
                pieces[-1][1].extend(_numbers_in(leading.group(0)))
                part = part[leading.end() :]
            if part.strip():
                pieces.append((part, _numbers_in(part)))
    sentences = []
    for part, cited in pieces:
        cleaned = _clean(part)
        if cleaned:
            sentences.append(Sentence(cleaned, tuple(dict.fromkeys(cited))))
    return sentences


def _numbers_in(text: str) -> list[int]:
    return [int(n) for group in _CITATION.findall(text) for n in group.split(",")]


def _tokens(text: str) -> list[str]:
    return [token.lower() for token in _WORD.findall(text)]


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def _is_number(token: str) -> bool:
    return any(character.isdigit() for character in token)


def _number(token: str) -> str:
    return token.replace(",", "").replace("\u2019", "").replace("'", "").rstrip(".")


def content_words(text: str) -> set[str]:
    words = {_stem(t) for t in _tokens(text) if t not in STOPWORDS and not _is_number(t)}
    return words | numbers_in(text)


def numbers_in(text: str) -> set[str]:
    """The numbers a text states, in digits or in words ("twenty-five" is 25)."""
    tokens = _tokens(text)
    return {_number(token) for token in tokens if _is_number(token)} | _spelled_numbers(tokens)


def _spelled_numbers(tokens: Sequence[str]) -> set[str]:
    found: set[str] = set()
    total, current, in_number = 0, 0, False
    for token in [*tokens, ""]:
        if token in _UNITS or token in _TENS:
            current += _UNITS.get(token, 0) + _TENS.get(token, 0)
            in_number = True
        elif token in _SCALES and in_number:
            current = max(current, 1) * _SCALES[token]
            if _SCALES[token] >= 1000:
                total, current = total + current, 0
        elif token == "and" and in_number:
            continue
        else:
            # "one" is as often a pronoun as a number; it is not held against a passage.
            if in_number and total + current > 1:
                found.add(str(total + current))
            total, current, in_number = 0, 0, False
    return found


def lexical_overlap(sentence: str, passage: str) -> float:
    """The share of the sentence's content words (and numbers) that the passage holds."""
    words = content_words(sentence)
    if not words:
        return 0.0
    return len(words & content_words(passage)) / len(words)


def measured(sentence: Sentence) -> bool:
    return len(_tokens(sentence.text)) >= MIN_WORDS


# ---- The measure -------------------------------------------------------------------------------


def _passage_units(text: str) -> list[str]:
    units = [s.text for s in sentences_of(text) if measured(s)][:MAX_PASSAGE_UNITS]
    return [_clean(text), *units]


# The passages many answers cite are encoded once; answer sentences rarely repeat.
_passage_units_seen = VectorCache(PASSAGE_UNIT_CACHE)


def _encode(sentences: list[str], units: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from ingestion.passage_vectors import dense

    return dense().encode(sentences), _passage_units_seen.encode(units)


def is_supported(*, overlap: float, cosine: float, numbers_match: bool) -> bool:
    if not numbers_match:
        return False
    return (
        overlap >= OVERLAP_ALONE
        or cosine >= COSINE_ALONE
        or (overlap >= OVERLAP_WITH_COSINE and cosine >= COSINE_WITH_OVERLAP)
    )


def support_measure(answer_text: str, cited_passages: Mapping[int, str]) -> SupportResult:
    """Each measured sentence of `answer_text` against the passages it cites (number -> text)."""
    sentences = [s for s in sentences_of(answer_text) if measured(s)]
    result = SupportResult()
    if not sentences:
        return result
    units = {n: _passage_units(text) for n, text in cited_passages.items()}
    unit_vectors: dict[int, np.ndarray] = {}
    if units:
        sentence_vectors, all_units = _encode(
            [s.text for s in sentences], [unit for n in units for unit in units[n]]
        )
        position = 0
        for n, passage_units in units.items():
            unit_vectors[n] = all_units[position : position + len(passage_units)]
            position += len(passage_units)
    else:
        sentence_vectors = np.zeros((len(sentences), 1), dtype=np.float32)
    for index, sentence in enumerate(sentences):
        own = [n for n in sentence.cited if n in cited_passages]
        candidates = own or list(cited_passages)
        if not candidates:
            result.sentences.append(
                SentenceSupport(
                    sentence.text, list(sentence.cited), False, reason="cites no passage"
                )
            )
            continue
        result.sentences.append(
            _best_support(
                sentence, candidates, cited_passages, sentence_vectors[index], unit_vectors
            )
        )
    return result


def _best_support(
    sentence: Sentence,
    candidates: Sequence[int],
    cited_passages: Mapping[int, str],
    vector: np.ndarray,
    unit_vectors: Mapping[int, np.ndarray],
) -> SentenceSupport:
    best: SentenceSupport | None = None
    numbers = numbers_in(sentence.text)
    for n in candidates:
        text = cited_passages[n]
        overlap = lexical_overlap(sentence.text, text)
        cosine = float(np.max(unit_vectors[n] @ vector)) if len(unit_vectors[n]) else 0.0
        numbers_match = numbers <= numbers_in(text)
        supported = is_supported(overlap=overlap, cosine=cosine, numbers_match=numbers_match)
        if supported:
            reason = "supported"
        elif not numbers_match:
            reason = "a number is not in the passage"
        else:
            reason = "the passage says something else"
        found = SentenceSupport(
            text=sentence.text,
            cited=list(sentence.cited),
            supported=supported,
            passage=n,
            overlap=round(overlap, 3),
            cosine=round(cosine, 3),
            reason=reason,
        )
        if best is None or (found.supported, found.overlap + found.cosine) > (
            best.supported,
            best.overlap + best.cosine,
        ):
            best = found
    assert best is not None
    return best


# ---- Stored per answer -------------------------------------------------------------------------


def measurable_answers(answers: QuerySet[Answer]) -> QuerySet[Answer]:
    return answers.filter(status__in=SUPPORT_STATUSES).exclude(answer="")


def _cited_texts(citations: Iterable[Any]) -> dict[int, str]:
    texts = {}
    for citation in citations:
        if isinstance(citation, Mapping) and isinstance(citation.get("n"), int):
            texts[citation["n"]] = str(citation.get("text") or "")
    return texts


def support_store(answer: Answer) -> AnswerSupport:
    """Measure one answer and keep the result (replacing an older measure)."""
    result = support_measure(answer.answer, _cited_texts(answer.citations))
    support, _ = AnswerSupport.objects.update_or_create(
        answer=answer,
        defaults={
            "sentences": [asdict(sentence) for sentence in result.sentences],
            "sentence_count": len(result.sentences),
            "supported_count": result.supported_count,
            "method": METHOD,
        },
    )
    return support


def support_for_answer(answer: Answer) -> AnswerSupport | None:
    """The answer's support, measured now if it has not been; None when it says nothing."""
    if answer.status not in SUPPORT_STATUSES or not answer.answer:
        return None
    stored = AnswerSupport.objects.filter(answer=answer, method=METHOD).first()
    return stored or support_store(answer)


def supports_fill(answers: QuerySet[Answer], *, limit: int) -> int:
    """Measure up to `limit` answers among `answers` that have no current measure yet."""
    missing = (
        measurable_answers(answers)
        .exclude(support__method=METHOD)
        .order_by("-created_at", "-id")[:limit]
    )
    count = 0
    for answer in missing:
        support_store(answer)
        count += 1
    return count


# ---- After the answer is recorded ---------------------------------------------------------------

# Seconds the support thread waits after an answer is recorded before it measures.
SUPPORT_DELAY_S = 2.0
# The most seconds the end of the process waits for the measure in hand.
SUPPORT_STOP_WAIT_S = 10.0
# While people are being served, the support thread takes at most this share of one core:
# after a measure of t seconds it rests t * (1 - share) / share. Under a steady load the
# measures fall behind rather than take the cores from questions; they catch up when the
# process is quiet (an answer not measured yet is measured when an auditor first opens it).
SUPPORT_SHARE_WHILE_SERVING = 0.25
_pending: queue.SimpleQueue[int | None] = queue.SimpleQueue()
_worker_lock = threading.Lock()
_worker: threading.Thread | None = None
_stopping = threading.Event()


def support_later(answer_id: int) -> None:
    """Measure the answer on the support thread, once the transaction recording it commits."""
    transaction.on_commit(lambda: _enqueue(answer_id))


def _enqueue(answer_id: int) -> None:
    global _worker
    _pending.put(answer_id)
    with _worker_lock:
        if _stopping.is_set():
            return
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_work, name="answer-support", daemon=True)
            _worker.start()


def support_thread_stop() -> None:
    """At the end of the process: let the measure in hand finish, then end the thread.

    A daemon thread still inside the encoder's native code when the interpreter ends aborts
    the process ("exception not rethrown"). Answers not measured yet are measured when an
    auditor first looks at them.
    """
    with _worker_lock:
        _stopping.set()
        worker = _worker
    _pending.put(None)
    if worker is not None and worker is not threading.current_thread():
        worker.join(timeout=SUPPORT_STOP_WAIT_S)


atexit.register(support_thread_stop)


def _work() -> None:
    while not _stopping.is_set():
        waiting = [_pending.get()]
        # Let the page that just received the answer fetch it first; then take every answer
        # recorded meanwhile.
        if _stopping.wait(SUPPORT_DELAY_S):
            return
        while True:
            try:
                waiting.append(_pending.get_nowait())
            except queue.Empty:
                break
        try:
            close_old_connections()
            for answer_id in dict.fromkeys(waiting):
                if answer_id is None or _stopping.is_set():
                    continue
                started = time.monotonic()
                try:
                    support_measure_pending(answer_id)
                except Exception:
                    logger.exception("Measuring the support of answer %s failed", answer_id)
                if serving_activity.in_flight:
                    share = SUPPORT_SHARE_WHILE_SERVING
                    _stopping.wait((time.monotonic() - started) * (1 - share) / share)
        finally:
            connection.close()


def support_measure_pending(answer_id: int) -> None:
    """The support thread's work for one answer; a measure already there is kept.

    Nobody waits for it, so it encodes on one core: on a 2-core machine the other stays
    with the questions being answered meanwhile.
    """
    from ingestion.passage_vectors import dense

    answer = Answer.objects.filter(id=answer_id).first()
    if answer is not None:
        with dense().on_one_core():
            support_for_answer(answer)


def answer_recorded(sender: type[Answer], instance: Answer, **kwargs: Any) -> None:
    """Post-save hook: an answer that has its final words is measured after it commits."""
    if not settings.ANSWER_SUPPORT_AFTER_ANSWER:
        return
    if instance.status in SUPPORT_STATUSES and instance.answer:
        support_later(instance.pk)
