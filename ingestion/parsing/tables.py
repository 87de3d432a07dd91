"""Tables as Markdown in the passage text, whatever format they came from.

A table read as a run of words loses which number sits under which header. As a Markdown
table (a header row, a separator, one line per row) each row keeps its cells in order and the
chunker can repeat the header over every passage of a long table; the passage viewer draws it
as a table again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ingestion.parsing.sections import collapse_spaces

# Fewer rows or columns than this is layout, not a table: it stays text.
MIN_TABLE_ROWS = 2
MIN_TABLE_COLUMNS = 2


def cell_text(text: str | None) -> str:
    """A cell on one line, its pipes escaped so that they do not end the cell."""
    return collapse_spaces(text or "").replace("\\", "\\\\").replace("|", "\\|")


def is_table(rows: Sequence[Sequence[str | None]]) -> bool:
    """Whether rows hold a real table: at least two rows and two columns with words."""
    worded = [row for row in rows if any(collapse_spaces(cell or "") for cell in row)]
    if len(worded) < MIN_TABLE_ROWS:
        return False
    columns = max(len(row) for row in worded)
    filled = [
        index
        for index in range(columns)
        if any(index < len(row) and collapse_spaces(row[index] or "") for row in worded)
    ]
    return len(filled) >= MIN_TABLE_COLUMNS


# A table most of whose rows start with a label ending in a colon is a form of fields.
_FORM_SHARE = 0.6


def is_form(rows: Sequence[Sequence[str | None]]) -> bool:
    """Whether the "table" is a form: rows of labelled fields ("Registration: | N4396T").

    A form has no columns to keep under headers; its rows read best as the lines they are.
    """
    firsts = [
        next((text for cell in row if (text := collapse_spaces(cell or ""))), "") for row in rows
    ]
    worded = [first for first in firsts if first]
    labelled = [first for first in worded if first.endswith(":")]
    return bool(worded) and len(labelled) >= _FORM_SHARE * len(worded)


def table_text(rows: Sequence[Sequence[str | None]], *, caption: str = "") -> str:
    """A table as a Markdown table, or a form as its lines of labelled fields."""
    if not is_form(rows):
        return markdown_table(rows, caption=caption)
    lines = [collapse_spaces(caption)] if collapse_spaces(caption) else []
    for row in rows:
        cells = [text for cell in row if (text := collapse_spaces(cell or ""))]
        if cells:
            lines.append(" ".join(cells))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Sequence[str | None]], *, caption: str = "") -> str:
    """The rows as a Markdown table, the first row its header; empty rows and columns dropped.

    The caption, when there is one, is the line just above the table: the chunker repeats it
    with the header.
    """
    cells = [[cell_text(cell) for cell in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    kept = [index for index in range(width) if any(row[index] for row in cells)]
    cells = [[row[index] for index in kept] for row in cells]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    lines.insert(1, "|" + "---|" * len(kept))
    caption = collapse_spaces(caption)
    return "\n".join([caption, *lines] if caption else lines)


# A Markdown table as `markdown_table` writes it: a header row, a separator row, its rows.
# A row followed by a separator is the header of the next table, not a row of this one.
_ROW = r"\|[^\n]*\|[ \t]*"
_SEPARATOR = r"\|(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*"
TABLE_BLOCK = re.compile(
    rf"(?m)^(?P<header>{_ROW}\n{_SEPARATOR})$"
    rf"(?P<rows>(?:\n(?!{_ROW}\n{_SEPARATOR}$){_ROW}$)*)"
)
_CELL_BORDER = re.compile(r"(?<!\\)\|")


def table_cells(line: str) -> list[str]:
    """The cells of one row line, unescaped."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [re.sub(r"\\([\\|])", r"\1", cell).strip() for cell in _CELL_BORDER.split(inner)]


def text_and_tables(text: str) -> list[str | list[list[str]]]:
    """Text cut into its runs of text and its tables (each a list of rows, header first)."""
    parts: list[str | list[list[str]]] = []
    position = 0
    for match in TABLE_BLOCK.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        lines = match.group(0).split("\n")
        parts.append([table_cells(line) for line in [lines[0], *lines[2:]] if line.strip()])
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return parts
