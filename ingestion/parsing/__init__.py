"""Turn uploaded bytes into text sections that remember their page and heading path.

Every failure a person can fix (wrong type, password, scan without text, zip bomb, damaged
file) surfaces as a `ParseError` whose message can be shown to the uploader as is.
"""

from __future__ import annotations

import io
import math
import re
import threading
import unicodedata
import zipfile
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, NamedTuple

from bs4 import BeautifulSoup
from bs4.element import NavigableString, PreformattedString, Tag

from ingestion.titles import best_title, without_site_name

_TYPE_NAMES = {
    "pdf": "a PDF",
    "docx": "a Word document (DOCX)",
    "pptx": "a PowerPoint presentation (PPTX)",
    "xlsx": "an Excel workbook (XLSX)",
    "html": "an HTML page",
    "markdown": "a Markdown file",
    "text": "plain text",
}

_EXTENSION_TYPES = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".pptx": "pptx",
    ".xlsx": "xlsx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".mkd": "markdown",
    ".txt": "text",
    ".text": "text",
}

_SUPPORTED_TYPES_HINT = (
    "Upload a PDF, Word (DOCX), PowerPoint (PPTX), Excel (XLSX), HTML, Markdown or plain text file."
)

# Signatures of formats we refuse; each is long or distinctive enough not to occur at the
# start of ordinary text.
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office file (.doc, .xls or .ppt)"),
    (b"{\\rtf", "an RTF document"),
    (b"%!PS", "a PostScript file"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "a program (ELF executable)"),
    (b"\xcf\xfa\xed\xfe", "a program (Mach-O executable)"),
    (b"\xce\xfa\xed\xfe", "a program (Mach-O executable)"),
    (b"\x00asm", "a program (WebAssembly module)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
)

_TEXT_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM begins with the UTF-16 one.
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

_SNIFF_BYTES = 8192
# Archives smaller than this cannot hurt however well they compress, and tiny Office
# files routinely reach high ratios.
_RATIO_CHECK_FLOOR_BYTES = 8 * 1024 * 1024
_BINARY_CONTROL_RATIO = 0.01
_ALLOWED_CONTROL_BYTES = frozenset(b"\t\n\r\x0c\x08\x1b")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html|<head|<body)",
    re.IGNORECASE | re.DOTALL,
)
_FRONT_MATTER = re.compile(
    r"\A(?:---|\+\+\+)[ \t]*\n(.*?)\n(?:---|\+\+\+|\.\.\.)[ \t]*(?:\n|\Z)", re.S
)
# Patterns below that start with a run of blanks are anchored where the run begins (lookbehind)
# and take it possessively: otherwise every blank of a long run starts a new scan of the rest.
_FRONT_MATTER_TITLE = re.compile(r"^title[ \t]*+[:=](.*)$", re.MULTILINE)
_DOCX_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)
_PERMALINK_MARKS = frozenset({"¶", "#", "§", "🔗"})
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")
_DOT_LEADER = re.compile(r"(?<![ \t])[ \t]*+(?:\.[ \t]?){4,}|(?:\.[ \t]?){4,}")
_TRAILING_BLANKS = re.compile(r"(?<![ \t\u00a0])[ \t\u00a0]++\n")
_FIRST_LINE_TITLE_CHARS = 100
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

# PDFium is not thread-safe, not even across documents, and the standalone server runs
# ingestion in threads of one process.
_PDFIUM_LOCK = threading.Lock()


@dataclass(frozen=True)
class Section:
    """A run of text sharing one page and one heading path."""

    text: str
    page: int | None
    heading_path: tuple[str, ...]


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]
    detected_type: str
    # Lines a PDF repeats at the top or bottom of most pages (running headers and footers),
    # each once: taken out of the pages, they still say what the whole document is.
    running_text: str = ""


@dataclass(frozen=True)
class ParseLimits:
    max_pages: int = 5000
    max_uncompressed_bytes: int = 500 * 1024 * 1024
    max_compression_ratio: float = 100.0
    max_zip_members: int = 10000
    max_sheet_rows: int = 100_000


class _Parts(NamedTuple):
    """What a format's parser finds: its best title, its sections, its running lines."""

    title: str
    sections: list[Section]
    running_text: str = ""


class ParseError(Exception):
    """A failure the uploader can act on; the message is shown to them as it is."""


def safe_filename(name: str) -> str:
    """Return `name` unchanged if it is a plain file name, or raise ParseError."""
    if not name.strip():
        raise ParseError("The file name is empty.")
    if "/" in name or "\\" in name:
        raise ParseError("The file name must not contain folder separators (/ or \\).")
    if ".." in name:
        raise ParseError("The file name must not contain '..'.")
    if any(unicodedata.category(character) == "Cc" for character in name):
        raise ParseError("The file name must not contain control characters.")
    return name


def detect_type(data: bytes, filename: str) -> str:
    """Return the document type of `data`, judged by its content.

    The extension only chooses between text kinds (HTML, Markdown, plain text); a binary
    extension whose content disagrees, an unsupported format and empty data raise ParseError.
    """
    if not data:
        raise ParseError("The file is empty.")
    expected = _EXTENSION_TYPES.get(PurePath(filename).suffix.lower())
    content_type, description = _sniff_content(data)
    if content_type in ("pdf", "docx", "pptx", "xlsx"):
        if expected is None or expected == content_type:
            return content_type
        raise ParseError(
            f"The file's content is not {_TYPE_NAMES[expected]} (it looks like {description})."
        )
    if content_type == "text":
        if expected in ("html", "markdown", "text"):
            return expected
        if expected is None:
            return "html" if description == _TYPE_NAMES["html"] else "text"
        raise ParseError(
            f"The file's content is not {_TYPE_NAMES[expected]} (it looks like {description})."
        )
    if expected is not None:
        raise ParseError(
            f"The file's content is not {_TYPE_NAMES[expected]} (it looks like {description})."
        )
    raise ParseError(
        f"This type of file is not supported (it looks like {description}). {_SUPPORTED_TYPES_HINT}"
    )


def parse_document(
    data: bytes, filename: str, *, limits: ParseLimits = ParseLimits()
) -> ParsedDocument:
    document_type = detect_type(data, filename)
    stem = PurePath(filename).stem or filename
    try:
        if document_type in ("docx", "pptx", "xlsx"):
            _refuse_zip_bomb(data, limits)
        title, sections, running_text = _PARSERS[document_type](data, stem, limits)
    except (ParseError, MemoryError):
        # Running out of memory is not damage; the sandbox reports it as what it is.
        raise
    except Exception as error:
        raise ParseError(
            f"The file could not be read as {_TYPE_NAMES[document_type]}; it may be damaged or "
            "saved in a form this system does not understand. Try saving it again or exporting "
            "it to PDF."
        ) from error
    sections = [
        Section(text=cleaned, page=section.page, heading_path=section.heading_path)
        for section in sections
        if (cleaned := _clean_text(section.text))
    ]
    if not sections:
        raise ParseError(
            f"The file has no extractable text; it is {_TYPE_NAMES[document_type]} without any "
            "words in it."
        )
    return ParsedDocument(
        title=best_title([title, _first_line_title(sections)], stem=stem),
        sections=sections,
        detected_type=document_type,
        running_text=running_text,
    )


def _first_line_title(sections: list[Section]) -> str:
    """A short first line that reads like a title, for files whose other titles are junk."""
    first_line = sections[0].text.split("\n", 1)[0].strip() if sections else ""
    if len(first_line) > _FIRST_LINE_TITLE_CHARS or first_line.endswith((".", ",", ";", ":")):
        return ""
    return first_line


def _sniff_content(data: bytes) -> tuple[str, str]:
    """Return (type, description); type is a document type, "text", or "unsupported"."""
    if data[:1024].lstrip(b" \t\r\n\x00").startswith(b"%PDF-") or data.startswith(
        b"\xef\xbb\xbf%PDF-"
    ):
        return "pdf", _TYPE_NAMES["pdf"]
    if data.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    if _is_windows_program(data):
        return "unsupported", "a Windows program (.exe or .dll)"
    for signature, description in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return "unsupported", description
    sample = data[:_SNIFF_BYTES]
    if not _looks_like_text(sample):
        return "unsupported", "binary data"
    if _HTML_START.match(_decode_text(sample)):
        return "text", _TYPE_NAMES["html"]
    return "text", _TYPE_NAMES["text"]


def _is_windows_program(data: bytes) -> bool:
    """A DOS header ("MZ") whose pointer at 0x3C leads to a PE header: an EXE or DLL.

    "MZ" alone is too short a signature to tell a program from text that starts with it.
    """
    if not data.startswith(b"MZ") or len(data) < 0x40:
        return False
    pe_offset = int.from_bytes(data[0x3C:0x40], "little")
    return data[pe_offset : pe_offset + 4] == b"PE\x00\x00"


def _sniff_zip(data: bytes) -> tuple[str, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        raise ParseError(
            "The file is a damaged ZIP archive (Office documents are ZIP archives inside)."
        ) from error
    if "[Content_Types].xml" in names:
        for prefix, document_type in (("word/", "docx"), ("ppt/", "pptx"), ("xl/", "xlsx")):
            if any(name.startswith(prefix) for name in names):
                return document_type, _TYPE_NAMES[document_type]
    if "mimetype" in names and "content.xml" in names:
        return "unsupported", "an OpenDocument file (save it as DOCX, XLSX or PPTX)"
    return "unsupported", "a ZIP archive"


def _looks_like_text(sample: bytes) -> bool:
    if any(sample.startswith(bom) for bom, _ in _TEXT_BOMS) or _utf16_without_bom(sample):
        return True
    if b"\x00" in sample:
        return False
    controls = sum(1 for byte in sample if byte < 0x20 and byte not in _ALLOWED_CONTROL_BYTES)
    return controls <= len(sample) * _BINARY_CONTROL_RATIO


def _utf16_without_bom(sample: bytes) -> str | None:
    """Recognise BOM-less UTF-16 by its zero high bytes at every other position."""
    pairs = len(sample) // 2
    if pairs < 4:
        return None
    zeros_even = sample[0 : pairs * 2 : 2].count(0)
    zeros_odd = sample[1 : pairs * 2 : 2].count(0)
    if zeros_odd > 0.4 * pairs and zeros_even < 0.05 * pairs:
        return "utf-16-le"
    if zeros_even > 0.4 * pairs and zeros_odd < 0.05 * pairs:
        return "utf-16-be"
    return None


def _decode_text(data: bytes) -> str:
    """Decode text of any encoding without ever failing; undecodable bytes become U+FFFD."""
    for bom, encoding in _TEXT_BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if utf16 := _utf16_without_bom(data[:_SNIFF_BYTES]):
        return data.decode(utf16, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return data.decode("cp1252", errors="replace")
    # When a text fits several code pages equally well (Western text fits cp1250 and cp1252
    # alike), prefer the one most office files use.
    for match in matches:
        if match.encoding == "cp1252" and (match.chaos, match.coherence) == (
            best.chaos,
            best.coherence,
        ):
            return str(match)
    return str(best)


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n")
    text = _CONTROL_CHARACTERS.sub("", text)
    text = _TRAILING_BLANKS.sub("\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _collapse_spaces(text: str) -> str:
    return " ".join(text.split())


def _human_size(size: float) -> str:
    units = ("bytes", "KB", "MB", "GB")
    unit = 0
    while size >= 1024 and unit < len(units) - 1:
        size /= 1024
        unit += 1
    return f"{size:.0f} {units[unit]}"


def _refuse_zip_bomb(data: bytes, limits: ParseLimits) -> None:
    """Refuse archives by their declared sizes, before anything is decompressed.

    Python's zipfile stops reading a member at its declared size, so declared sizes bound
    what the Office parsers can unpack.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    refusal = "it was refused as a possible zip bomb."
    if len(members) > limits.max_zip_members:
        raise ParseError(f"The file contains more than {limits.max_zip_members} parts; {refusal}")
    unpacked = sum(member.file_size for member in members)
    if unpacked > limits.max_uncompressed_bytes:
        raise ParseError(
            f"The file expands to more than {_human_size(limits.max_uncompressed_bytes)} when "
            f"unpacked; {refusal}"
        )
    packed = max(1, sum(member.compress_size for member in members))
    ratio = unpacked / packed
    if unpacked > _RATIO_CHECK_FLOOR_BYTES and ratio > limits.max_compression_ratio:
        raise ParseError(
            f"The file expands to {_human_size(unpacked)} when unpacked, {ratio:.0f} times its "
            f"packed size; {refusal}"
        )


@dataclass
class _SectionBuilder:
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
        text = _collapse_spaces(text).rstrip("".join(_PERMALINK_MARKS) + " ")
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
        self._add_block(_collapse_spaces("".join(self._inline)))
        self._inline.clear()
        if paragraph and self._blocks:
            self._gap = "\n\n"

    def block(self, text: str, *, paragraph: bool = True) -> None:
        self.end_block(paragraph=paragraph)
        self._add_block(_collapse_spaces(text))
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


# --- PDF ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Bookmark:
    level: int
    title: str
    page_index: int


def _parse_pdf(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
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
        finally:
            pdf.close()
    if not any(text.strip() for text in page_texts):
        raise ParseError(
            "The PDF has no extractable text (it may be a scanned image); run it through OCR "
            "or upload the original document."
        )
    page_texts, running_lines = _strip_running_lines(page_texts)
    title = best_title([title, largest_text], stem=stem)
    return _Parts(title, _pdf_sections(page_texts, bookmarks), "\n".join(running_lines))


def _running_key(line: str) -> str:
    """Lines that differ only in their numbers (page 3 of 9, page 4 of 9) are the same line."""
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
    said = [line for line in kept_lines.values() if _LETTER_OR_DIGIT.search(_DIGITS.sub("", line))]
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
    worded = [(size, line) for size, line in lines if _LETTER_OR_DIGIT.search(line)]
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
        title = _collapse_spaces(bookmark.get_title() or "")
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
        letters = _NOT_LETTER_OR_DIGIT.sub("", text)
        lowered = letters.lower()
        self.letters = lowered if len(lowered) == len(letters) else "".join(map(_fold, letters))
        # Where each letter is in the text; a page with many outline entries asks often.
        self._offsets = array("q", (match.start() for match in _LETTER_OR_DIGIT.finditer(text)))

    def heading_line_start(self, title: str, start: int) -> int | None:
        """Return where the line holding `title` begins, at or after offset `start`."""
        needle = "".join(map(_fold, _NOT_LETTER_OR_DIGIT.sub("", title)))[:80]
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


# --- DOCX --------------------------------------------------------------------------------


def _parse_docx(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    style_names, default_style_name = _docx_paragraph_style_names(document)
    builder = _SectionBuilder()
    title_paragraph = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            builder.end_block(paragraph=True)
            for row in item.rows:
                builder.block(_table_row_text(cell.text for cell in row.cells), paragraph=False)
            builder.end_block(paragraph=True)
            continue
        style_name = style_names.get(item._p.style, default_style_name)
        if heading := _DOCX_HEADING_STYLE.fullmatch(style_name):
            builder.heading(int(heading.group(1)), item.text)
        elif style_name.casefold() == "title" and not title_paragraph:
            title_paragraph = _collapse_spaces(item.text)
        else:
            builder.block(item.text)
    builder.flush()
    title = best_title(
        [document.core_properties.title, title_paragraph, builder.first_h1 or ""], stem=stem
    )
    return _Parts(title, builder.sections)


def _docx_paragraph_style_names(document: Any) -> tuple[dict[str | None, str], str]:
    """Map paragraph style ids to names once, and name the default paragraph style.

    `Paragraph.style` looks the default style up by walking every style of the document, for
    each paragraph without a style of its own: minutes for a long document.
    """
    from docx.enum.style import WD_STYLE_TYPE

    names = {
        style.style_id: style.name or ""
        for style in document.styles
        if style.type == WD_STYLE_TYPE.PARAGRAPH and style.style_id is not None
    }
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    return names, (default.name or "") if default is not None else ""


def _table_row_text(cells: Iterable[str]) -> str:
    texts: list[str] = []
    for cell in cells:
        text = _collapse_spaces(cell)
        # Merged cells are reported once per grid column they span.
        if text and (not texts or texts[-1] != text):
            texts.append(text)
    return " | ".join(texts)


# --- PPTX --------------------------------------------------------------------------------


def _parse_pptx(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
    import pptx

    presentation = pptx.Presentation(io.BytesIO(data))
    slide_count = len(presentation.slides)
    if slide_count > limits.max_pages:
        raise ParseError(
            f"The presentation has {slide_count} slides; at most {limits.max_pages} are accepted."
        )
    sections: list[Section] = []
    first_slide_title = ""
    for number, slide in enumerate(presentation.slides, start=1):
        builder = _SectionBuilder(page=number)
        title_shape = slide.shapes.title
        slide_title = (
            _collapse_spaces(title_shape.text_frame.text) if title_shape is not None else ""
        )
        if slide_title:
            builder.heading(1, slide_title)
            first_slide_title = first_slide_title or slide_title
        for shape in _iter_shapes(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if shape.has_text_frame:
                for paragraph in shape.text_frame.paragraphs:
                    builder.block(paragraph.text, paragraph=False)
                builder.end_block(paragraph=True)
            elif shape.has_table:
                for row in shape.table.rows:
                    builder.block(_table_row_text(cell.text for cell in row.cells), paragraph=False)
                builder.end_block(paragraph=True)
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            builder.preformatted(slide.notes_slide.notes_text_frame.text)
        builder.flush()
        if not builder.sections and slide_title:
            # A slide that is only a title still says something worth finding.
            builder.sections.append(
                Section(text=slide_title, page=number, heading_path=(slide_title,))
            )
        sections.extend(builder.sections)
    title = best_title([presentation.core_properties.title, first_slide_title], stem=stem)
    return _Parts(title, sections)


def _iter_shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    for shape in shapes:
        if hasattr(shape, "shapes"):
            yield from _iter_shapes(shape.shapes)
        else:
            yield shape


# --- XLSX --------------------------------------------------------------------------------


def _parse_xlsx(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sections: list[Section] = []
        rows_left = limits.max_sheet_rows
        for sheet in workbook.worksheets:
            lines: list[str] = []
            for row in sheet.iter_rows(values_only=True):
                if rows_left <= 0:
                    break
                line = "\t".join(_cell_text(value) for value in row).rstrip("\t")
                if line.strip():
                    lines.append(line)
                    rows_left -= 1
            if lines:
                sections.append(
                    Section(text="\n".join(lines), page=None, heading_path=(sheet.title,))
                )
        title = best_title([workbook.properties.title or ""], stem=stem)
    finally:
        workbook.close()
    return _Parts(title, sections)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _collapse_spaces(str(value))


# --- HTML --------------------------------------------------------------------------------

_HTML_DROPPED_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "nav",
        "svg",
        "iframe",
        "object",
        "embed",
        "select",
        "button",
    }
)
# Site furniture repeated on every page of a site: navigation bars with the next and previous
# pages' titles, breadcrumbs, sidebars, tables of contents, footers. Kept, they make every
# page match the words of its neighbours.
_FURNITURE_ROLES = frozenset({"banner", "contentinfo", "complementary"})
_FURNITURE_NAME = re.compile(
    r"(?:nav|navbar|navheader|navfooter|navigation|breadcrumbs?|sidebar|sphinxsidebar(?:wrapper)?|"
    r"toc|table-of-contents|menu|site-header|site-footer|footer|related|skip-?link|pagination|"
    r"pager|prev-?next|cookie-?(?:banner|notice|consent)?)",
    re.IGNORECASE,
)
_HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_HTML_PARAGRAPH_TAGS = frozenset(
    {"p", "blockquote", "ul", "ol", "dl", "table", "figure", "section", "article", "hr", "details"}
)
_HTML_LINE_TAGS = frozenset(
    {
        "address", "aside", "body", "caption", "dd", "dialog", "div", "dt", "fieldset",
        "figcaption", "footer", "form", "header", "li", "main", "summary", "tbody", "tfoot",
        "thead", "br", "html", "center", "legend", "option",
    }
)  # fmt: skip


def _parse_html(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
    soup = _html_soup(data)
    page_title = _collapse_spaces(soup.title.get_text()) if soup.title is not None else ""
    # Prefer the main content so sidebars, headers and footers stay out of the index.
    root = soup.find(_is_main_content) or soup.body or soup
    builder = _SectionBuilder()
    _walk_html(root, builder, drop_site_furniture=True)
    builder.flush()
    if not builder.sections:
        # A page that is nothing but navigation (a table of contents, say) is still a page.
        builder = _SectionBuilder()
        _walk_html(root, builder, drop_site_furniture=False)
        builder.flush()
    heading = builder.first_heading or ""
    title = best_title(
        [without_site_name(page_title, heading), builder.first_h1 or "", heading], stem=stem
    )
    return _Parts(title, builder.sections)


def _html_soup(data: bytes) -> BeautifulSoup:
    """XHTML is read as XML (what it is); anything the XML parser cannot read, as HTML."""
    head = data[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<?xml") or b'xmlns="http://www.w3.org/1999/xhtml"' in head:
        soup = BeautifulSoup(data, "lxml-xml")
        if soup.find("body") is not None:
            return soup
    # Given bytes, BeautifulSoup honours a BOM or <meta charset> before guessing.
    return BeautifulSoup(data, "lxml")


def _is_main_content(tag: Tag) -> bool:
    return tag.name == "main" or tag.get("role") == "main"


def _is_boilerplate(tag: Tag, *, drop_site_furniture: bool) -> bool:
    if tag.name in _HTML_DROPPED_TAGS or tag.get("role") in ("navigation", "search"):
        return True
    if tag.name == "a" and tag.get_text(strip=True) in _PERMALINK_MARKS:
        return True
    if not drop_site_furniture:
        return False
    if tag.name == "footer" or tag.get("role") in _FURNITURE_ROLES:
        return True
    if tag.name in ("ul", "ol") and _is_link_list(tag):
        return True
    names = [*_attribute_tokens(tag.get("class")), *_attribute_tokens(tag.get("id"))]
    if not any(_FURNITURE_NAME.fullmatch(name) for name in names):
        return False
    # Whatever holds the page's own title is content, whatever it is called.
    return tag.find("h1") is None


def _is_link_list(tag: Tag) -> bool:
    """A list whose every item is nothing but links: a table of contents or "see also".

    Such lists repeat the names of other pages; kept, they make a page match its neighbours.
    """
    items = tag.find_all("li", recursive=False)
    if not items:
        return False
    for item in items:
        text = _NOT_LETTER_OR_DIGIT.sub("", item.get_text())
        linked = "".join(_NOT_LETTER_OR_DIGIT.sub("", a.get_text()) for a in item.find_all("a"))
        if not text or text != linked:
            return False
    return True


def _attribute_tokens(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(token) for token in value]
    return []


def _walk_html(root: Tag, builder: _SectionBuilder, *, drop_site_furniture: bool) -> None:
    # An explicit stack instead of recursion: deeply nested markup must not hit the recursion limit.
    stack: list[Tag | NavigableString | str] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):
                builder.inline(str(node))
            continue
        if isinstance(node, str):
            builder.end_block(paragraph=node == "paragraph")
            continue
        if _is_boilerplate(node, drop_site_furniture=drop_site_furniture):
            continue
        name = node.name
        if name in _HTML_HEADINGS:
            builder.heading(_HTML_HEADINGS[name], node.get_text(" "))
        elif name == "pre":
            builder.preformatted(node.get_text())
        elif name == "tr":
            cells = node.find_all(["td", "th"], recursive=False)
            builder.block(_table_row_text(cell.get_text(" ") for cell in cells), paragraph=False)
        else:
            if name in _HTML_PARAGRAPH_TAGS:
                stack.append("paragraph")
            elif name in _HTML_LINE_TAGS:
                stack.append("line")
            stack.extend(
                child
                for child in reversed(node.contents)
                if isinstance(child, (Tag, NavigableString))
            )
            if name in _HTML_PARAGRAPH_TAGS or name in _HTML_LINE_TAGS:
                builder.end_block()


# --- Markdown ----------------------------------------------------------------------------


def _parse_markdown(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
    from markdown_it import MarkdownIt

    text = _decode_text(data).replace("\r\n", "\n").lstrip("\ufeff")
    front_matter_title = ""
    if front_matter := _FRONT_MATTER.match(text):
        if title_line := _FRONT_MATTER_TITLE.search(front_matter.group(1)):
            front_matter_title = title_line.group(1).strip().strip("\"'").strip()
        text = text[front_matter.end() :]
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    builder = _markdown_sections(tokens, drop_link_lists=True)
    if not builder.sections:
        # A file that is nothing but a list of links (an index) is still a document.
        builder = _markdown_sections(tokens, drop_link_lists=False)
    return _Parts(
        best_title([front_matter_title, builder.first_h1 or ""], stem=stem), builder.sections
    )


def _markdown_sections(tokens: list[Any], *, drop_link_lists: bool) -> _SectionBuilder:
    builder = _SectionBuilder()
    row_cells: list[str] = []
    in_row = False
    skip_until = -1
    for position, token in enumerate(tokens):
        if position < skip_until:
            continue
        kind = token.type
        if drop_link_lists and kind in ("bullet_list_open", "ordered_list_open"):
            end = _markdown_list_end(tokens, position)
            if _markdown_is_link_list(tokens[position:end]):
                skip_until = end + 1
                continue
        if kind == "heading_open":
            builder.heading(int(token.tag[1]), _markdown_inline_text(tokens[position + 1]))
        elif kind == "inline":
            if tokens[position - 1].type == "heading_open":
                continue
            if in_row:
                row_cells.append(_markdown_inline_text(token))
            else:
                builder.inline(_markdown_inline_text(token))
        elif kind == "tr_open":
            in_row, row_cells = True, []
        elif kind == "tr_close":
            in_row = False
            builder.block(_table_row_text(row_cells), paragraph=False)
        elif kind in ("fence", "code_block"):
            builder.preformatted(token.content)
        elif kind == "html_block":
            builder.block(BeautifulSoup(token.content, "lxml").get_text(" "))
        elif kind == "paragraph_close":
            builder.end_block(paragraph=not token.hidden)
        elif kind.endswith("_close"):
            builder.end_block(
                paragraph=kind
                in ("bullet_list_close", "ordered_list_close", "table_close", "blockquote_close")
            )
    builder.flush()
    return builder


def _markdown_list_end(tokens: list[Any], start: int) -> int:
    """The position of the token that closes the list opened at `start`."""
    closing = tokens[start].type.replace("_open", "_close")
    for position in range(start + 1, len(tokens)):
        if tokens[position].type == closing and tokens[position].level == tokens[start].level:
            return position
    return len(tokens) - 1


def _markdown_is_link_list(tokens: list[Any]) -> bool:
    """A list whose every item is one link and nothing else: "see also", a table of contents.

    Such lists repeat the names of other pages; kept, they make a page match its neighbours.
    """
    items = [token for token in tokens if token.type == "inline"]
    return bool(items) and all(_is_only_a_link(item.children or []) for item in items)


def _is_only_a_link(children: list[Any]) -> bool:
    kinds = [child.type for child in children if child.type != "text" or child.content.strip()]
    return (
        len(kinds) >= 2
        and kinds[0] == "link_open"
        and kinds[-1] == "link_close"
        and (kinds.count("link_open") == 1)
    )


def _markdown_inline_text(token: Any) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type in ("text", "code_inline", "image"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)


# --- Plain text --------------------------------------------------------------------------


def _parse_text(data: bytes, stem: str, limits: ParseLimits) -> _Parts:
    text = _decode_text(data).lstrip("\ufeff")
    return _Parts(stem, [Section(text=text, page=None, heading_path=())])


_PARSERS = {
    "pdf": _parse_pdf,
    "docx": _parse_docx,
    "pptx": _parse_pptx,
    "xlsx": _parse_xlsx,
    "html": _parse_html,
    "markdown": _parse_markdown,
    "text": _parse_text,
}
