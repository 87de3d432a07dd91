"""Error pages: scripts calling an API get JSON in that API's shape, people get the page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from django.views.defaults import server_error as server_error_page


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


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # The message is fixed: the exception's text may name what was looked for.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    if request.path.startswith("/v1/"):
        return openai_error("Not found.", status=404, code="not_found")
    return page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # The message is fixed: the exception is in the log, under the request's id.
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Internal server error."}, status=500)
    if request.path.startswith("/v1/"):
        return openai_error("Internal server error.", status=500, error_type="server_error")
    return server_error_page(request)


def wants_json(request: HttpRequest) -> bool:
    """A page's script asking: browsers put text/html first on a form post."""
    return request.headers.get("Accept", "").startswith("application/json")


def json_error(detail: str, status: int) -> JsonResponse:
    """An error for a page's script, in the shape the REST API uses."""
    return JsonResponse({"detail": detail}, status=status)
