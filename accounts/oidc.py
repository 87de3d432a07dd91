"""Sign-on with an OpenID Connect provider (mozilla-django-oidc), configured by the OIDC_* settings.

The provider's endpoints come from the OIDC_OP_* settings, or else from its discovery document
(OIDC_OP_ISSUER + /.well-known/openid-configuration), fetched at the first sign-on rather than at
start-up, so a provider that is down never stops the server or local logins. The person's Django
user is the one named by the OIDC_USERNAME_CLAIM claim; their groups become exactly the list in
the OIDC_GROUPS_CLAIM claim at every sign-on and every session refresh. A signed-in session is
checked with the provider again every OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS (SessionRefresh).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import render
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.middleware import SessionRefresh
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from accounts.directory import directory_user_create, directory_user_sync

logger = logging.getLogger(__name__)

BACKEND_PATH = "accounts.oidc.DirectoryOIDCBackend"
PROVIDER_UNREACHABLE_STATUS = 503
RENEWAL_NEEDED = "Your sign-in needs renewing: reload the page to continue."

# Setting name -> key of the provider's discovery document.
DISCOVERED_ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


class ProviderUnreachable(Exception):
    """The provider's discovery document could not be fetched or is not what it should be."""


def oidc_configured() -> bool:
    return bool(
        settings.OIDC_RP_CLIENT_ID
        and (settings.OIDC_OP_ISSUER or settings.OIDC_OP_AUTHORIZATION_ENDPOINT)
    )


_discovered: dict[str, dict[str, Any]] = {}
_discovery_lock = threading.Lock()


def provider_metadata(issuer: str) -> dict[str, Any]:
    """The provider's discovery document, fetched once per process and kept once it is valid."""
    with _discovery_lock:
        if issuer not in _discovered:
            _discovered[issuer] = _fetch_metadata(issuer)
        return _discovered[issuer]


def _fetch_metadata(issuer: str) -> dict[str, Any]:
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as error:
        raise ProviderUnreachable(f"Could not read {url}: {error}") from error
    # OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer asked for.
    if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
        raise ProviderUnreachable(f"{url} does not describe the issuer {issuer}")
    return metadata


def provider_setting(name: str, *default: Any) -> Any:
    """A mozilla-django-oidc setting; an endpoint not set explicitly comes from discovery."""
    value = getattr(settings, name, None)
    if name in DISCOVERED_ENDPOINTS and not value and settings.OIDC_OP_ISSUER:
        key = DISCOVERED_ENDPOINTS[name]
        endpoint = provider_metadata(settings.OIDC_OP_ISSUER).get(key)
        if not endpoint:
            raise ProviderUnreachable(f"The provider publishes no {key}")
        return endpoint
    if value is None:
        if default:
            return default[0]
        raise ImproperlyConfigured(f"Setting {name} not found")
    return value


class _ProviderSetting:
    """An attribute that mozilla-django-oidc reads, resolved when it is read, not at start-up."""

    def __init__(self, setting: str = "", default: Any = None) -> None:
        self.setting = setting
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.setting = self.setting or name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return provider_setting(self.setting, self.default)


class _ReadsProviderSettings:
    """mozilla-django-oidc's classes read their settings through `get_settings`: ours come from
    provider_setting, so endpoints found by discovery stand beside the configured ones."""

    @staticmethod
    def get_settings(attr: str, *args: Any) -> Any:
        return provider_setting(attr, *args)


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into nested claims ("realm_access.roles")."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def groups_from_claims(claims: Mapping[str, Any]) -> list[object]:
    value = claim_value(claims, settings.OIDC_GROUPS_CLAIM)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    logger.warning("Ignoring the %s claim: not a list of names", settings.OIDC_GROUPS_CLAIM)
    return []


def _profile(claims: Mapping[str, Any]) -> dict[str, str]:
    names = {"first_name": "given_name", "last_name": "family_name", "email": "email"}
    return {
        field: claims[claim] for field, claim in names.items() if isinstance(claims.get(claim), str)
    }


class DirectoryOIDCBackend(_ReadsProviderSettings, OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend: users by user name claim, groups mirrored from a claim."""

    OIDC_OP_TOKEN_ENDPOINT = _ProviderSetting()
    OIDC_OP_USER_ENDPOINT = _ProviderSetting()
    OIDC_OP_JWKS_ENDPOINT = _ProviderSetting()
    OIDC_RP_CLIENT_ID = _ProviderSetting()
    OIDC_RP_CLIENT_SECRET = _ProviderSetting()
    OIDC_RP_SIGN_ALGO = _ProviderSetting()
    OIDC_RP_IDP_SIGN_KEY = _ProviderSetting()

    def __init__(self) -> None:
        # Django builds every backend for every login, local ones too: read nothing here, so
        # that a provider that is down or not configured costs a local login nothing.
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractBaseUser | None:
        # Only the provider's callback passes a nonce; a password login never reaches the provider.
        if "nonce" not in kwargs or not oidc_configured():
            return None
        try:
            user: AbstractBaseUser | None = super().authenticate(request, **kwargs)
        except (requests.RequestException, ProviderUnreachable) as error:
            logger.warning("Sign-on with the provider failed: %s", error)
            return None
        return user

    def get_userinfo(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        # Some providers put the groups in the ID token only, others in the userinfo answer only.
        userinfo: dict[str, Any] = super().get_userinfo(access_token, id_token, payload)
        return {**payload, **userinfo}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        username = claim_value(claims, settings.OIDC_USERNAME_CLAIM)
        if not isinstance(username, str) or not username.strip():
            logger.warning("The provider sent no %s claim", settings.OIDC_USERNAME_CLAIM)
            return False
        return True

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        username = claim_value(claims, settings.OIDC_USERNAME_CLAIM).strip()
        users = self.UserModel.objects.filter(**{self.UserModel.USERNAME_FIELD: username})
        # A provider may let people choose their user name; a local account (one with a
        # password) must never be taken over by naming it.
        if any(user.has_usable_password() for user in users):
            raise SuspiciousOperation(f"{username!r} is a local account, not a sign-on one")
        return users

    def describe_user_by_claims(self, claims: dict[str, Any]) -> str:
        return f"user name {claim_value(claims, settings.OIDC_USERNAME_CLAIM)!r}"

    def create_user(self, claims: dict[str, Any]) -> AbstractBaseUser:
        username = claim_value(claims, settings.OIDC_USERNAME_CLAIM).strip()
        return self.update_user(directory_user_create(username=username), claims)

    def update_user(self, user: AbstractBaseUser, claims: dict[str, Any]) -> AbstractBaseUser:
        return directory_user_sync(
            user=user,
            group_names=groups_from_claims(claims),
            profile=_profile(claims),
            method="oidc",
        )


def _provider_unreachable(request: HttpRequest) -> HttpResponse:
    context = {"form": AuthenticationForm(request), "sso_unreachable": True}
    return render(request, "registration/login.html", context, status=PROVIDER_UNREACHABLE_STATUS)


class ProviderRedirectView(_ReadsProviderSettings, OIDCAuthenticationRequestView):
    """Sends the browser to the provider's login page ("Sign in with ...")."""

    OIDC_OP_AUTH_ENDPOINT = _ProviderSetting("OIDC_OP_AUTHORIZATION_ENDPOINT")
    OIDC_RP_CLIENT_ID = _ProviderSetting()

    def __init__(self, **kwargs: Any) -> None:
        # The endpoints are read when the request is handled, where a failure can be shown.
        super(OIDCAuthenticationRequestView, self).__init__(**kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_configured():
            raise Http404("Single sign-on is not configured")
        try:
            response: HttpResponse = super().get(request)
        except ProviderUnreachable as error:
            logger.warning("Cannot start sign-on: %s", error)
            return _provider_unreachable(request)
        return response


class ProviderCallbackView(_ReadsProviderSettings, OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back; a failed sign-on lands on the login page."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not oidc_configured():
            raise Http404("Single sign-on is not configured")
        try:
            response: HttpResponse = super().get(request)
        except SuspiciousOperation as error:
            # A replayed or forged callback (unknown state): refuse it like any failed sign-on.
            logger.warning("Refused a sign-on callback: %s", error)
            failure: HttpResponse = self.login_failure()
            return failure
        return response


class SessionRefreshMiddleware(_ReadsProviderSettings, SessionRefresh):
    """SessionRefresh, also for requests that cannot follow a redirect to the provider.

    Once the ID token's renewal time has passed, a page load goes through the provider again
    (silently while the provider's own session lasts), which brings the groups up to date. Form
    posts and script requests cannot take that detour; until the next page load renews the
    sign-in they are refused with a 403 whose JSON "detail" says to reload.
    """

    OIDC_OP_AUTHORIZATION_ENDPOINT = _ProviderSetting()
    OIDC_RP_CLIENT_ID = _ProviderSetting()
    OIDC_EXEMPT_URLS = _ProviderSetting(default=[])
    OIDC_STATE_SIZE = _ProviderSetting(default=32)
    OIDC_AUTHENTICATION_CALLBACK_URL = _ProviderSetting(default="oidc_authentication_callback")
    OIDC_RP_SCOPES = _ProviderSetting(default="openid email")
    OIDC_USE_NONCE = _ProviderSetting(default=True)
    OIDC_NONCE_SIZE = _ProviderSetting(default=32)

    def __init__(self, get_response: Any) -> None:
        # Every setting is read when a request needs it (see _ProviderSetting).
        super(SessionRefresh, self).__init__(get_response)

    def is_refreshable_url(self, request: HttpRequest) -> bool:
        """Signed in through the provider, on a page not exempt; of any method."""
        if not oidc_configured() or not request.user.is_authenticated:
            return False
        if request.session.get(BACKEND_SESSION_KEY) != BACKEND_PATH:
            return False
        return request.path not in self.exempt_urls and not any(
            pattern.match(request.path) for pattern in self.exempt_url_patterns
        )

    def process_request(self, request: HttpRequest) -> HttpResponseBase | None:
        if not self.is_refreshable_url(request):
            return None
        if request.session.get("oidc_id_token_expiration", 0) > time.time():
            return None
        if request.method != "GET" or _is_script_request(request):
            return JsonResponse({"detail": RENEWAL_NEEDED}, status=403)
        try:
            response: HttpResponseBase | None = super().process_request(request)
        except ProviderUnreachable as error:
            logger.warning("Cannot renew a sign-on session: %s", error)
            return _provider_unreachable(request)
        return response


def _is_script_request(request: HttpRequest) -> bool:
    """A request made by a page's script, which cannot follow a redirect to the provider."""
    mode = request.headers.get("Sec-Fetch-Mode", "navigate")
    return mode != "navigate" or request.headers.get("X-Requested-With") == "XMLHttpRequest"
