"""What the login page offers besides the password form."""

from __future__ import annotations

from django import template
from django.conf import settings

from accounts.oidc import oidc_configured

register = template.Library()


@register.simple_tag
def oidc_provider_name() -> str:
    """The name on the "Sign in with ..." button, or "" when no provider is configured."""
    return str(settings.OIDC_PROVIDER_NAME) if oidc_configured() else ""
