"""Passages with tables are shown as tables, and nothing a document holds becomes markup."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from ingestion.models import Document
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes
from ingestion.templatetags.passage_text import passage_text_html

pytestmark = pytest.mark.django_db


def test_a_markdown_table_is_drawn_as_a_table_with_every_cell_escaped() -> None:
    text = (
        "Prices below.\nPrice list\n| Item | Note |\n|---|---|\n"
        '| Widget | <img src=x onerror="alert(1)"> |\n| Pipe \\| bar | ok |\nAfter <b>.'
    )
    shown = str(passage_text_html(text))
    assert '<th scope="col">Item</th>' in shown
    assert "<td>&lt;img src=x onerror=&quot;alert(1)&quot;&gt;</td>" in shown
    assert "<td>Pipe | bar</td>" in shown
    assert "After &lt;b&gt;." in shown
    assert "<img" not in shown
    assert "<b>" not in shown


def test_the_document_page_shows_a_table_of_an_uploaded_page_as_a_table() -> None:
    page = (
        b"<html><body><h1>Rota</h1><table><tr><th>Day</th><th>On call</th></tr>"
        b"<tr><td>Monday</td><td>&lt;script&gt;alert(1)&lt;/script&gt;</td></tr></table>"
        b"</body></html>"
    )
    outcome = document_upload_bytes(name="rota.html", data=page, is_public=True)
    assert outcome.version is not None
    run_pending_once()
    client = Client()
    client.force_login(User.objects.create_superuser("root"))
    document = Document.objects.get(id=outcome.version.document_id)
    shown = client.get(reverse("ingestion:document-detail", args=[document.id])).content.decode()
    assert '<th scope="col">On call</th>' in shown
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in shown
