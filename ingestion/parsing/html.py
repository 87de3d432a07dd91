"""HTML and XHTML: the page's main content under its headings, without the site's furniture."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup
from bs4.element import NavigableString, PreformattedString, Tag

from ingestion.parsing.document import FormatParts, ParseLimits
from ingestion.parsing.sections import (
    NOT_LETTER_OR_DIGIT,
    PERMALINK_MARKS,
    SectionBuilder,
    collapse_spaces,
    table_row_text,
)
from ingestion.parsing.tables import is_table, table_text
from ingestion.parsing.text import SNIFF_BYTES
from ingestion.titles import best_title, without_site_name

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


def parse_html(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    soup = _html_soup(data)
    page_title = collapse_spaces(soup.title.get_text()) if soup.title is not None else ""
    # Prefer the main content so sidebars, headers and footers stay out of the index.
    root = soup.find(_is_main_content) or soup.body or soup
    builder = SectionBuilder()
    _walk_html(root, builder, drop_site_furniture=True)
    builder.flush()
    if not builder.sections:
        # A page that is nothing but navigation (a table of contents, say) is still a page.
        builder = SectionBuilder()
        _walk_html(root, builder, drop_site_furniture=False)
        builder.flush()
    heading = builder.first_heading or ""
    title = best_title(
        [without_site_name(page_title, heading), builder.first_h1 or "", heading], stem=stem
    )
    return FormatParts(title, builder.sections)


def _html_soup(data: bytes) -> BeautifulSoup:
    """XHTML is read as XML (what it is); anything the XML parser cannot read, as HTML."""
    head = data[:SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
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
    if tag.name == "a" and tag.get_text(strip=True) in PERMALINK_MARKS:
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
        text = NOT_LETTER_OR_DIGIT.sub("", item.get_text())
        linked = "".join(NOT_LETTER_OR_DIGIT.sub("", a.get_text()) for a in item.find_all("a"))
        if not text or text != linked:
            return False
    return True


def _attribute_tokens(value: object) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [str(token) for token in value]
    return []


def _walk_html(root: Tag, builder: SectionBuilder, *, drop_site_furniture: bool) -> None:
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
        elif name == "table" and is_table(rows := _html_table_rows(node)):
            caption = node.find("caption")
            caption_text = caption.get_text(" ") if isinstance(caption, Tag) else ""
            builder.preformatted(table_text(rows, caption=caption_text))
        elif name == "tr":
            cells = node.find_all(["td", "th"], recursive=False)
            builder.block(table_row_text(cell.get_text(" ") for cell in cells), paragraph=False)
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


# A cell claiming to span more columns than this is damaged or hostile, not a table.
_MAX_COLSPAN = 50


def _html_table_rows(table: Tag) -> list[list[str]]:
    """The table's own rows (not those of tables inside its cells), each cell once per column
    it spans."""
    rows: list[list[str]] = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue
        cells: list[str] = []
        for cell in row.find_all(["td", "th"], recursive=False):
            try:
                span = min(max(int(str(cell.get("colspan") or 1)), 1), _MAX_COLSPAN)
            except ValueError:
                span = 1
            cells.extend([cell.get_text(" ")] * span)
        rows.append(cells)
    return rows
