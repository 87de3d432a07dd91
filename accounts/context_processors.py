"""Template context for the navigation: which role pages the signed-in person may open."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from django.http import HttpRequest

from accounts.roles import is_auditor, is_document_admin


def roles(request: HttpRequest) -> dict[str, Callable[[], bool]]:
    """Each answer is asked of the database only when a template uses it, and once."""
    user = request.user
    auditor = cache(lambda: is_auditor(user))
    document_admin = cache(lambda: is_document_admin(user))
    return {
        "is_document_admin": document_admin,
        "may_read_audit": lambda: auditor() or document_admin(),
        "may_read_feedback": auditor,
        # The usage and knowledge-gap pages (ingestion.access.insight_scope_for).
        "may_read_insight": lambda: auditor() or document_admin(),
    }
