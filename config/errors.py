"""Error pages: scripts calling an API get JSON in that API's shape, people get the page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # The message is fixed: the exception's text may name what was looked for.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    if request.path.startswith("/v1/"):
        from assistant.openai_api import openai_error

        return openai_error("Not found.", status=404, code="not_found")
    return page_not_found(request, exception)
