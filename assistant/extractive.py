"""Answers without a language model: the retrieved sentences that best match the question."""

from __future__ import annotations

import math
import re
from collections import Counter

from assistant.retrieval import Passage
from inference.prompting import ABSTAIN_MARKER

MAX_SENTENCES = 3
MAX_CHARS = 900
# A sentence must cover this share of the question's weighted terms to count as an answer.
MIN_COVERAGE = 0.3

STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "about",
        "after",
        "all",
        "also",
        "any",
        "been",
        "before",
        "being",
        "between",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "over",
        "same",
        "should",
        "some",
        "such",
        "than",
        "too",
        "under",
        "until",
        "very",
        "would",
        "could",
        "did",
        "doing",
        "during",
        "further",
        "here",
        "just",
        "only",
        "own",
        "off",
        "out",
        "up",
        "down",
        "again",
        "once",
        "tell",
        "please",
        "show",
        "give",
        "find",
        "know",
    ]
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\n{2,}|\n(?=[-*•]\s)")
_WORD = re.compile(r"\w+")


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) > 15]


def extractive_answer(query: str, passages: list[Passage]) -> tuple[str, bool]:
    """(answer text with [n] citations, whether it answers); an abstention otherwise."""
    query_terms = set(_terms(query))
    candidates = [
        (n, position, sentence)
        for n, passage in enumerate(passages, start=1)
        for position, sentence in enumerate(_sentences(passage.text))
    ]
    if not query_terms or not candidates:
        return f"{ABSTAIN_MARKER}: no passage you may read matches the question.", False
    # Rarer question terms (across the retrieved sentences) count for more.
    document_frequency: Counter[str] = Counter()
    sentence_terms = []
    for _, _, sentence in candidates:
        terms = set(_terms(sentence))
        sentence_terms.append(terms)
        document_frequency.update(terms & query_terms)
    total = len(candidates)
    weight = {t: math.log(1 + total / (1 + document_frequency[t])) for t in query_terms}
    total_weight = sum(weight.values())
    scored = []
    for (n, position, sentence), terms in zip(candidates, sentence_terms, strict=True):
        coverage = sum(weight[t] for t in terms & query_terms) / total_weight
        # Earlier-ranked passages are more likely to hold the answer.
        scored.append((coverage / (1 + 0.05 * (n - 1)), coverage, n, position, sentence))
    scored.sort(key=lambda row: -row[0])
    best_coverage = max(row[1] for row in scored)
    if best_coverage < MIN_COVERAGE:
        return f"{ABSTAIN_MARKER}: no passage you may read matches the question closely.", False
    chosen: list[tuple[int, int, str]] = []
    length = 0
    for score, coverage, n, position, sentence in scored:
        if coverage < MIN_COVERAGE or score < 0.5 * scored[0][0] or len(chosen) == MAX_SENTENCES:
            break
        if length + len(sentence) > MAX_CHARS and chosen:
            break
        chosen.append((n, position, sentence))
        length += len(sentence)
    chosen.sort(key=lambda row: (row[0], row[1]))
    return " ".join(f"{' '.join(sentence.split())} [{n}]" for n, _, sentence in chosen), True
