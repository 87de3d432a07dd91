"""Turn uploaded bytes into text sections that remember their page and heading path.

Every failure a person can fix (wrong type, password, scan without text, zip bomb, damaged
file) surfaces as a `ParseError` whose message can be shown to the uploader as is.

Each format has its module (`pdf`, `office`, `html`, `markdown`, `text`, `mail`, and `ocr` for
scans and images); `detection` tells which one a file is, and `parse_document` hands the file
to that format's parser.
"""

from __future__ import annotations

import re
from pathlib import PurePath

from ingestion.parsing.detection import (
    TYPE_NAMES,
    detect_type,
    detect_type_of_file,
    type_by_extension,
)
from ingestion.parsing.document import (
    Attachment,
    FormatParser,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Section,
)
from ingestion.parsing.filenames import safe_filename
from ingestion.parsing.html import parse_html
from ingestion.parsing.mail import parse_eml, parse_mbox
from ingestion.parsing.markdown import encoded_text, parse_markdown
from ingestion.parsing.ocr import parse_image
from ingestion.parsing.office import parse_docx, parse_pptx, parse_xlsx
from ingestion.parsing.pdf import parse_pdf
from ingestion.parsing.text import parse_text
from ingestion.titles import best_title

__all__ = [
    "Attachment",
    "ParseError",
    "ParseLimits",
    "ParsedDocument",
    "Section",
    "detect_type",
    "detect_type_of_file",
    "encoded_text",
    "parse_document",
    "safe_filename",
    "type_by_extension",
]

_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# Anchored where its run of blanks begins (lookbehind), taking the run possessively:
# otherwise every blank of a long run starts a new scan of the rest.
_TRAILING_BLANKS = re.compile(r"(?<![ \t\u00a0])[ \t\u00a0]++\n")
_FIRST_LINE_TITLE_CHARS = 100
_DEFAULT_LIMITS = ParseLimits()

# One parser for each type `detect_type` returns.
_PARSERS: dict[str, FormatParser] = {
    "pdf": parse_pdf,
    "docx": parse_docx,
    "pptx": parse_pptx,
    "xlsx": parse_xlsx,
    "html": parse_html,
    "markdown": parse_markdown,
    "text": parse_text,
    "eml": parse_eml,
    "mbox": parse_mbox,
    "image": parse_image,
}


def parse_document(
    data: bytes, filename: str, *, limits: ParseLimits = _DEFAULT_LIMITS
) -> ParsedDocument:
    document_type = detect_type(data, filename)
    stem = PurePath(filename).stem or filename
    try:
        parts = _PARSERS[document_type](data, stem, limits)
    except (ParseError, MemoryError):
        # Running out of memory is not damage; the sandbox reports it as what it is.
        raise
    except Exception as error:
        raise ParseError(
            f"The file could not be read as {TYPE_NAMES[document_type]}; it may be damaged or "
            "saved in a form this system does not understand. Try saving it again or exporting "
            "it to PDF."
        ) from error
    sections = [
        Section(text=cleaned, page=section.page, heading_path=section.heading_path)
        for section in parts.sections
        if (cleaned := _clean_text(section.text))
    ]
    if not sections:
        raise ParseError(
            f"The file has no extractable text; it is {TYPE_NAMES[document_type]} without any "
            "words in it."
        )
    return ParsedDocument(
        title=best_title([parts.title, _first_line_title(sections)], stem=stem),
        sections=sections,
        detected_type=document_type,
        running_text=parts.running_text,
        metadata=parts.metadata,
        attachments=parts.attachments,
    )


def _first_line_title(sections: list[Section]) -> str:
    """A short first line that reads like a title, for files whose other titles are junk."""
    first_line = sections[0].text.split("\n", 1)[0].strip() if sections else ""
    if len(first_line) > _FIRST_LINE_TITLE_CHARS or first_line.endswith((".", ",", ";", ":")):
        return ""
    return first_line


def _clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x0c", "\n")
    text = _CONTROL_CHARACTERS.sub("", text)
    text = _TRAILING_BLANKS.sub("\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()
