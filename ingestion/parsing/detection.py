"""Which format an upload is, judged by its content; the extension only chooses among text kinds."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePath
from typing import IO

from ingestion.parsing.document import ParseError
from ingestion.parsing.text import SNIFF_BYTES, decode_text, looks_like_text

TYPE_NAMES = {
    "pdf": "a PDF",
    "docx": "a Word document (DOCX)",
    "pptx": "a PowerPoint presentation (PPTX)",
    "xlsx": "an Excel workbook (XLSX)",
    "html": "an HTML page",
    "markdown": "a Markdown file",
    "text": "plain text",
    "eml": "a mail message (EML)",
    "mbox": "a mailbox (MBOX)",
    "image": "an image (PNG, JPEG or TIFF)",
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
    ".eml": "eml",
    ".mbox": "mbox",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".tif": "image",
    ".tiff": "image",
}

_SUPPORTED_TYPES_HINT = (
    "Upload a PDF, Word (DOCX), PowerPoint (PPTX), Excel (XLSX), HTML, Markdown, plain text or "
    "mail (EML, MBOX) file, or a scan (PNG, JPEG, TIFF)."
)

# PNG, JPEG and TIFF (both byte orders): pictures of pages, read by OCR.
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)

# Signatures of formats we refuse; each is long or distinctive enough not to occur at the
# start of ordinary text.
_UNSUPPORTED_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
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

_HTML_START = re.compile(
    r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html|<head|<body)",
    re.IGNORECASE | re.DOTALL,
)


def type_by_extension(filename: str) -> str | None:
    """The type a file's extension claims, before its content is looked at; None if unknown."""
    return _EXTENSION_TYPES.get(PurePath(filename).suffix.lower())


def detect_type(data: bytes, filename: str) -> str:
    """Return the document type of `data`, judged by its content.

    The extension only chooses between text kinds (HTML, Markdown, plain text); a binary
    extension whose content disagrees, an unsupported format and empty data raise ParseError.
    """
    if not data:
        raise ParseError("The file is empty.")
    expected = type_by_extension(filename)
    content_type, description = _sniff_content(data)
    if content_type in ("pdf", "docx", "pptx", "xlsx", "image"):
        if expected is None or expected == content_type:
            return content_type
        raise ParseError(
            f"The file's content is not {TYPE_NAMES[expected]} (it looks like {description})."
        )
    if content_type == "text":
        if expected in _TEXT_KINDS:
            return expected
        if expected is None:
            return _text_kind(data, description)
        raise ParseError(
            f"The file's content is not {TYPE_NAMES[expected]} (it looks like {description})."
        )
    if expected is not None:
        raise ParseError(
            f"The file's content is not {TYPE_NAMES[expected]} (it looks like {description})."
        )
    raise ParseError(
        f"This type of file is not supported (it looks like {description}). {_SUPPORTED_TYPES_HINT}"
    )


# Types that are text inside: the extension chooses among them.
_TEXT_KINDS = frozenset({"html", "markdown", "text", "eml", "mbox"})
_MESSAGE_HEADER_NAMES = frozenset(
    {
        "return-path", "received", "from", "to", "cc", "subject", "date", "message-id",
        "mime-version", "content-type", "delivered-to", "reply-to", "x-mailer", "sender",
    }
)  # fmt: skip
_HEADER_NAME = re.compile(r"(?m)^([A-Za-z][A-Za-z0-9-]*):")


def _text_kind(data: bytes, description: str) -> str:
    """Which text kind a file without a telling extension is: HTML, mail or plain text."""
    if description == TYPE_NAMES["html"]:
        return "html"
    head = decode_text(data[:SNIFF_BYTES])
    if looks_like_mbox(head):
        return "mbox"
    if looks_like_message(head):
        return "eml"
    return "text"


def looks_like_message(text: str) -> bool:
    """Whether text starts with the header lines of a mail message (three known ones at least)."""
    head = text.lstrip()[:4000].replace("\r\n", "\n").split("\n\n", 1)[0]
    names = [match.group(1).lower() for match in _HEADER_NAME.finditer(head)]
    if not names or names[0] not in _MESSAGE_HEADER_NAMES or not head.lower().startswith(names[0]):
        return False
    return len(set(names) & _MESSAGE_HEADER_NAMES) >= 3


def looks_like_mbox(text: str) -> bool:
    """A mailbox starts with a "From " separator line followed by a message."""
    return text.startswith("From ") and looks_like_message(text.split("\n", 1)[-1])


def detect_type_of_file(file: IO[bytes], filename: str) -> str:
    """`detect_type` for a stored or uploaded file, reading only what the decision needs.

    An Office file is told by the names in its ZIP directory, read in place; anything else by
    its first bytes. The file is left at its start.
    """
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    try:
        if not head.startswith(b"PK\x03\x04"):
            return detect_type(head, filename)
        try:
            with zipfile.ZipFile(file) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            raise ParseError(
                "The file is a damaged ZIP archive (Office documents are ZIP archives inside)."
            ) from error
        return detect_type(_names_only_zip(names), filename)
    finally:
        file.seek(0)


def _names_only_zip(names: list[str]) -> bytes:
    """An empty archive with the same member names: what `_sniff_zip` looks at."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, b"")
    return buffer.getvalue()


def _sniff_content(data: bytes) -> tuple[str, str]:
    """Return (type, description); type is a document type, "text", or "unsupported"."""
    if data[:1024].lstrip(b" \t\r\n\x00").startswith(b"%PDF-") or data.startswith(
        b"\xef\xbb\xbf%PDF-"
    ):
        return "pdf", TYPE_NAMES["pdf"]
    if data.startswith(b"PK\x03\x04"):
        return _sniff_zip(data)
    for signature, description in _IMAGE_SIGNATURES:
        if data.startswith(signature):
            return "image", description
    if _is_windows_program(data):
        return "unsupported", "a Windows program (.exe or .dll)"
    for signature, description in _UNSUPPORTED_SIGNATURES:
        if data.startswith(signature):
            return "unsupported", description
    sample = data[:SNIFF_BYTES]
    if not looks_like_text(sample):
        return "unsupported", "binary data"
    if _HTML_START.match(decode_text(sample)):
        return "text", TYPE_NAMES["html"]
    return "text", TYPE_NAMES["text"]


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
                return document_type, TYPE_NAMES[document_type]
    if "mimetype" in names and "content.xml" in names:
        return "unsupported", "an OpenDocument file (save it as DOCX, XLSX or PPTX)"
    return "unsupported", "a ZIP archive"
