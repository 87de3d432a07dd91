"""Signing in through a real OpenID Connect provider, as a browser does, redirect by redirect."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, override_settings
from pytest_django.live_server_helper import LiveServer

from accounts.directory import SIGNED_IN_EVENT
from accounts.oidc import RENEWAL_NEEDED
from audit.models import AuditEvent
from tests.accounts.conftest import OidcProvider, free_port, records

OIDC_BACKEND = "accounts.oidc.DirectoryOIDCBackend"
MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
REFRESH_MIDDLEWARE = "accounts.oidc.SessionRefreshMiddleware"
PROVIDER_NAME = "Example SSO"
SIGN_IN_LINK = re.compile(
    r'href="(/oidc/authenticate/[^"]*)"[^>]*>\s*Sign in with ' + PROVIDER_NAME
)
FORM_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


@dataclass
class Site:
    url: str
    provider: OidcProvider


@pytest.fixture(scope="module")
def site_url(site_port: int) -> Iterator[str]:
    """The site on the port the provider sends people back to, with SessionRefresh installed.

    The middleware list is read once, when the server starts; it does nothing while no provider
    is configured, which each test then does through `settings`.
    """
    middleware = list(django_settings.MIDDLEWARE)
    middleware.insert(
        middleware.index("config.request_context.RequestContextMiddleware") + 1, REFRESH_MIDDLEWARE
    )
    with override_settings(MIDDLEWARE=middleware):
        server = LiveServer(f"127.0.0.1:{site_port}")
    yield server.url
    server.stop()


@pytest.fixture
def site(site_url: str, oidc_accounts: OidcProvider, settings: Any, transactional_db: None) -> Site:
    settings.OIDC_OP_ISSUER = oidc_accounts.issuer
    settings.OIDC_RP_CLIENT_ID = oidc_accounts.client_id
    settings.OIDC_RP_CLIENT_SECRET = oidc_accounts.client_secret
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    settings.OIDC_PROVIDER_NAME = PROVIDER_NAME
    backends = [name for name in settings.AUTHENTICATION_BACKENDS if name != MODEL_BACKEND]
    settings.AUTHENTICATION_BACKENDS = [*backends, OIDC_BACKEND, MODEL_BACKEND]
    return Site(url=site_url, provider=oidc_accounts)


def submit(browser: httpx.Client, page: httpx.Response, data: dict[str, str]) -> httpx.Response:
    """Fill in and send the page's form, as a person would."""
    action = FORM_ACTION.search(page.text)
    assert action, f"no form on {page.url}: {page.text[:500]}"
    return browser.post(urljoin(str(page.url), html.unescape(action.group(1))), data=data)


def sign_in(site: Site, username: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    """From the site's login page, through the provider's login and consent forms, and back."""
    browser = httpx.Client(follow_redirects=True, timeout=30)
    login_page = browser.get(f"{site.url}/accounts/login/")
    link = SIGN_IN_LINK.search(login_page.text)
    assert link, "the login page offers no sign-on button"
    provider_login = browser.get(site.url + html.unescape(link.group(1)))
    assert str(provider_login.url).startswith(site.provider.issuer)
    page = submit(browser, provider_login, {"login": username, "password": password})
    if "Allow" in page.text:
        page = submit(browser, page, {})
    return browser, page


def group_names(username: str) -> set[str]:
    return set(User.objects.get(username=username).groups.values_list("name", flat=True))


def pass_renewal_time(browser: httpx.Client) -> None:
    """As if OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS had gone by since the sign-in."""
    session = SessionStore(session_key=browser.cookies["sessionid"])
    session["oidc_id_token_expiration"] = 0
    session.save()


def test_signing_in_through_the_provider_creates_the_user_with_their_groups(site: Site) -> None:
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance", "auditors"])

    browser, home = sign_in(site, "carol", "carol-pw-1")

    assert str(home.url) == f"{site.url}/"
    assert '<span class="user-name">carol</span>' in home.text
    carol = User.objects.get(username="carol")
    assert group_names("carol") == {"finance", "auditors"}
    assert not carol.has_usable_password()
    assert carol.email == "carol@example.org"
    assert browser.get(f"{site.url}/audit/").status_code == 200
    [sign_in_record] = records(SIGNED_IN_EVENT)
    assert (sign_in_record["method"], sign_in_record["groups"]) == ("oidc", ["auditors", "finance"])
    assert any(r.get("created") for r in records(AuditEvent.USER_CHANGED))


def test_a_wrong_password_at_the_provider_signs_nobody_in(site: Site) -> None:
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance"])

    _, page = sign_in(site, "carol", "a-guess")

    assert "Wrong user name or password." in page.text
    assert not User.objects.filter(username="carol").exists()


def test_groups_removed_at_the_provider_are_gone_at_the_next_sign_in(site: Site) -> None:
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance", "auditors"])
    sign_in(site, "carol", "carol-pw-1")

    site.provider.set_account("carol", password="carol-pw-1", groups=["finance"])
    browser, _ = sign_in(site, "carol", "carol-pw-1")

    assert group_names("carol") == {"finance"}
    assert browser.get(f"{site.url}/audit/").status_code == 403


def test_groups_removed_at_the_provider_are_gone_after_the_session_renewal(site: Site) -> None:
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance", "auditors"])
    browser, _ = sign_in(site, "carol", "carol-pw-1")
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance"])
    # Until the renewal time the session keeps the groups it signed in with...
    assert browser.get(f"{site.url}/audit/").status_code == 200

    pass_renewal_time(browser)
    # ...then the next page load goes by the provider, silently, and brings them up to date.
    page = browser.get(f"{site.url}/audit/")

    assert page.status_code == 403
    assert any(str(hop.url).startswith(site.provider.issuer) for hop in page.history)
    assert group_names("carol") == {"finance"}
    assert records(AuditEvent.USER_CHANGED)[-1]["groups_removed"] == ["auditors"]
    assert browser.get(f"{site.url}/").status_code == 200


def test_someone_disabled_at_the_provider_is_signed_out_at_the_session_renewal(site: Site) -> None:
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance"])
    browser, _ = sign_in(site, "carol", "carol-pw-1")
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance"], disabled=True)
    pass_renewal_time(browser)

    page = browser.get(f"{site.url}/")

    assert str(page.url) == f"{site.url}/accounts/login/?sso=failed"
    assert "Single sign-on did not complete" in page.text
    assert str(browser.get(f"{site.url}/").url).startswith(f"{site.url}/accounts/login/")


def test_a_script_request_after_the_renewal_time_is_asked_to_reload(site: Site) -> None:
    site.provider.set_account("carol", password="carol-pw-1", groups=["finance"])
    browser, _ = sign_in(site, "carol", "carol-pw-1")
    pass_renewal_time(browser)

    response = browser.get(f"{site.url}/", headers={"Sec-Fetch-Mode": "cors"})

    assert response.status_code == 403
    assert response.json()["detail"] == RENEWAL_NEEDED


def test_a_local_account_is_never_taken_over_by_a_provider_user_of_that_name(site: Site) -> None:
    User.objects.create_user("carol", password="carol-local-pw")
    site.provider.set_account("carol", password="carol-pw-1", groups=["auditors"])

    _, page = sign_in(site, "carol", "carol-pw-1")

    assert str(page.url) == f"{site.url}/accounts/login/?sso=failed"
    assert "Single sign-on did not complete" in page.text
    assert group_names("carol") == set()


@pytest.mark.django_db
def test_without_provider_settings_there_is_no_sign_on_button_and_no_sign_on_pages(
    client: Client,
) -> None:
    assert "Sign in with" not in client.get("/accounts/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=c&state=s").status_code == 404


@pytest.mark.django_db
def test_a_provider_that_cannot_be_reached_leaves_local_logins_working(
    client: Client, settings: Any
) -> None:
    settings.OIDC_OP_ISSUER = f"http://127.0.0.1:{free_port()}"
    settings.OIDC_RP_CLIENT_ID = "assistant"
    settings.OIDC_RP_CLIENT_SECRET = "secret"
    settings.AUTHENTICATION_BACKENDS = [OIDC_BACKEND, MODEL_BACKEND]
    User.objects.create_user("frank", password="frank-local-pw")

    refused = client.get("/oidc/authenticate/")
    assert refused.status_code == 503
    assert "cannot be reached" in refused.content.decode()

    response = client.post(
        "/accounts/login/", {"username": "frank", "password": "frank-local-pw"}, follow=True
    )
    assert response.context["user"].get_username() == "frank"
