"""Security plumbing the settings name by path: the content security policy.

The settings themselves (headers, cookies, TLS, limits) are in config/settings.py under
"Security"; login throttling is accounts/login_throttle.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# ---- Content security policy (django-csp) ------------------------------------------------------


def sign_on_origin() -> str:
    """The origin of the OpenID Connect provider's login page, when one is configured."""
    endpoint = str(getattr(settings, "OIDC_OP_AUTHORIZATION_ENDPOINT", "") or "")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}"


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware; forms may also lead to the sign-on provider when there is one.

    Chromium applies form-action to the redirects that follow a form post, so a login or
    logout form that ends at the provider needs its origin listed. It is read at request time
    because the sign-on settings may be defined after the policy.
    """

    def get_policy_parts(
        self,
        request: HttpRequest,
        response: HttpResponseBase,
        report_only: bool = False,
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        origin = sign_on_origin()
        if origin and not report_only:
            update = dict(parts.update or {})
            update["form-action"] = [*update.get("form-action", []), origin]
            parts.update = update
        return parts
