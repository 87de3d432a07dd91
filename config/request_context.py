"""The request being served: its id and acting user, for logs, services and ledger records.

The middleware sets them for the length of one request; code far from the view (signal
hooks, services, log filters) reads them here instead of being handed the request.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
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
    would stall the process waits for a quiet moment. Async-capable: a synchronous
    middleware would put every async view behind it on a thread of its own.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._is_async:
            return self._call_async(request)
        request_id, tokens = _enter(request)
        try:
            with serving_activity.serving():
                response = self.get_response(request)
        finally:
            _leave(tokens)
        response["X-Request-ID"] = request_id
        return response

    async def _call_async(self, request: HttpRequest) -> HttpResponse:
        request_id, tokens = _enter(request)
        try:
            with serving_activity.serving():
                response: HttpResponse = await self.get_response(request)
        finally:
            _leave(tokens)
        response["X-Request-ID"] = request_id
        return response


def _enter(request: HttpRequest) -> tuple[str, tuple[Token[HttpRequest | None], Token[str]]]:
    offered = request.headers.get("X-Request-ID", "")
    request_id = offered if _is_request_id(offered) else uuid.uuid4().hex
    return request_id, (_current_request.set(request), _current_request_id.set(request_id))


def _leave(tokens: tuple[Token[HttpRequest | None], Token[str]]) -> None:
    request_token, id_token = tokens
    _current_request.reset(request_token)
    _current_request_id.reset(id_token)


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
