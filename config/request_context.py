"""The request being served: its id and acting user, for logs, services and ledger records.

The middleware sets them for the length of one request; code far from the view (signal
hooks, services, log filters) reads them here instead of being handed the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from django.http import HttpRequest, HttpResponse

from config.activity import serving_activity

if TYPE_CHECKING:
    # Only named here: logging imports this module before Django's apps are ready.
    from django.contrib.auth.models import AbstractBaseUser


_current_request: ContextVar[HttpRequest | None] = ContextVar("current_request", default=None)
_current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")


class RequestContextMiddleware:
    """Lets services and signal hooks name the user and request behind the act they record.

    It also counts the request as serving activity (config.activity), so that upkeep which
    would stall the process waits for a quiet moment.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        offered = request.headers.get("X-Request-ID", "")
        request_id = offered if _is_request_id(offered) else uuid.uuid4().hex
        request_token = _current_request.set(request)
        id_token = _current_request_id.set(request_id)
        try:
            with serving_activity.serving():
                response = self.get_response(request)
        finally:
            _current_request.reset(request_token)
            _current_request_id.reset(id_token)
        response["X-Request-ID"] = request_id
        return response


def _is_request_id(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def current_actor() -> AbstractBaseUser | None:
    request = _current_request.get()
    if request is None or not request.user.is_authenticated:
        return None
    user: AbstractBaseUser = request.user
    return user


def current_request_id() -> str:
    return _current_request_id.get()
