"""Passages as the viewer shows them: Markdown documents keep their code, lists and tables."""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from assistant.rendering import markdown_html
from ingestion.templatetags.passage_text import passage_text_html

register = template.Library()


@register.simple_tag
def passage_html(text: str, detected_type: str = "") -> SafeString:
    """A passage of a Markdown document rendered (safely); any other passage as plain text,
    its tables drawn as tables (ingestion/templatetags/passage_text.py)."""
    if detected_type == "markdown":
        return markdown_html(text)
    return format_html('<div class="chunk-text">{}</div>', passage_text_html(text))
