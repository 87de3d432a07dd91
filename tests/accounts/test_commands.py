"""`manage.py apitoken`: create (secret printed once), list, revoke."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import ApiToken, TokenStatus
from accounts.tokens import TokenRejected, token_verify

pytestmark = pytest.mark.django_db


def apitoken(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("apitoken", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="x" * 12)


def test_create_prints_a_working_secret_alone_on_stdout(alice: User) -> None:
    out, err = apitoken(
        "create", "alice", "--name", "nightly", "--scopes", "read,ask", "--days", "7"
    )

    secret = out.strip()
    token = token_verify(secret)
    assert token.user == alice
    assert token.scopes == ["read", "ask"]
    assert "shown only once" in err
    assert "nightly" in err


def test_list_shows_tokens_without_their_secrets(alice: User) -> None:
    secret = apitoken("create", "alice", "--name", "nightly", "--scopes", "read")[0].strip()
    token = ApiToken.objects.get()

    out, _ = apitoken("list", "alice")

    assert "nightly" in out
    assert token.prefix in out
    assert "active" in out
    assert secret not in out


def test_revoke_stops_the_token_at_once(alice: User) -> None:
    secret = apitoken("create", "alice", "--name", "nightly", "--scopes", "read")[0].strip()
    token = ApiToken.objects.get()

    out, _ = apitoken("revoke", str(token.id))

    assert "Revoked" in out
    assert ApiToken.objects.get().status == TokenStatus.REVOKED
    with pytest.raises(TokenRejected):
        token_verify(secret)
    assert "already revoked" in apitoken("revoke", str(token.id))[0]


def test_bad_input_is_refused_with_a_reason(alice: User) -> None:
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        apitoken("create", "nobody", "--name", "x", "--scopes", "read")
    with pytest.raises(CommandError, match="Unknown scope: write"):
        apitoken("create", "alice", "--name", "x", "--scopes", "write")
    with pytest.raises(CommandError, match="No token with id 999"):
        apitoken("revoke", "999")
    assert not ApiToken.objects.exists()
