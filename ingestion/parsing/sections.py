"""Cutting text into sections at its headings, and the text helpers the formats share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ingestion.parsing.document import Section

PERMALINK_MARKS = frozenset({"¶", "#", "§", "🔗"})
LETTER_OR_DIGIT = re.compile(r"[^\W_]")
NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")


def collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def table_row_text(cells: Iterable[str]) -> str:
    texts: list[str] = []
    for cell in cells:
        text = collapse_spaces(cell)
        # Merged cells are reported once per grid column they span.
        if text and (not texts or texts[-1] != text):
            texts.append(text)
    return " | ".join(texts)


@dataclass
class SectionBuilder:
    """Collects text blocks under a heading stack and cuts a Section at every heading."""

    page: int | None = None
    sections: list[Section] = field(default_factory=list)
    first_h1: str | None = None
    first_heading: str | None = None
    _headings: list[tuple[int, str]] = field(default_factory=list)
    _blocks: list[str] = field(default_factory=list)
    _inline: list[str] = field(default_factory=list)
    _gap: str = ""

    def heading(self, level: int, text: str) -> None:
        text = collapse_spaces(text).rstrip("".join(PERMALINK_MARKS) + " ")
        if not text:
            return
        self.flush()
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text
        if self.first_heading is None:
            self.first_heading = text
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))

    def inline(self, text: str) -> None:
        self._inline.append(text)

    def end_block(self, *, paragraph: bool = False) -> None:
        self._add_block(collapse_spaces("".join(self._inline)))
        self._inline.clear()
        if paragraph and self._blocks:
            self._gap = "\n\n"

    def block(self, text: str, *, paragraph: bool = True) -> None:
        self.end_block(paragraph=paragraph)
        self._add_block(collapse_spaces(text))
        if paragraph:
            self._gap = "\n\n"

    def preformatted(self, text: str) -> None:
        self.end_block(paragraph=True)
        self._add_block("\n".join(line.rstrip() for line in text.strip("\n").splitlines()))
        self._gap = "\n\n"

    def flush(self) -> None:
        self.end_block()
        text = "".join(self._blocks).strip()
        if text:
            path = tuple(title for _, title in self._headings)
            self.sections.append(Section(text=text, page=self.page, heading_path=path))
        self._blocks.clear()
        self._gap = ""

    def _add_block(self, text: str) -> None:
        if not text:
            return
        self._blocks.append((self._gap or "\n") + text if self._blocks else text)
        self._gap = ""
