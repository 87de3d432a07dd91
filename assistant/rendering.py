"""Markdown made safe to show: answers and the passages of Markdown documents.

Raw HTML is shown as text, never as markup, and what markdown-it produces is cleaned by nh3
down to the tags below, so neither a model nor a document can put script on a page.
"""

from __future__ import annotations

from functools import cache

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

SAFE_TAGS = {
    "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
SAFE_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}, "th": {"align"}, "td": {"align"}}
SAFE_URL_SCHEMES = {"http", "https", "mailto"}


def markdown_engine() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


@cache
def _plain_markdown() -> MarkdownIt:
    return markdown_engine()


def safe_html(rendered: str) -> SafeString:
    cleaned = nh3.clean(
        rendered, tags=SAFE_TAGS, attributes=SAFE_ATTRIBUTES, url_schemes=SAFE_URL_SCHEMES
    )
    return mark_safe(cleaned)  # nh3 has just sanitised it


def markdown_html(text: str) -> SafeString:
    """Markdown text (a passage of a Markdown document) as sanitised HTML."""
    return safe_html(_plain_markdown().render(text))
