"""Login throttling (django-axes) and the client address it counts failures against.

The settings name these by path (AXES_*_CALLABLE, AUTHENTICATION_BACKENDS), so the settings
never import django-axes. A lockout is written to the audit ledger when it begins.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
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
    """The address of whoever is making the request: the one rule for login throttling, token
    use and anything else that counts or records clients.

    REMOTE_ADDR is the socket peer (`manage.py serve` starts the server with its own forwarding
    header handling off). Only when that peer is one of TRUSTED_PROXIES is X-Forwarded-For
    read, from the right: each trusted proxy appends (nginx) or writes (Caddy) the address it
    saw, so the entries are walked leftwards past trusted proxies, and the first address that
    is not one is the client. Entries further left are whatever the client sent and could say
    anything; believing them from an untrusted peer would give every attempt a new address.
    """
    peer = str(request.META.get("REMOTE_ADDR", ""))
    nearest = _address(peer)
    if nearest is None:
        return peer
    if _trusted(nearest):
        forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
        for entry in reversed([entry.strip() for entry in forwarded.split(",") if entry.strip()]):
            hop = _address(entry)
            if hop is None:
                # A trusted proxy wrote something that is not an address ("unknown", a port
                # appended): the client cannot be told, so that proxy stands in for it.
                break
            nearest = hop
            if not _trusted(hop):
                break
    return str(nearest)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        address = ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d; TRUSTED_PROXIES names it a.b.c.d.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPv4Address | IPv6Address) -> bool:
    return any(address in network for network in settings.TRUSTED_PROXIES)


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
