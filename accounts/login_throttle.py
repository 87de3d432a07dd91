"""Login throttling (django-axes) and the client address it counts failures against.

The settings name these by path (AXES_*_CALLABLE, AUTHENTICATION_BACKENDS), so the settings
never import django-axes. A lockout is written to the audit ledger when it begins.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.ledger import ledger_append
from audit.models import AuditEvent

LOCKED_OUT_STATUS = 429
# The login form's field, and the keyword every backend's authenticate() receives.
USERNAME_FIELD = "username"
LOCKED_OUT_EVENT = AuditEvent.USER_LOCKED_OUT


class LoginThrottleBackend(AxesStandaloneBackend):
    """Refuses a locked-out account and address before any backend looks at the password.

    It comes first in AUTHENTICATION_BACKENDS, so local, LDAP and OIDC logins are all refused
    alike. A login made in code without a request (the test client, a shell) has no remote
    client to throttle, and django-axes would refuse it outright; it is let through.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        super().authenticate(request, username, password, **kwargs)
        return None


def login_username(request: HttpRequest, credentials: dict[str, Any] | None) -> str | None:
    """The user name a failure counts against, case-folded.

    Directories compare names without case, so "Alice" and "alice" must share one counter or
    an attacker would get a fresh set of attempts with every spelling.
    """
    source: Any = credentials if credentials else getattr(request, "data", request.POST)
    username = source.get(USERNAME_FIELD)
    return username.strip().casefold() if isinstance(username, str) else None


def client_address(request: HttpRequest) -> str:
    """The address of whoever is logging in.

    Behind the TLS proxy REMOTE_ADDR is the proxy itself. The proxy puts the address it saw
    last in X-Forwarded-For (Caddy replaces the header, nginx appends to it), so the right-most
    entry is the one a client cannot forge; entries to its left can say anything.
    """
    remote = str(request.META.get("REMOTE_ADDR", ""))
    if not settings.SECURE_BEHIND_TLS:
        return remote
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    return hops[-1] if hops else remote


def lockout_response(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """The login page again, saying why the login was refused and for how long.

    django-axes calls this as (request, response, credentials) from its synchronous middleware
    and as (request, credentials) from its asynchronous one; neither argument is needed here.
    """
    username = login_username(request, None) or ""
    form = AuthenticationForm(request, initial={"username": username})
    context = {
        "form": form,
        "locked_out": True,
        "lockout_minutes": settings.LOGIN_LOCKOUT_MINUTES,
        "next": request.POST.get("next", ""),
    }
    return render(request, "registration/login.html", context, status=LOCKED_OUT_STATUS)


def _lockout_recorded(
    sender: object, request: HttpRequest, username: str | None, ip_address: str, **kwargs: Any
) -> None:
    """One audit record when a lockout begins.

    Every try while locked out counts as another failure and signals again; only the try that
    reaches the limit starts a lockout, so the ledger is not filled by someone hammering.
    """
    failures = getattr(request, "axes_failures_since_start", None)
    if failures != settings.LOGIN_FAILURES_LIMIT:
        return
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    with transaction.atomic():
        ledger_append(
            event=LOCKED_OUT_EVENT,
            actor=None,
            details={
                "username": username or "",
                "address": ip_address,
                "failures": failures,
                "lockout_minutes": minutes,
                "summary": f"Log-ins as {username or '(no name)'} from {ip_address} refused "
                f"for {minutes} minutes after {failures} failed attempts",
            },
        )


# Connected on import: django-axes signals a lockout only from an authenticate() call, which
# has imported this module for LoginThrottleBackend by then.
user_locked_out.connect(_lockout_recorded, dispatch_uid="audit-locked-out")
