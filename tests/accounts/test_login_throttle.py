"""Login throttling through the real login page: lockouts, their record, their end."""

from __future__ import annotations

import json
from datetime import timedelta
from ipaddress import ip_network

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, RequestFactory, override_settings
from django.utils import timezone

from accounts.login_throttle import client_address
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


# ---- The client address: X-Forwarded-For believed from TRUSTED_PROXIES only -------------------


def address_of(peer: str, forwarded_for: str | None, *trusted: str) -> str:
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR=peer)
    if forwarded_for is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded_for
    with override_settings(TRUSTED_PROXIES=[ip_network(network) for network in trusted]):
        return client_address(request)


def test_with_no_trusted_proxies_the_client_is_the_peer_even_on_loopback() -> None:
    assert address_of("127.0.0.1", "198.51.100.7") == "127.0.0.1"
    assert address_of("10.0.0.2", "198.51.100.7, 10.0.0.1") == "10.0.0.2"


def test_forwarding_headers_from_an_untrusted_peer_are_ignored() -> None:
    assert address_of("192.0.2.9", "198.51.100.7", "10.0.0.1") == "192.0.2.9"


def test_a_trusted_proxy_names_the_client_in_the_right_most_entry() -> None:
    assert address_of("10.0.0.1", "203.0.113.5", "10.0.0.1") == "203.0.113.5"
    # Entries left of the proxy's own are whatever the client sent.
    assert address_of("10.0.0.1", "198.51.100.1, 203.0.113.5", "10.0.0.1") == "203.0.113.5"


def test_a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_address() -> None:
    chain = "198.51.100.1, 203.0.113.5, 10.0.0.3, 10.0.0.2"
    assert address_of("10.0.0.1", chain, "10.0.0.1", "10.0.0.2", "10.0.0.3") == "203.0.113.5"
    # A proxy left out of TRUSTED_PROXIES is where the walk stops: it is the client.
    assert address_of("10.0.0.1", chain, "10.0.0.1", "10.0.0.2") == "10.0.0.3"


def test_trusted_proxies_may_be_networks() -> None:
    chain = "198.51.100.1, 203.0.113.5, 10.244.7.9"
    assert address_of("10.244.1.4", chain, "10.244.0.0/16") == "203.0.113.5"
    assert address_of("10.245.1.4", chain, "10.244.0.0/16") == "10.245.1.4"
    assert address_of("fd00::5", "2001:db8::7, fd00::9", "fd00::/8") == "2001:db8::7"


def test_a_trusted_peer_without_the_header_is_itself_the_client() -> None:
    assert address_of("10.0.0.1", None, "10.0.0.1") == "10.0.0.1"
    assert address_of("10.0.0.1", "", "10.0.0.1") == "10.0.0.1"


def test_a_chain_of_only_trusted_proxies_ends_at_the_left_most() -> None:
    assert address_of("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.0/8") == "10.0.0.3"


def test_an_entry_that_is_not_an_address_leaves_the_proxy_that_wrote_it_as_the_client() -> None:
    assert address_of("10.0.0.1", "203.0.113.5, unknown", "10.0.0.1") == "10.0.0.1"
    assert address_of("10.0.0.1", "203.0.113.5:4431", "10.0.0.1") == "10.0.0.1"


def test_an_ipv4_peer_on_a_dual_stack_socket_matches_its_ipv4_network() -> None:
    assert address_of("::ffff:10.0.0.1", "203.0.113.5", "10.0.0.1") == "203.0.113.5"
    assert address_of("::ffff:192.0.2.9", "203.0.113.5", "10.0.0.1") == "192.0.2.9"
