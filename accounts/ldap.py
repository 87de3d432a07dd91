"""Sign-on against LDAP or Active Directory (django-auth-ldap), configured by the LDAP_* settings.

A person signs in with the ordinary login form. The directory checks the password; their Django
groups then become exactly their directory groups (accounts/directory.py). While they stay
signed in, their groups are read again from the directory every LDAP_REFRESH_SECONDS: someone
removed from a group loses its documents at their first request after that, and someone the
directory no longer finds is signed out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import ldap
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, logout
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django_auth_ldap.backend import LDAPBackend, _LDAPUser
from django_auth_ldap.config import (
    GroupOfNamesType,
    GroupOfUniqueNamesType,
    LDAPGroupType,
    LDAPSearch,
    NestedActiveDirectoryGroupType,
    NestedGroupOfNamesType,
    PosixGroupType,
)

from accounts.directory import directory_user_sync

logger = logging.getLogger(__name__)

BACKEND_PATH = "accounts.ldap.DirectoryLDAPBackend"
# When the signed-in person's groups were last read from the directory (seconds since the epoch).
CHECKED_AT_KEY = "ldap_checked_at"

# LDAP_GROUP_TYPE: how membership is stored, and which entries are groups.
GROUP_TYPES: dict[str, tuple[Callable[[], LDAPGroupType], str]] = {
    "groupOfNames": (GroupOfNamesType, "(objectClass=groupOfNames)"),
    "nestedGroupOfNames": (NestedGroupOfNamesType, "(objectClass=groupOfNames)"),
    "groupOfUniqueNames": (GroupOfUniqueNamesType, "(objectClass=groupOfUniqueNames)"),
    "posixGroup": (PosixGroupType, "(objectClass=posixGroup)"),
    # Active Directory, following groups nested in groups.
    "activeDirectory": (NestedActiveDirectoryGroupType, "(objectClass=group)"),
}
# Directory attributes that fill in the Django user (the same names in OpenLDAP and AD).
PROFILE_ATTRIBUTES = {"first_name": "givenName", "last_name": "sn", "email": "mail"}


def ldap_backend_settings() -> dict[str, Any]:
    """django-auth-ldap's settings, built from the plain LDAP_* settings."""
    group_type_name: str = settings.LDAP_GROUP_TYPE
    if group_type_name not in GROUP_TYPES:
        raise ImproperlyConfigured(
            f"LDAP_GROUP_TYPE must be one of {', '.join(GROUP_TYPES)}, not {group_type_name!r}"
        )
    group_type, group_filter = GROUP_TYPES[group_type_name]
    options: dict[int, Any] = {
        # Active Directory answers with referrals that python-ldap cannot follow anonymously.
        ldap.OPT_REFERRALS: 0,
        ldap.OPT_NETWORK_TIMEOUT: settings.LDAP_TIMEOUT_S,
        ldap.OPT_TIMEOUT: settings.LDAP_TIMEOUT_S,
    }
    if settings.LDAP_CA_CERT_FILE:
        options[ldap.OPT_X_TLS_CACERTFILE] = settings.LDAP_CA_CERT_FILE
        options[ldap.OPT_X_TLS_NEWCTX] = 0
    return {
        "SERVER_URI": settings.LDAP_SERVER_URI,
        "BIND_DN": settings.LDAP_BIND_DN,
        "BIND_PASSWORD": settings.LDAP_BIND_PASSWORD,
        "START_TLS": settings.LDAP_START_TLS,
        "CONNECTION_OPTIONS": options,
        "USER_SEARCH": LDAPSearch(
            settings.LDAP_USER_SEARCH_BASE, ldap.SCOPE_SUBTREE, settings.LDAP_USER_FILTER
        ),
        "GROUP_SEARCH": LDAPSearch(
            settings.LDAP_GROUP_SEARCH_BASE,
            ldap.SCOPE_SUBTREE,
            settings.LDAP_GROUP_FILTER or group_filter,
        ),
        "GROUP_TYPE": group_type(),
        # Groups and profile are written by directory_user_sync, which saves only what changed.
        "ALWAYS_UPDATE_USER": False,
        "MIRROR_GROUPS": None,
    }


def _profile(attributes: dict[str, list[str]] | None) -> dict[str, str]:
    found = attributes or {}
    return {
        field: found[attribute][0]
        for field, attribute in PROFILE_ATTRIBUTES.items()
        if found.get(attribute)
    }


class DirectoryLDAPBackend(LDAPBackend):
    """django-auth-ldap, with the directory's groups mirrored at every sign-in."""

    @property
    def default_settings(self) -> dict[str, Any]:
        return ldap_backend_settings()

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> AbstractBaseUser | None:
        if not settings.LDAP_SERVER_URI:
            return None
        user: AbstractBaseUser | None = super().authenticate(request, username, password, **kwargs)
        if user is not None and request is not None and hasattr(request, "session"):
            # Signing in keeps the session's data, so the next check counts from now.
            request.session[CHECKED_AT_KEY] = time.time()
        return user

    def authenticate_ldap_user(
        self, ldap_user: _LDAPUser, password: str
    ) -> AbstractBaseUser | None:
        # One transaction: nobody is left signed up without the groups the directory gives them.
        with transaction.atomic():
            user: AbstractBaseUser | None = super().authenticate_ldap_user(ldap_user, password)
            if user is None:
                return None
            return directory_user_sync(
                user=user,
                group_names=ldap_user.group_names,
                profile=_profile(ldap_user.attrs),
                method="ldap",
            )


def ldap_user_refresh(user: AbstractBaseUser) -> bool:
    """Read the user's groups and profile from the directory again.

    False when the directory no longer has the user, or cannot be asked: the caller then ends
    the session rather than keep groups that may be out of date.
    """
    backend = DirectoryLDAPBackend()
    ldap_user = _LDAPUser(backend, username=backend.django_to_ldap_username(user.get_username()))
    try:
        attributes = ldap_user.attrs
        if attributes is None:
            return False
        directory_user_sync(
            user=user,
            group_names=ldap_user.group_names,
            profile=_profile(attributes),
            method="ldap",
        )
    except ldap.LDAPError as error:
        logger.warning("Could not refresh %s from the directory: %s", user.get_username(), error)
        return False
    return True


class LDAPSessionRefreshMiddleware:
    """Re-reads a directory user's groups every LDAP_REFRESH_SECONDS (0: at every request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self._due(request):
            if not ldap_user_refresh(request.user):  # type: ignore[arg-type]
                logout(request)
                return redirect_to_login(request.get_full_path())
            request.session[CHECKED_AT_KEY] = time.time()
        return self.get_response(request)

    @staticmethod
    def _due(request: HttpRequest) -> bool:
        if not request.user.is_authenticated:
            return False
        if request.session.get(BACKEND_SESSION_KEY) != BACKEND_PATH:
            return False
        checked_at = float(request.session.get(CHECKED_AT_KEY, 0))
        refresh_seconds: int = settings.LDAP_REFRESH_SECONDS
        return time.time() - checked_at >= refresh_seconds
