"""Error pages: scripts calling an API get JSON in that API's shape, people get the page."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string

# Said on every "not found" page: the exception's text may name what was looked for.
NOT_FOUND_TEXT = (
    "There is nothing here: the page may have been removed (a deleted document, a removed "
    "conversation) or the address may be mistyped."
)


def openai_error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def openai_error(
    message: str,
    *,
    status: int,
    error_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JsonResponse:
    return JsonResponse(openai_error_body(message, error_type, param, code), status=status)


def _error_page(request: HttpRequest, status: int, title: str, text: str) -> HttpResponse:
    return render(
        request, "error_page.html", {"error_title": title, "error_text": text}, status=status
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # The message is fixed: the exception's text may name what was looked for.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    if request.path.startswith("/v1/"):
        return openai_error("Not found.", status=404, code="not_found")
    return _error_page(request, 404, "Not found", NOT_FOUND_TEXT)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The reason the view gave (who may open the page), in the site's layout."""
    reason = str(exception) if isinstance(exception, PermissionDenied) else ""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": reason or "Permission denied."}, status=403)
    return _error_page(
        request,
        403,
        "Not for your account",
        reason or "Your account may not open this page. Ask an administrator if you need it.",
    )


def server_error(request: HttpRequest) -> HttpResponse:
    # The message is fixed: the exception is in the log, under the request's id.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    if request.path.startswith("/v1/"):
        return openai_error("Internal server error.", status=500, error_type="server_error")
    # No request context: whatever failed may fail again while the page is drawn.
    page = render_to_string(
        "error_page.html",
        {
            "error_title": "Something went wrong",
            "error_text": "The server could not finish this request. It is logged; please "
            "try again in a moment.",
        },
    )
    return HttpResponse(page, status=500)


def wants_json(request: HttpRequest) -> bool:
    """A page's script asking: browsers put text/html first on a form post."""
    return request.headers.get("Accept", "").startswith("application/json")


def json_error(detail: str, status: int) -> JsonResponse:
    """An error for a page's script, in the shape the REST API uses."""
    return JsonResponse({"detail": detail}, status=status)
