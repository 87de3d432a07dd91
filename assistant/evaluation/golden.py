"""A company's own golden questions: which documents (and pages) should answer each one.

A golden file is JSON Lines; each line has a "question" and its "sources", each a document
path (matched against the end of a document's source path, at a folder boundary) or
{"document": PATH, "pages": [N, ...]} for answers on known pages (1-based). "kind" is free
text that groups questions in the report (fact, howto, named, paraphrase, multi...).

Measures are at document level over the distinct documents of the top ten passages, in the
order their best passage came: hit@5 (a right document among the first five), recall@5
(the share of right documents among the first five), MRR@10 and nDCG@10. Questions whose
sources name pages are also measured at page level over the passages themselves:
page_hit@5 (a passage on a right page among the first five), page_MRR@10, page_nDCG@10.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.evaluation.metrics import distinct

TOP_PASSAGES = 10
MEASURES = ("hit@5", "recall@5", "mrr@10", "ndcg@10")
PAGE_MEASURES = ("page_hit@5", "page_mrr@10", "page_ndcg@10")


@dataclass(frozen=True)
class WantedSource:
    document: str
    pages: frozenset[int] = frozenset()  # empty: any page of the document


@dataclass(frozen=True)
class GoldenQuestion:
    line: int
    question: str
    sources: tuple[WantedSource, ...]
    kind: str = ""

    @property
    def names_pages(self) -> bool:
        return any(source.pages for source in self.sources)


@dataclass(frozen=True)
class Found:
    """One retrieved passage, as the measures see it."""

    source: str
    pages: frozenset[int]
    heading: str = ""
    text: str = ""


Retriever = Callable[[str], Sequence[Found]]


class GoldenFileError(ValueError):
    """A golden file that cannot be read; the message names the file and line."""


def golden_load(path: Path) -> list[GoldenQuestion]:
    questions: list[GoldenQuestion] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise GoldenFileError(f"{path}:{number}: not JSON ({error.msg})") from error
            questions.append(_question(item, f"{path}:{number}", number))
    return questions


def _question(item: Any, where: str, number: int) -> GoldenQuestion:
    question = item.get("question") if isinstance(item, dict) else None
    sources = item.get("sources") if isinstance(item, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise GoldenFileError(f"{where}: each line needs a 'question' and a list of 'sources'")
    if not isinstance(sources, list) or not sources:
        raise GoldenFileError(f"{where}: each line needs a 'question' and a list of 'sources'")
    pages_of: dict[str, set[int]] = {}
    for source in sources:
        if isinstance(source, str) and source.strip():
            pages_of.setdefault(source.strip(), set())
        elif isinstance(source, dict) and isinstance(source.get("document"), str):
            pages = source.get("pages", [])
            if not isinstance(pages, list) or not all(
                isinstance(page, int) and page > 0 for page in pages
            ):
                raise GoldenFileError(f"{where}: 'pages' must be a list of page numbers from 1")
            pages_of.setdefault(source["document"].strip(), set()).update(pages)
        else:
            raise GoldenFileError(
                f'{where}: a source is a document path or {{"document": PATH, "pages": [N]}}'
            )
    return GoldenQuestion(
        line=number,
        question=question.strip(),
        sources=tuple(WantedSource(doc, frozenset(pages)) for doc, pages in pages_of.items()),
        kind=str(item.get("kind", "")),
    )


def source_matches(source: str, wanted: str) -> bool:
    """A stored source path names the wanted document: equal, or ending in it after a '/'."""
    source, wanted = source.replace("\\", "/"), wanted.replace("\\", "/").lstrip("/")
    return source == wanted or source.endswith("/" + wanted)


@dataclass(frozen=True)
class QuestionScore:
    question: GoldenQuestion
    found: tuple[Found, ...]
    measures: dict[str, float]

    @property
    def missed(self) -> bool:
        return self.measures["hit@5"] == 0.0


def _wanted_index(question: GoldenQuestion, source: str) -> int | None:
    for index, wanted in enumerate(question.sources):
        if source_matches(source, wanted.document):
            return index
    return None


def _dcg(gains: Iterable[float]) -> float:
    return sum(gain / math.log2(rank + 2) for rank, gain in enumerate(gains))


def question_score(question: GoldenQuestion, found: Sequence[Found]) -> QuestionScore:
    found = tuple(found[:TOP_PASSAGES])
    ranked = distinct([passage.source for passage in found])
    labels = [_wanted_index(question, source) for source in ranked]
    wanted_count = len(question.sources)
    first_five = {label for label in labels[:5] if label is not None}
    first_hit = next((rank for rank, label in enumerate(labels, 1) if label is not None), 0)
    seen: set[int] = set()
    gains = []
    for label in labels[:TOP_PASSAGES]:
        gains.append(1.0 if label is not None and label not in seen else 0.0)
        if label is not None:
            seen.add(label)
    measures = {
        "hit@5": 1.0 if first_five else 0.0,
        "recall@5": len(first_five) / wanted_count,
        "mrr@10": 1.0 / first_hit if first_hit else 0.0,
        "ndcg@10": _dcg(gains) / _dcg([1.0] * min(wanted_count, TOP_PASSAGES)),
    }
    if question.names_pages:
        measures.update(_page_measures(question, found))
    return QuestionScore(question=question, found=found, measures=measures)


def _page_measures(question: GoldenQuestion, found: Sequence[Found]) -> dict[str, float]:
    """The same at page level: a passage counts when it lies on a page the sources name.

    Each wanted page earns credit once, whichever passage (or window of pages) reaches it.
    """
    wanted_pages = {
        (index, page)
        for index, source in enumerate(question.sources)
        for page in (source.pages or {0})
    }
    credited: set[tuple[int, int]] = set()
    gains: list[float] = []
    for passage in found:
        index = _wanted_index(question, passage.source)
        if index is None:
            reached: set[tuple[int, int]] = set()
        elif not question.sources[index].pages:
            reached = {(index, 0)}
        else:
            reached = {(index, page) for page in passage.pages} & wanted_pages
        new = reached - credited
        credited |= reached
        gains.append(1.0 if new else 0.0)
    relevant = [bool(gain) for gain in gains]
    first_hit = next((rank for rank, hit in enumerate(relevant, 1) if hit), 0)
    return {
        "page_hit@5": 1.0 if any(relevant[:5]) else 0.0,
        "page_mrr@10": 1.0 / first_hit if first_hit else 0.0,
        "page_ndcg@10": _dcg(gains) / _dcg([1.0] * min(len(wanted_pages), TOP_PASSAGES)),
    }


@dataclass
class GoldenRun:
    """The scores of one retriever on every question of a golden file."""

    scores: list[QuestionScore] = field(default_factory=list)

    def summary(self, prefix: str = "") -> dict[str, float | int]:
        return summarize([score.measures for score in self.scores], prefix)


def summarize(measured: Sequence[dict[str, float]], prefix: str = "") -> dict[str, float | int]:
    """Mean of each measure over the questions; page measures over the questions with pages."""
    result: dict[str, float | int] = {}
    count = len(measured) or 1
    for measure in MEASURES:
        result[prefix + measure] = round(sum(m[measure] for m in measured) / count, 4)
    result[prefix + "questions"] = len(measured)
    paged = [m for m in measured if PAGE_MEASURES[0] in m]
    if paged:
        for measure in PAGE_MEASURES:
            result[prefix + measure] = round(sum(m[measure] for m in paged) / len(paged), 4)
        result[prefix + "page_questions"] = len(paged)
    return result


def golden_run(questions: Sequence[GoldenQuestion], retrieve: Retriever) -> GoldenRun:
    return GoldenRun([question_score(q, retrieve(q.question)) for q in questions])
