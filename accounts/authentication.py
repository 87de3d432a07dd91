"""Personal API tokens in the REST API: who is calling, and whether the token covers the call.

A view says which scope each method needs in `token_scopes`; a view that says nothing
needs `read` to look and `ingest` to change, the narrowest reading. A session sign-in
(the portal's own calls) has no token and is held only to the user's own rights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.login_throttle import client_address
from accounts.models import ApiToken, TokenScope
from accounts.tokens import ScopeMissing, TokenRejected, bearer_key, scope_require, token_verify

if TYPE_CHECKING:
    # Only a type here: DRF imports this module while rest_framework.views is still loading.
    from rest_framework.views import APIView


class ApiTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <token>`, or `Token <token>` as older clients send it."""

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        key = bearer_key(request.META.get("HTTP_AUTHORIZATION", ""))
        if key is None:
            return None
        try:
            token = token_verify(key, ip=client_address(request) or None)
        except TokenRejected as rejected:
            raise AuthenticationFailed(str(rejected)) from rejected
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="api"'


def scope_for(view: APIView, method: str) -> str:
    scopes: dict[str, str] = getattr(view, "token_scopes", {})
    if method in scopes:
        return scopes[method]
    if method == "HEAD" and "GET" in scopes:
        return scopes["GET"]
    return TokenScope.READ if method in SAFE_METHODS else TokenScope.INGEST


class TokenScopePermission(BasePermission):
    """A request signed with a token needs the scope its view names for the method (403)."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        try:
            scope_require(request_token(request), scope_for(view, request.method or "GET"))
        except ScopeMissing as missing:
            raise PermissionDenied(str(missing)) from missing
        return True


def request_token(request: Request) -> ApiToken | None:
    """The token a REST request was signed with; None for a session sign-in."""
    return request.auth if isinstance(request.auth, ApiToken) else None


class ApiTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """How the OpenAPI schema describes a personal token: an HTTP bearer credential."""

    target_class = "accounts.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token from /accounts/tokens/ (`kat_...`).",
        }
