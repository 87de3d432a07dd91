"""Personal API tokens: issued once, kept as a hash, scoped, expiring, revocable, audited."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from accounts.models import ApiToken, TokenStatus
from accounts.tokens import TokenInputError, TokenRejected, token_create, token_revoke, token_verify
from audit.models import AuditEvent, AuditRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="x" * 12)


def test_the_secret_is_returned_once_and_only_its_hash_is_stored(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read", "ask"])

    row = ApiToken.objects.values().get(id=issued.token.id)
    assert issued.secret.startswith(f"kat_{row['prefix']}_")
    assert row["secret_hash"] == hashlib.sha256(issued.secret.encode()).hexdigest()
    secret_part = issued.secret.split("_", 2)[2]
    assert all(secret_part not in str(value) for value in row.values())
    assert len(secret_part) >= 43  # 256 bits in URL-safe base64


def test_a_token_signs_its_user_in_with_its_scopes(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["ask,read"])

    token = token_verify(issued.secret)

    assert token.user == alice
    assert token.scopes == ["read", "ask"]
    assert token.has_scope("ask")
    assert not token.has_scope("ingest")


def test_a_wrong_secret_with_a_real_prefix_is_refused(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read"])
    forged = issued.secret[:-4] + ("AAAA" if not issued.secret.endswith("AAAA") else "BBBB")

    with pytest.raises(TokenRejected, match="Invalid API token"):
        token_verify(forged)
    with pytest.raises(TokenRejected, match="Invalid API token"):
        token_verify("not-a-token")


def test_revocation_takes_effect_at_once(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read"])
    token_verify(issued.secret)

    assert token_revoke(token=issued.token, actor=alice)

    with pytest.raises(TokenRejected, match="revoked"):
        token_verify(issued.secret)
    assert issued.token.status == TokenStatus.REVOKED
    assert not token_revoke(token=issued.token, actor=alice)


def test_an_expired_token_is_refused(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read"], days=1)
    ApiToken.objects.filter(id=issued.token.id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    with pytest.raises(TokenRejected, match="expired"):
        token_verify(issued.secret)


def test_tokens_expire_after_the_configured_default(alice: User, settings: object) -> None:
    settings.API_TOKEN_DEFAULT_DAYS = 30  # type: ignore[attr-defined]

    token = token_create(user=alice, name="laptop", scopes=["read"]).token

    assert token.expires_at is not None
    assert token.expires_at - token.created_at == timedelta(days=30)


def test_a_token_that_never_expires_needs_the_setting(alice: User, settings: object) -> None:
    with pytest.raises(TokenInputError, match="never expire are not allowed"):
        token_create(user=alice, name="forever", scopes=["read"], days=0)

    settings.API_TOKEN_ALLOW_NO_EXPIRY = True  # type: ignore[attr-defined]
    token = token_create(user=alice, name="forever", scopes=["read"], days=0).token
    assert token.expires_at is None


def test_a_lifetime_beyond_the_maximum_is_refused(alice: User, settings: object) -> None:
    settings.API_TOKEN_MAX_DAYS = 10  # type: ignore[attr-defined]

    with pytest.raises(TokenInputError, match="at most 10 days"):
        token_create(user=alice, name="long", scopes=["read"], days=11)


def test_unknown_or_missing_scopes_and_names_are_refused(alice: User) -> None:
    with pytest.raises(TokenInputError, match="Unknown scope: admin"):
        token_create(user=alice, name="x", scopes=["read,admin"])
    with pytest.raises(TokenInputError, match="at least one scope"):
        token_create(user=alice, name="x", scopes=[""])
    with pytest.raises(TokenInputError, match="name"):
        token_create(user=alice, name="  ", scopes=["read"])


def test_a_disabled_account_cannot_use_its_tokens(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read"])
    User.objects.filter(id=alice.id).update(is_active=False)

    with pytest.raises(TokenRejected, match="disabled"):
        token_verify(issued.secret)


def test_last_use_is_written_at_most_once_a_minute(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read"])
    assert issued.token.last_used_at is None

    token_verify(issued.secret, ip="10.0.0.7")
    first = ApiToken.objects.get(id=issued.token.id)
    assert first.last_used_at is not None
    assert first.last_used_ip == "10.0.0.7"

    token_verify(issued.secret, ip="10.0.0.8")
    assert ApiToken.objects.get(id=issued.token.id).last_used_at == first.last_used_at

    earlier = timezone.now() - timedelta(minutes=2)
    ApiToken.objects.filter(id=issued.token.id).update(last_used_at=earlier)
    token_verify(issued.secret, ip="10.0.0.8")
    later = ApiToken.objects.get(id=issued.token.id)
    assert later.last_used_at is not None
    assert later.last_used_at > earlier
    assert later.last_used_ip == "10.0.0.8"


def test_creation_and_revocation_are_in_the_audit_ledger_without_the_secret(alice: User) -> None:
    issued = token_create(user=alice, name="laptop", scopes=["read"])
    token_revoke(token=issued.token, actor=alice)

    records = list(
        AuditRecord.objects.filter(
            event__in=[AuditEvent.TOKEN_CREATED, AuditEvent.TOKEN_REVOKED]
        ).order_by("sequence")
    )
    assert [record.event for record in records] == ["token.created", "token.revoked"]
    assert all(record.actor_id == alice.id for record in records)
    for record in records:
        assert issued.token.prefix in record.details
        assert issued.secret not in record.details
        assert issued.token.secret_hash not in record.details
