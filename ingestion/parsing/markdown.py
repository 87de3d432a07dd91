"""Markdown (CommonMark with tables): heading paths, code blocks, front matter titles."""

from __future__ import annotations

import re
from typing import Any

from bs4 import BeautifulSoup

from ingestion.parsing.document import FormatParts, ParseLimits
from ingestion.parsing.sections import SectionBuilder, collapse_spaces
from ingestion.parsing.text import decode_text
from ingestion.titles import best_title

_FRONT_MATTER = re.compile(
    r"\A(?:---|\+\+\+)[ \t]*\n(.*?)\n(?:---|\+\+\+|\.\.\.)[ \t]*(?:\n|\Z)", re.S
)
# The run of blanks is taken possessively: otherwise every blank of a long run starts a
# new scan of the rest.
_FRONT_MATTER_TITLE = re.compile(r"^title[ \t]*+[:=](.*)$", re.MULTILINE)


def encoded_text(text: str) -> str:
    """A passage as the encoders see it, and as its size is counted: without the backticks
    of inline code, which mark code for the reader but would cost word pieces and move
    passage boundaries."""
    return text.replace("`", "")


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
    """Sections of a Markdown file, keeping the Markdown a reader needs: inline code, code
    blocks, list markers and tables stay as written, so passages (and the model, and the
    passage viewer) see `make deploy ENV=prod` as code and a table as a table."""
    builder = SectionBuilder()
    row_cells: list[str] = []
    in_row = False
    in_head = False
    ordinals: list[int | None] = []
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
        elif kind == "bullet_list_open":
            ordinals.append(None)
        elif kind == "ordered_list_open":
            ordinals.append(int(token.attrGet("start") or 1))
        elif kind == "list_item_open" and ordinals:
            number = ordinals[-1]
            if number is None:
                builder.inline("- ")
            else:
                builder.inline(f"{number}. ")
                ordinals[-1] = number + 1
        elif kind == "thead_open":
            in_head = True
        elif kind == "tr_open":
            in_row, row_cells = True, []
        elif kind == "tr_close":
            in_row = False
            builder.block(_table_row(row_cells), paragraph=False)
            if in_head:
                builder.block(_table_row(["---"] * len(row_cells)), paragraph=False)
        elif kind == "thead_close":
            in_head = False
        elif kind in ("fence", "code_block"):
            # Indented four spaces, Markdown's other code block: no fence lines, whose word
            # pieces would crowd the passage for the encoder, and every line still reads as code.
            builder.preformatted(_indented(token.content))
        elif kind == "html_block":
            # Python's own HTML parser, not lxml's C one: Markdown is read by Python code only,
            # which is what lets small Markdown files share a parser child (ingestion.sandbox).
            builder.block(BeautifulSoup(token.content, "html.parser").get_text(" "))
        elif kind == "paragraph_close":
            builder.end_block(paragraph=not token.hidden)
        elif kind.endswith("_close"):
            if kind in ("bullet_list_close", "ordered_list_close") and ordinals:
                ordinals.pop()
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


def _table_row(cells: list[str]) -> str:
    """A Markdown table row; a pipe inside a cell is escaped so the columns stay put."""
    return "| " + " | ".join(collapse_spaces(cell).replace("|", "\\|") for cell in cells) + " |"


def _indented(code: str) -> str:
    return "\n".join(
        f"    {line}" if line.strip() else "" for line in code.strip("\n").splitlines()
    )


def _inline_code(code: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    ticks = "`" * (longest + 1)
    padding = " " if code.startswith("`") or code.endswith("`") else ""
    return f"{ticks}{padding}{code}{padding}{ticks}"


def _markdown_inline_text(token: Any) -> str:
    parts: list[str] = []
    for child in token.children or []:
        if child.type == "code_inline":
            parts.append(_inline_code(child.content))
        elif child.type in ("text", "image"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return "".join(parts)
