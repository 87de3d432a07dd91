"""Personal API tokens for tests that call the APIs as a script would."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import User

from accounts.models import TokenScope
from accounts.tokens import token_create

ALL_SCOPES = tuple(TokenScope.values)


def api_token(
    user: User, scopes: Iterable[str] = ALL_SCOPES, *, name: str = "test", days: int | None = None
) -> str:
    """A new token of `user` with `scopes`; the secret, as the client sends it."""
    return token_create(user=user, name=name, scopes=scopes, days=days).secret
