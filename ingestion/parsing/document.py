"""What parsing makes of a file, what it may spend doing so, and how it says no."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Section:
    """A run of text sharing one page and one heading path."""

    text: str
    page: int | None
    heading_path: tuple[str, ...]


@dataclass(frozen=True)
class Attachment:
    """A file inside another (a mail's attachment), to become a document of its own."""

    name: str
    data: bytes


# What a file says of itself besides its text, as (label, value) pairs in the order shown:
# a message's sender, recipients and date.
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ParsedDocument:
    title: str
    sections: list[Section]
    detected_type: str
    # Lines a PDF repeats at the top or bottom of most pages (running headers and footers),
    # each once: taken out of the pages, they still say what the whole document is.
    running_text: str = ""
    metadata: Metadata = ()
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class ParseLimits:
    max_pages: int = 5000
    max_uncompressed_bytes: int = 500 * 1024 * 1024
    max_compression_ratio: float = 100.0
    max_zip_members: int = 10000
    max_sheet_rows: int = 100_000
    # A scan's page or an image larger than this is refused before it is decoded.
    max_image_pixels: int = 60_000_000
    # Tesseract's languages, joined by "+" ("eng+deu").
    ocr_languages: str = "eng"
    # Whether ruled tables in PDFs are found and kept as tables (it costs parse time).
    pdf_tables: bool = True


class FormatParts(NamedTuple):
    """What a format's parser finds: its best title, its sections, its running lines.

    A message also has its header fields and its attached files.
    """

    title: str
    sections: list[Section]
    running_text: str = ""
    metadata: Metadata = ()
    attachments: tuple[Attachment, ...] = ()


class ParseError(Exception):
    """A failure the uploader can act on; the message is shown to them as it is."""


# Each format's parser: (the file's bytes, its name without extension, the limits) to parts.
FormatParser = Callable[[bytes, str, ParseLimits], FormatParts]
