"""Which upload names are safe to keep as they are."""

from __future__ import annotations

import unicodedata

from ingestion.parsing.document import ParseError


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
