"""A passage's text for a page: its Markdown tables drawn as tables, everything escaped.

Passages come from uploaded documents, so nothing in them is ever markup: every cell and
every run of text is escaped, and only the table elements are this code's own.
"""

from __future__ import annotations

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ingestion.parsing.tables import text_and_tables

register = template.Library()


@register.filter
def passage_text_html(text: str, highlighted: bool = False) -> SafeString:
    """The passage's text with its tables as <table>; `highlighted` marks the text runs."""
    pieces: list[str] = []
    for part in text_and_tables(str(text)):
        if isinstance(part, str):
            escaped = escape(part.strip("\n"))
            if escaped:
                pieces.append(f"<mark>{escaped}</mark>" if highlighted else escaped)
            continue
        header, *rows = part
        head = "".join(f'<th scope="col">{escape(cell)}</th>' for cell in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
        )
        css = "passage-table passage-table-highlighted" if highlighted else "passage-table"
        pieces.append(
            f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        )
    # Every piece above is escaped text or a tag written here.
    return mark_safe("\n".join(pieces))
