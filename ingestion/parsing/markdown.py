"""Markdown (CommonMark with tables): heading paths, code blocks, front matter titles."""

from __future__ import annotations

import re
from typing import Any

from bs4 import BeautifulSoup

from ingestion.parsing.document import FormatParts, ParseLimits
from ingestion.parsing.sections import SectionBuilder, table_row_text
from ingestion.parsing.text import decode_text
from ingestion.titles import best_title

_FRONT_MATTER = re.compile(
    r"\A(?:---|\+\+\+)[ \t]*\n(.*?)\n(?:---|\+\+\+|\.\.\.)[ \t]*(?:\n|\Z)", re.S
)
# The run of blanks is taken possessively: otherwise every blank of a long run starts a
# new scan of the rest.
_FRONT_MATTER_TITLE = re.compile(r"^title[ \t]*+[:=](.*)$", re.MULTILINE)


def parse_markdown(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    from markdown_it import MarkdownIt

    text = decode_text(data).replace("\r\n", "\n").lstrip("\ufeff")
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
    return FormatParts(
        best_title([front_matter_title, builder.first_h1 or ""], stem=stem), builder.sections
    )


def _markdown_sections(tokens: list[Any], *, drop_link_lists: bool) -> SectionBuilder:
    builder = SectionBuilder()
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
            builder.block(table_row_text(row_cells), paragraph=False)
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
