"""The naive pipeline the product is measured against, built in the same run on the same files.

Whole-document text with no structure, fixed windows of 200 words overlapping by 40, each
prefixed with its file name; the same embedding model for dense scores, BM25 (rank_bm25)
for lexical ones, and reciprocal-rank fusion; nothing tuned.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np

from assistant.evaluation.golden import Found

WINDOW_WORDS = 200
OVERLAP_WORDS = 40
RRF_K = 60
CANDIDATES = 100
_TOKEN = re.compile(r"\w+")


@dataclass(frozen=True)
class StoredFile:
    source: str
    name: str
    data: bytes


@dataclass(frozen=True)
class _Window:
    source: str
    pages: frozenset[int]
    text: str


def naive_pages(data: bytes, name: str) -> list[tuple[int | None, str]]:
    """The file's text as a plain extractor gives it: per page for PDFs, else whole."""
    suffix = PurePosixPath(name).suffix.lower()
    if data.lstrip()[:5] == b"%PDF-":
        import pypdfium2

        pdf = pypdfium2.PdfDocument(data)
        try:
            pages: list[tuple[int | None, str]] = []
            for index in range(len(pdf)):
                textpage = pdf[index].get_textpage()
                pages.append((index + 1, textpage.get_text_bounded()))
                textpage.close()
            return pages
        finally:
            pdf.close()
    if data[:2] == b"PK":
        return [(None, _office_text(data, suffix))]
    text = data.decode("utf-8", errors="replace")
    if suffix in (".html", ".htm", ".xhtml"):
        from bs4 import BeautifulSoup

        text = BeautifulSoup(text, "lxml").get_text(" ")
    return [(None, text)]


def _office_text(data: bytes, suffix: str) -> str:
    if suffix == ".docx":
        import docx

        document = docx.Document(io.BytesIO(data))
        return "\n".join(paragraph.text for paragraph in document.paragraphs)
    if suffix == ".pptx":
        import pptx

        presentation = pptx.Presentation(io.BytesIO(data))
        return "\n".join(
            shape.text_frame.text
            for slide in presentation.slides
            for shape in slide.shapes
            if shape.has_text_frame
        )
    if suffix == ".xlsx":
        import openpyxl

        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        return "\n".join(
            " ".join(str(value) for value in row if value is not None)
            for sheet in workbook.worksheets
            for row in sheet.iter_rows(values_only=True)
        )
    return ""


def _windows(file: StoredFile) -> list[_Window]:
    words: list[str] = []
    word_pages: list[int | None] = []
    for page, text in naive_pages(file.data, file.name):
        page_words = text.split()
        words.extend(page_words)
        word_pages.extend([page] * len(page_words))
    windows = []
    step = WINDOW_WORDS - OVERLAP_WORDS
    for start in range(0, max(1, len(words) - OVERLAP_WORDS), step):
        end = start + WINDOW_WORDS
        pages = frozenset(page for page in word_pages[start:end] if page is not None)
        text = f"{file.name}\n{' '.join(words[start:end])}"
        windows.append(_Window(source=file.source, pages=pages, text=text))
    return windows


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


Encode = Callable[[list[str]], np.ndarray]


class NaivePipeline:
    """Fixed windows, dense + BM25, fused by reciprocal rank."""

    def __init__(self, files: Sequence[StoredFile], encode: Encode) -> None:
        from rank_bm25 import BM25Okapi

        self._windows = [window for file in files for window in _windows(file)]
        self._encode = encode
        texts = [window.text for window in self._windows]
        self._vectors = encode(texts) if texts else np.zeros((0, 1), dtype=np.float32)
        self._bm25 = BM25Okapi([_tokens(text) for text in texts]) if texts else None

    @property
    def window_count(self) -> int:
        return len(self._windows)

    def _ranked(self, question: str) -> tuple[list[int], list[int]]:
        if not self._windows or self._bm25 is None:
            return [], []
        dense_scores = self._vectors @ self._encode([question])[0]
        sparse_scores = self._bm25.get_scores(_tokens(question))
        dense_order = np.argsort(-dense_scores, kind="stable")[:CANDIDATES]
        sparse_order = np.argsort(-sparse_scores, kind="stable")[:CANDIDATES]
        return [int(i) for i in dense_order], [int(i) for i in sparse_order]

    def search(self, question: str, k: int = 10, *, mode: str = "rrf") -> list[Found]:
        dense_order, sparse_order = self._ranked(question)
        if mode == "dense":
            order = dense_order[:k]
        elif mode == "bm25":
            order = sparse_order[:k]
        else:
            fused: dict[int, float] = {}
            for ranking in (dense_order, sparse_order):
                for rank, index in enumerate(ranking, start=1):
                    fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + rank)
            order = sorted(fused, key=lambda index: (-fused[index], index))[:k]
        return [
            Found(
                source=self._windows[i].source,
                pages=self._windows[i].pages,
                text=self._windows[i].text,
            )
            for i in order
        ]
