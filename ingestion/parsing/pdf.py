"""PDF: pages with their numbers, the outline as heading paths, running headers and footers."""

from __future__ import annotations

import io
import logging
import math
import re
import threading
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ingestion.parsing.document import FormatParts, ParseError, ParseLimits, Section
from ingestion.parsing.ocr import OCR_DPI, ocr_unavailable_reason, read_pages, refuse_without_ocr
from ingestion.parsing.sections import LETTER_OR_DIGIT, NOT_LETTER_OR_DIGIT, collapse_spaces
from ingestion.parsing.tables import is_table, table_text
from ingestion.titles import best_title

logger = logging.getLogger(__name__)

# Anchored where its run of blanks begins (lookbehind), taking the run possessively:
# otherwise every blank of a long run starts a new scan of the rest.
_DOT_LEADER = re.compile(r"(?<![ \t])[ \t]*+(?:\.[ \t]?){4,}|(?:\.[ \t]?){4,}")
# In a document of three pages or more, a line among the first or last few of at least half
# the pages (and of two) is a running header or footer.
_RUNNING_EDGE_LINES = 3
_RUNNING_MIN_PAGES = 2
_RUNNING_MIN_DOCUMENT_PAGES = 3
_RUNNING_SHARE_OF_PAGES = 0.5
_DIGITS = re.compile(r"\d+")
# The first page's title is looked for among its first characters, in at most a few lines.
_TITLE_SCAN_CHARS = 4000
_TITLE_MAX_LINES = 3
# How long a section number before a heading's title on its line may be.
_HEADING_PREFIX_CHARS = 12
_CHAPTER_LABEL = re.compile(r"(?:chapter|part|appendix)\s+[\w.]+", re.IGNORECASE)

# A table's rules are path objects: lines thinner than this, or boxes (shaded cells). Only a
# page with them is looked at for tables: finding tables costs far more than looking at a
# page's objects.
_THIN_PT = 3.0
_TABLE_MIN_BOXES = 4

# PDFium is not thread-safe, not even across documents, and the standalone server runs
# ingestion in threads of one process.
_PDFIUM_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Bookmark:
    level: int
    title: str
    page_index: int


def parse_pdf(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    import pypdfium2
    import pypdfium2.raw as pdfium_raw

    with _PDFIUM_LOCK:
        try:
            # PDFium tries the empty user password itself, so owner-password-only files open.
            pdf = pypdfium2.PdfDocument(data)
        except pypdfium2.PdfiumError as error:
            if error.err_code == pdfium_raw.FPDF_ERR_PASSWORD:
                raise ParseError(
                    "The PDF is encrypted; upload a copy without a password."
                ) from error
            if error.err_code == pdfium_raw.FPDF_ERR_SECURITY:
                raise ParseError(
                    "The PDF uses an unsupported encryption scheme; upload a copy without a "
                    "password."
                ) from error
            raise ParseError(
                "The PDF is damaged and cannot be read; try saving or printing it to a new PDF."
            ) from error
        try:
            page_count = len(pdf)
            if page_count > limits.max_pages:
                raise ParseError(
                    f"The PDF has {page_count} pages; at most {limits.max_pages} are accepted."
                )
            title = (pdf.get_metadata_value("Title") or "").strip()
            largest_text = _pdf_largest_text(pdf) if page_count else ""
            bookmarks = list(_pdf_bookmarks(pdf, page_count))
            page_texts = [_pdf_page_text(pdf, index) for index in range(page_count)]
            ruled_pages = [
                index
                for index in range(page_count)
                if limits.pdf_tables and _has_ruling(pdf, index)
            ]
        finally:
            pdf.close()
    if ruled_pages:
        _put_tables_in_place(data, page_texts, _pdf_tables(data, ruled_pages))
    scanned = [index for index, text in enumerate(page_texts) if not text.strip()]
    if scanned and len(scanned) == page_count:
        refuse_without_ocr(limits, "The PDF has no text layer (it is a scan), so it")
    if scanned and not ocr_unavailable_reason(limits.ocr_languages):
        # Only the pages without a text layer: mixed PDFs keep the text they have.
        read = read_pages(scanned, lambda index: _page_image(data, index, limits), limits)
        for index, text in zip(scanned, read, strict=True):
            page_texts[index] = text
    if not any(text.strip() for text in page_texts):
        raise ParseError(
            "The PDF has no extractable text: it has no text layer, and OCR found no words on "
            "its pages (they may be blank, or pictures without text)."
        )
    page_texts, running_lines = _strip_running_lines(page_texts)
    title = best_title([title, largest_text], stem=stem)
    return FormatParts(title, _pdf_sections(page_texts, bookmarks), "\n".join(running_lines))


_Box = tuple[float, float, float, float]  # left, top, right, bottom, from the page's top left
_Table = tuple[_Box, list[list[str | None]]]


def _has_ruling(pdf: Any, index: int) -> bool:
    """Whether the page draws what a ruled table is made of: a grid of lines, or boxes.

    Rules under a running header or above a footnote are lines in one direction only.
    """
    import pypdfium2.raw as pdfium_raw

    page = pdf[index]
    try:
        across = down = boxes = 0
        for path in page.get_objects(filter=(pdfium_raw.FPDF_PAGEOBJ_PATH,), max_depth=2):
            left, bottom, right, top = path.get_bounds()
            if top - bottom < _THIN_PT and right - left > _THIN_PT:
                across += 1
            elif right - left < _THIN_PT and top - bottom > _THIN_PT:
                down += 1
            else:
                boxes += 1
            if (across >= 2 and down >= 2) or boxes >= _TABLE_MIN_BOXES:
                return True
        return False
    finally:
        page.close()


def _pdf_tables(data: bytes, page_indexes: list[int]) -> dict[int, list[_Table]]:
    """The ruled tables of the given pages, each with its box and its rows of cells."""
    import pdfplumber

    found: dict[int, list[_Table]] = {}
    try:
        with pdfplumber.open(io.BytesIO(data)) as plumber:
            for index in page_indexes:
                page = plumber.pages[index]
                tables = [
                    (table.bbox, rows)
                    for table in page.find_tables()
                    if is_table(rows := table.extract())
                ]
                page.close()
                if tables:
                    found[index] = sorted(tables, key=lambda table: table[0][1])
    except Exception:  # a PDF PDFium reads but pdfminer does not: its tables stay words
        logger.info("the tables of a PDF could not be read", exc_info=True)
        return {}
    return found


def _put_tables_in_place(
    data: bytes, page_texts: list[str], tables_of_page: dict[int, list[_Table]]
) -> None:
    """Replace the words of each table on its page by the table in Markdown, where it stood.

    A table that ends one page and goes on at the top of the next, without its header row
    repeated, gets the header of its first part again.
    """
    import pypdfium2

    if not tables_of_page:
        return
    with _PDFIUM_LOCK:
        pdf = pypdfium2.PdfDocument(data)
        try:
            open_header: list[str | None] | None = None
            for index in sorted(tables_of_page):
                if index - 1 not in tables_of_page:
                    open_header = None
                page_texts[index], open_header = _page_text_with_tables(
                    pdf, index, tables_of_page[index], open_header
                )
        finally:
            pdf.close()


# Lines a table may have above it (a running header) and still go on from the page before,
# or below it (a page number) and still go on on the next page.
_EDGE_LINES = 2


def _page_text_with_tables(
    pdf: Any, index: int, tables: list[_Table], open_header: list[str | None] | None
) -> tuple[str, list[str | None] | None]:
    """The page's text with its tables in Markdown, and the header of a table that runs on
    past the page's end (None if none does)."""
    page = pdf[index]
    textpage = page.get_textpage()
    try:
        width, height = page.get_size()

        def text_in(left: float, top: float, right: float, bottom: float) -> str:
            if right - left < 1 or bottom - top < 1:
                return ""
            # PDFium measures from the page's bottom left.
            text: str = textpage.get_text_bounded(left, height - bottom, right, height - top)
            return _DOT_LEADER.sub(" … ", text.replace("\x02", "")).strip()

        parts: list[str] = []
        above = 0.0
        for number, ((left, top, right, bottom), rows) in enumerate(tables):
            before = text_in(0, above, width, top)
            parts.append(before)
            if (
                number == 0
                and open_header is not None
                and len(before.splitlines()) <= _EDGE_LINES
                and len(rows[0]) == len(open_header)
                and rows[0] != open_header
            ):
                rows = [open_header, *rows]
            parts.append(table_text(rows))
            # Words beside a table (a margin note) follow it.
            parts.append(text_in(0, top, left, bottom))
            parts.append(text_in(right, top, width, bottom))
            above = max(above, bottom)
        after = text_in(0, above, width, height)
        parts.append(after)
    finally:
        textpage.close()
        page.close()
    runs_on = len(after.splitlines()) <= _EDGE_LINES
    last_header = rows[0] if runs_on else None
    # The line just above a table stays next to it: it is most often its caption.
    return "\n".join(part for part in parts if part), last_header


def _page_image(data: bytes, index: int, limits: ParseLimits) -> Any:
    """A page as a grayscale picture at the OCR resolution, or less if it has to fit the pixel
    limit (a poster-sized page)."""
    import pypdfium2

    with _PDFIUM_LOCK:
        pdf = pypdfium2.PdfDocument(data)
        try:
            page = pdf[index]
            try:
                width, height = page.get_size()
                scale = OCR_DPI / 72
                pixels = width * height * scale * scale
                if pixels > limits.max_image_pixels:
                    scale *= math.sqrt(limits.max_image_pixels / pixels)
                return page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()
        finally:
            pdf.close()


def _running_key(line: str) -> str:
    """Lines that differ only in their numbers (page 3 of 9, page 4 of 9) are the same line.

    A table's rows are never running lines: a table printed over pages repeats its header
    at the top of each.
    """
    if line.lstrip().startswith("|"):
        return ""
    return " ".join(_DIGITS.sub("#", line.casefold()).split())


def _strip_running_lines(page_texts: list[str]) -> tuple[list[str], list[str]]:
    """Take out the lines repeated at the top or bottom of most pages; return them once each.

    Only the first and last few lines of a page are looked at, so a phrase that recurs in
    running text stays where it is.
    """
    pages_with: dict[str, int] = {}
    for text in page_texts:
        worded_lines = [line for line in text.split("\n") if line.strip()]
        edge_lines = worded_lines[:_RUNNING_EDGE_LINES] + worded_lines[-_RUNNING_EDGE_LINES:]
        for key in {_running_key(line) for line in edge_lines}:
            pages_with[key] = pages_with.get(key, 0) + 1
    needed = max(_RUNNING_MIN_PAGES, math.ceil(len(page_texts) * _RUNNING_SHARE_OF_PAGES))
    running = {key for key, count in pages_with.items() if count >= needed and key}
    if len(page_texts) < _RUNNING_MIN_DOCUMENT_PAGES:
        running = set()
    if not running:
        return page_texts, []
    stripped: list[str] = []
    kept_lines: dict[str, str] = {}
    for text in page_texts:
        lines = text.split("\n")
        worded = [index for index, line in enumerate(lines) if line.strip()]
        edge = set(worded[:_RUNNING_EDGE_LINES] + worded[-_RUNNING_EDGE_LINES:])
        drop: set[int] = set()
        for index in edge:
            key = _running_key(lines[index])
            if key in running:
                drop.add(index)
                kept_lines.setdefault(key, " ".join(lines[index].split()))
        stripped.append("\n".join(line for index, line in enumerate(lines) if index not in drop))
    # Bare page numbers say nothing about the document.
    said = [line for line in kept_lines.values() if LETTER_OR_DIGIT.search(_DIGITS.sub("", line))]
    return stripped, said


def _pdf_largest_text(pdf: Any) -> str:
    """The lines set in the largest type on the first page: usually the title of the work."""
    import pypdfium2.raw as pdfium_raw

    page = pdf[0]
    textpage = page.get_textpage()
    try:
        count = min(textpage.count_chars(), _TITLE_SCAN_CHARS)
        text = textpage.get_text_range(0, count) if count else ""
        sizes = [pdfium_raw.FPDFText_GetFontSize(textpage, index) for index in range(len(text))]
    finally:
        textpage.close()
        page.close()
    lines: list[tuple[float, str]] = []
    line, size = "", 0.0
    for character, character_size in zip(text, sizes, strict=False):
        if character in "\r\n":
            if line.strip():
                lines.append((size, line.strip()))
            line, size = "", 0.0
        else:
            line += character
            if character.strip():
                size = max(size, character_size)
    if line.strip():
        lines.append((size, line.strip()))
    worded = [(size, line) for size, line in lines if LETTER_OR_DIGIT.search(line)]
    if not worded:
        return ""
    largest = max(size for size, _ in worded)
    # Lines of the largest size that follow each other make one title.
    title_lines: list[str] = []
    for size, line in worded:
        if size >= largest - 0.5:
            title_lines.append(line)
        elif title_lines:
            break
    return " ".join(title_lines[:_TITLE_MAX_LINES])


def _pdf_page_text(pdf: Any, index: int) -> str:
    page = pdf[index]
    textpage = page.get_textpage()
    try:
        text: str = textpage.get_text_bounded()
    finally:
        textpage.close()
        page.close()
    # PDFium marks a hyphen that breaks a word across lines with U+0002. Dot leaders in
    # tables of contents would cost a token per dot.
    return _DOT_LEADER.sub(" … ", text.replace("\x02", ""))


def _pdf_bookmarks(pdf: Any, page_count: int) -> Iterator[_Bookmark]:
    for bookmark in pdf.get_toc():
        destination = bookmark.get_dest()
        page_index = destination.get_index() if destination is not None else None
        title = collapse_spaces(bookmark.get_title() or "")
        if title and page_index is not None and 0 <= page_index < page_count:
            yield _Bookmark(level=bookmark.level, title=title, page_index=page_index)


def _pdf_sections(page_texts: list[str], bookmarks: list[_Bookmark]) -> list[Section]:
    """Cut each page at the lines where its outline headings appear.

    Outline entries only point at a page, so the heading's text is searched for on that
    page; when it cannot be found the heading is taken to start where the previous one did.
    """
    bookmarks_by_page: dict[int, list[_Bookmark]] = {}
    for bookmark in bookmarks:
        bookmarks_by_page.setdefault(bookmark.page_index, []).append(bookmark)
    headings: list[tuple[int, str]] = []
    sections: list[Section] = []
    for page_index, text in enumerate(page_texts):
        page = page_index + 1
        segment_start = 0
        page_bookmarks = bookmarks_by_page.get(page_index, [])
        letters: _LetterIndex | None = None
        for bookmark in page_bookmarks:
            letters = letters or _LetterIndex(text)
            position = letters.heading_line_start(bookmark.title, segment_start)
            if position is None:
                position = segment_start
            _append_section(sections, text[segment_start:position], page, headings)
            while headings and headings[-1][0] >= bookmark.level:
                headings.pop()
            headings.append((bookmark.level, bookmark.title))
            segment_start = position
        _append_section(sections, text[segment_start:], page, headings)
    return sections


def _append_section(
    sections: list[Section], text: str, page: int, headings: list[tuple[int, str]]
) -> None:
    if text.strip():
        path = tuple(title for _, title in headings)
        sections.append(Section(text=text, page=page, heading_path=path))


def _fold(character: str) -> str:
    lowered = character.lower()
    return lowered if len(lowered) == 1 else character


class _LetterIndex:
    """A page's letters and digits only, lower-cased, for finding headings in it.

    Outline titles and page text differ in spacing, quotes and punctuation, so headings are
    compared on letters and digits alone.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        letters = NOT_LETTER_OR_DIGIT.sub("", text)
        lowered = letters.lower()
        self.letters = lowered if len(lowered) == len(letters) else "".join(map(_fold, letters))
        # Where each letter is in the text; a page with many outline entries asks often.
        self._offsets = array("q", (match.start() for match in LETTER_OR_DIGIT.finditer(text)))

    def heading_line_start(self, title: str, start: int) -> int | None:
        """Return where the line holding `title` begins, at or after offset `start`."""
        needle = "".join(map(_fold, NOT_LETTER_OR_DIGIT.sub("", title)))[:80]
        if not needle:
            return None
        found = self.letters.find(needle, bisect_left(self._offsets, start))
        while found != -1:
            match_start = self._offsets[found]
            # Allow a section number before the title on its line, but not running prose; so
            # only the last few characters before the title need a look for the line's start.
            newline = self.text.rfind(
                "\n", max(0, match_start - _HEADING_PREFIX_CHARS - 1), match_start
            )
            line_start = max(start, newline + 1) if newline != -1 else start
            if match_start - line_start <= _HEADING_PREFIX_CHARS:
                return self._include_chapter_label(line_start, start)
            found = self.letters.find(needle, found + 1)
        return None

    def _include_chapter_label(self, line_start: int, start: int) -> int:
        previous_start = self.text.rfind("\n", 0, max(0, line_start - 1)) + 1
        if previous_start >= start and _CHAPTER_LABEL.fullmatch(
            self.text[previous_start:line_start].strip()
        ):
            return previous_start
        return line_start
