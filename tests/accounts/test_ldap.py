"""Signing in against a real OpenLDAP server with the ordinary login form."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.test.client import Client as DjangoClient

from accounts.directory import SIGNED_IN_EVENT, SIGNED_OUT_EVENT
from accounts.ldap import CHECKED_AT_KEY, ldap_backend_settings
from audit.models import AuditEvent
from audit.verify import ledger_verify
from ingestion.services import document_upload_bytes
from tests.accounts.api_tokens import api_token
from tests.accounts.conftest import LdapDirectory, free_port, records

pytestmark = pytest.mark.django_db

LDAP_BACKEND = "accounts.ldap.DirectoryLDAPBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
REFRESH_MIDDLEWARE = "accounts.ldap.LDAPSessionRefreshMiddleware"


@pytest.fixture
def ldap_site(settings: Any, directory: LdapDirectory) -> LdapDirectory:
    """The site configured as bin/setup's README example does, against the test directory."""
    settings.LDAP_SERVER_URI = directory.uri
    settings.LDAP_BIND_DN = directory.reader_dn
    settings.LDAP_BIND_PASSWORD = directory.reader_password
    settings.LDAP_USER_SEARCH_BASE = f"ou=people,{directory.base_dn}"
    settings.LDAP_USER_FILTER = "(uid=%(user)s)"
    settings.LDAP_GROUP_SEARCH_BASE = f"ou=groups,{directory.base_dn}"
    settings.LDAP_GROUP_TYPE = "groupOfNames"
    backends = [name for name in settings.AUTHENTICATION_BACKENDS if name != MODEL_BACKEND]
    settings.AUTHENTICATION_BACKENDS = [*backends, LDAP_BACKEND, MODEL_BACKEND]
    middleware = list(settings.MIDDLEWARE)
    middleware.insert(
        middleware.index("config.request_context.RequestContextMiddleware") + 1, REFRESH_MIDDLEWARE
    )
    settings.MIDDLEWARE = middleware
    return directory


def log_in(client: DjangoClient, username: str, password: str) -> Any:
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, follow=True
    )


def group_names(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


def pass_refresh_interval(client: DjangoClient) -> None:
    """As if LDAP_REFRESH_SECONDS had gone by since the groups were last read."""
    session = client.session
    session[CHECKED_AT_KEY] = 0
    session.save()


def test_a_directory_user_signs_in_with_the_login_form_and_gets_their_groups(
    client: Client, ldap_site: LdapDirectory
) -> None:
    response = log_in(client, "alice", "alice-pw-1")

    assert response.status_code == 200
    assert response.context["user"].get_username() == "alice"
    alice = User.objects.get(username="alice")
    assert group_names("alice") == {"finance"}
    assert not alice.has_usable_password()
    assert (alice.first_name, alice.last_name, alice.email) == (
        "Alice",
        "Archer",
        "alice@example.org",
    )
    assert not alice.is_superuser


def test_a_wrong_directory_password_is_refused(client: Client, ldap_site: LdapDirectory) -> None:
    response = log_in(client, "alice", "not-her-password")

    assert "did not match" in response.content.decode()
    assert not response.context["user"].is_authenticated
    assert not User.objects.filter(username="alice").exists()


def test_someone_removed_from_a_group_loses_it_at_their_next_sign_in(
    client: Client, ldap_site: LdapDirectory
) -> None:
    log_in(client, "carol", "carol-pw-1")
    assert group_names("carol") == {"finance", "auditors"}
    assert client.get("/audit/").status_code == 200
    client.post("/accounts/logout/")

    ldap_site.remove_member("auditors", "carol")
    log_in(client, "carol", "carol-pw-1")

    assert group_names("carol") == {"finance"}
    assert client.get("/audit/").status_code == 403


def test_a_signed_in_session_follows_the_directory_after_the_refresh_interval(
    client: Client, ldap_site: LdapDirectory
) -> None:
    log_in(client, "carol", "carol-pw-1")
    ldap_site.remove_member("auditors", "carol")
    # Within the interval the session keeps the groups it signed in with...
    assert client.get("/audit/").status_code == 200

    pass_refresh_interval(client)

    # ...and the first request after it reads them again.
    assert client.get("/audit/").status_code == 403
    assert group_names("carol") == {"finance"}
    assert client.get("/").status_code == 200


def test_someone_deleted_from_the_directory_is_signed_out_at_the_next_refresh(
    client: Client, ldap_site: LdapDirectory
) -> None:
    log_in(client, "carol", "carol-pw-1")
    ldap_site.delete_user("carol")
    pass_refresh_interval(client)

    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert client.get("/").status_code == 302
    assert [details["username"] for details in records(SIGNED_OUT_EVENT)] == ["carol"]


def test_signing_in_and_every_group_change_are_in_the_audit_ledger(
    client: Client, ldap_site: LdapDirectory
) -> None:
    log_in(client, "alice", "alice-pw-1")
    client.post("/accounts/logout/")
    ldap_site.remove_member("finance", "alice")
    log_in(client, "alice", "alice-pw-1")

    user_changes = records(AuditEvent.USER_CHANGED)
    assert user_changes[0]["created"] is True
    assert user_changes[0]["username"] == "alice"
    assert any(change.get("groups_added") == ["finance"] for change in user_changes)
    assert user_changes[-1]["groups_removed"] == ["finance"]
    assert any(
        change.get("name") == "finance" and change.get("created")
        for change in records(AuditEvent.GROUP_CHANGED)
    )
    sign_ins = records(SIGNED_IN_EVENT)
    assert [(s["username"], s["method"], s["groups"]) for s in sign_ins] == [
        ("alice", "ldap", ["finance"]),
        ("alice", "ldap", []),
    ]
    assert [details["username"] for details in records(SIGNED_OUT_EVENT)] == ["alice"]
    assert ledger_verify().intact


def test_posix_groups_are_read_by_member_uid(
    client: Client, settings: Any, ldap_site: LdapDirectory
) -> None:
    settings.LDAP_GROUP_TYPE = "posixGroup"
    settings.LDAP_GROUP_SEARCH_BASE = f"ou=posix,{ldap_site.base_dn}"

    log_in(client, "alice", "alice-pw-1")

    assert group_names("alice") == {"finance", "engineering"}


def test_nested_groups_give_the_groups_they_are_members_of(
    client: Client, settings: Any, ldap_site: LdapDirectory
) -> None:
    settings.LDAP_GROUP_TYPE = "nestedGroupOfNames"

    log_in(client, "alice", "alice-pw-1")

    # "finance" is itself a member of "staff".
    assert group_names("alice") == {"finance", "staff"}


def test_no_directory_group_makes_a_superuser_unless_one_is_configured(
    client: Client, settings: Any, ldap_site: LdapDirectory
) -> None:
    log_in(client, "erin", "erin-pw-1")
    assert not User.objects.get(username="erin").is_superuser
    assert client.get("/admin/").status_code == 302
    client.post("/accounts/logout/")

    settings.SUPERUSERS_GROUP = "it-admins"
    log_in(client, "erin", "erin-pw-1")
    assert User.objects.get(username="erin").is_superuser
    assert client.get("/admin/").status_code == 200
    client.post("/accounts/logout/")

    ldap_site.remove_member("it-admins", "erin")
    log_in(client, "erin", "erin-pw-1")
    assert not User.objects.get(username="erin").is_superuser
    assert client.get("/admin/").status_code == 302


def test_local_accounts_still_sign_in_beside_the_directory(
    client: Client, ldap_site: LdapDirectory
) -> None:
    User.objects.create_user("frank", password="frank-local-pw")

    response = log_in(client, "frank", "frank-local-pw")

    assert response.context["user"].get_username() == "frank"
    assert records(SIGNED_IN_EVENT)[-1]["method"] == "local"


def test_an_unreachable_directory_refuses_directory_logins_but_not_local_ones(
    client: Client, settings: Any, ldap_site: LdapDirectory
) -> None:
    settings.LDAP_SERVER_URI = f"ldap://127.0.0.1:{free_port()}"
    User.objects.create_user("frank", password="frank-local-pw")

    refused = log_in(client, "alice", "alice-pw-1")
    assert "did not match" in refused.content.decode()

    accepted = log_in(client, "frank", "frank-local-pw")
    assert accepted.context["user"].get_username() == "frank"


def test_start_tls_signs_in_when_the_directory_certificate_is_trusted(
    client: Client, settings: Any, ldap_site: LdapDirectory
) -> None:
    settings.LDAP_START_TLS = True
    settings.LDAP_CA_CERT_FILE = str(ldap_site.ca_file)

    response = log_in(client, "alice", "alice-pw-1")

    assert response.context["user"].get_username() == "alice"


def test_start_tls_refuses_a_directory_whose_certificate_is_not_trusted(
    client: Client, settings: Any, ldap_site: LdapDirectory
) -> None:
    settings.LDAP_START_TLS = True

    response = log_in(client, "alice", "alice-pw-1")

    assert "did not match" in response.content.decode()
    assert not User.objects.filter(username="alice").exists()


def test_without_ldap_settings_directory_passwords_do_not_sign_anyone_in(client: Client) -> None:
    response = log_in(client, "alice", "alice-pw-1")

    assert "did not match" in response.content.decode()


def test_an_unknown_group_type_is_refused_with_the_known_ones_named(
    settings: Any, ldap_site: LdapDirectory
) -> None:
    settings.LDAP_GROUP_TYPE = "groupsOfFriends"

    with pytest.raises(ImproperlyConfigured, match="posixGroup"):
        ldap_backend_settings()


def test_an_api_token_follows_the_directory_after_the_refresh_interval(
    client: Client, ldap_site: LdapDirectory, settings: Any
) -> None:
    log_in(client, "carol", "carol-pw-1")
    carol = User.objects.get(username="carol")
    api = Client(headers={"Authorization": f"Bearer {api_token(carol, ['read'])}"})
    finance = carol.groups.get(name="finance")
    document_upload_bytes(
        name="budget.md", data=b"# Budget\n\nThe travel budget is frozen.\n", groups=[finance]
    )
    assert api.get("/api/documents/").json()["count"] == 1

    ldap_site.remove_member("finance", "carol")
    # Within the interval the token keeps the groups of the last reading...
    assert api.get("/api/documents/").json()["count"] == 1
    settings.LDAP_REFRESH_SECONDS = 0

    # ...and the first request after it reads them again.
    assert api.get("/api/documents/").json()["count"] == 0
    assert group_names("carol") == {"auditors"}


def test_an_api_token_of_someone_deleted_from_the_directory_stops_working(
    ldap_site: LdapDirectory, settings: Any, client: Client
) -> None:
    log_in(client, "carol", "carol-pw-1")
    carol = User.objects.get(username="carol")
    api = Client(headers={"Authorization": f"Bearer {api_token(carol, ['read'])}"})
    ldap_site.delete_user("carol")
    settings.LDAP_REFRESH_SECONDS = 0

    refused = api.get("/api/documents/")

    assert refused.status_code == 401
    assert "directory could not confirm" in refused.json()["detail"]
