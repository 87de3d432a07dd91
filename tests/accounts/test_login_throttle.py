"""Login throttling through the real login page: lockouts, their record, their end."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from audit.models import AuditRecord
from audit.verify import ledger_verify
from tests.accounts.conftest import LdapDirectory, directory, slapd
from tests.accounts.test_ldap import ldap_site

__all__ = ["directory", "ldap_site", "slapd"]  # the real OpenLDAP server of the sign-on tests

LOCKOUT_MESSAGE = "Too many failed log-ins to this account from your address"


PASSWORD = "erins-long-password"


@pytest.fixture
def erin(db: None) -> User:
    return User.objects.create_user("erin", password=PASSWORD)


def log_in(client: Client, username: str, password: str, address: str) -> tuple[int, str]:
    response = client.post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )
    return response.status_code, response.content.decode()


def fail_until_locked(client: Client, username: str, address: str) -> tuple[int, str]:
    for _ in range(settings.LOGIN_FAILURES_LIMIT - 1):
        status, page = log_in(client, username, "not-the-password", address)
        assert status == 200
        assert "did not match" in page
    return log_in(client, username, "not-the-password", address)


def test_too_many_wrong_passwords_lock_the_account_from_that_address(erin: User) -> None:
    client = Client()
    status, page = fail_until_locked(client, "erin", "10.0.0.5")
    assert status == 429
    assert LOCKOUT_MESSAGE in page
    assert f"refused for {settings.LOGIN_LOCKOUT_MINUTES} minutes" in page

    status, page = log_in(client, "erin", PASSWORD, "10.0.0.5")
    assert status == 429
    assert LOCKOUT_MESSAGE in page
    assert client.get("/").status_code == 302  # still not logged in

    # Someone else, from another address, is not shut out by the attacker.
    assert log_in(Client(), "erin", PASSWORD, "10.0.0.6")[0] == 302


def test_a_lockout_is_recorded_once_in_the_audit_log(erin: User) -> None:
    client = Client()
    fail_until_locked(client, "erin", "10.0.0.11")
    for password in ("not-the-password", PASSWORD):
        assert log_in(client, "erin", password, "10.0.0.11")[0] == 429

    (record,) = AuditRecord.objects.filter(event="user.locked_out")
    details = json.loads(record.details)
    assert details["username"] == "erin"
    assert details["address"] == "10.0.0.11"
    assert details["summary"] == (
        f"Log-ins as erin from 10.0.0.11 refused for {settings.LOGIN_LOCKOUT_MINUTES} minutes "
        f"after {settings.LOGIN_FAILURES_LIMIT} failed attempts"
    )
    assert ledger_verify().intact


def test_the_lockout_ends_after_the_wait(erin: User) -> None:
    fail_until_locked(Client(), "erin", "10.0.0.7")
    waited = timezone.now() - timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES + 1)
    AccessAttempt.objects.filter(username="erin").update(attempt_time=waited)
    assert log_in(Client(), "erin", PASSWORD, "10.0.0.7")[0] == 302


def test_other_spellings_of_the_name_count_against_the_same_account(erin: User) -> None:
    client = Client()
    spellings = ["Erin", "ERIN", " erin", "eRiN", "erin "]
    for spelling in spellings[: settings.LOGIN_FAILURES_LIMIT - 1]:
        assert log_in(client, spelling, "not-the-password", "10.0.0.8")[0] == 200
    status, page = log_in(client, "erin", "not-the-password", "10.0.0.8")
    assert status == 429
    assert LOCKOUT_MESSAGE in page


def test_a_successful_login_starts_the_count_again(erin: User) -> None:
    for _ in range(settings.LOGIN_FAILURES_LIMIT - 1):
        assert log_in(Client(), "erin", "not-the-password", "10.0.0.9")[0] == 200
    assert log_in(Client(), "erin", PASSWORD, "10.0.0.9")[0] == 302
    for _ in range(settings.LOGIN_FAILURES_LIMIT - 1):
        assert log_in(Client(), "erin", "not-the-password", "10.0.0.9")[0] == 200
    assert log_in(Client(), "erin", PASSWORD, "10.0.0.9")[0] == 302


def test_the_admin_login_page_is_throttled_too(erin: User) -> None:
    erin.is_superuser = erin.is_staff = True
    erin.save()
    client = Client()
    for _ in range(settings.LOGIN_FAILURES_LIMIT):
        response = client.post(
            "/admin/login/",
            {"username": "erin", "password": "not-the-password"},
            REMOTE_ADDR="10.0.0.10",
        )
    assert response.status_code == 429
    assert LOCKOUT_MESSAGE in response.content.decode()


@pytest.mark.django_db
def test_directory_logins_are_throttled_like_local_ones(ldap_site: LdapDirectory) -> None:
    client = Client()
    status, page = fail_until_locked(client, "alice", "10.0.0.12")
    assert status == 429
    assert LOCKOUT_MESSAGE in page
    status, page = log_in(client, "alice", "alice-pw-1", "10.0.0.12")
    assert status == 429
    assert not User.objects.filter(username="alice", last_login__isnull=False).exists()

    assert log_in(Client(), "alice", "alice-pw-1", "10.0.0.13")[0] == 302
