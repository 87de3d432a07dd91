"""The API tokens page and the admin: create (secret shown once), list, revoke."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiToken, TokenStatus
from accounts.tokens import TokenRejected, token_create, token_verify

pytestmark = pytest.mark.django_db

PAGE = "/accounts/tokens/"
SECRET = re.compile(r"data-token-secret>(kat_[0-9a-f]+_[A-Za-z0-9_-]+)</textarea>")


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password="x" * 12)


@pytest.fixture
def alice_page(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def create(client: Client, **fields: object) -> str:
    data = {"name": "laptop", "scopes": ["read", "ask"], "days": "30", **fields}
    return client.post(PAGE, data).content.decode()


def test_a_new_token_is_shown_once_and_works(alice_page: Client, alice: User) -> None:
    page = create(alice_page)

    match = SECRET.search(page)
    assert match is not None
    assert "shown only this once" in page
    assert token_verify(match.group(1)).user == alice
    again = alice_page.get(PAGE)
    assert match.group(1) not in again.content.decode()
    assert "no-store" in again["Cache-Control"]


def test_the_list_shows_each_tokens_facts(alice_page: Client, alice: User) -> None:
    create(alice_page, name="nightly upload", scopes=["read"])
    token = ApiToken.objects.get()

    page = alice_page.get(PAGE).content.decode()

    assert "nightly upload" in page
    assert f"kat_{token.prefix}_…" in page
    assert "Read (search, conversations, documents)" not in page.split("<tbody>")[1]
    row = page.split(f'data-token-id="{token.id}"')[1].split("</tr>")[0]
    assert ">read<" in row
    assert "Active" in row
    assert "never" in row  # not used yet


def test_revoking_stops_the_token_and_shows_it_revoked(alice_page: Client, alice: User) -> None:
    secret = SECRET.search(create(alice_page))
    assert secret is not None
    token = ApiToken.objects.get()

    response = alice_page.post(f"/accounts/tokens/{token.id}/revoke/", follow=True)

    assert "It stops working at once" in response.content.decode()
    assert ApiToken.objects.get().status == TokenStatus.REVOKED
    with pytest.raises(TokenRejected):
        token_verify(secret.group(1))
    row = response.content.decode().split(f'data-token-id="{token.id}"')[1].split("</tr>")[0]
    assert "Revoked" in row
    assert "Revoke<" not in row


def test_nobody_sees_or_revokes_another_persons_token(
    alice_page: Client, django_user_model: type[User]
) -> None:
    bob = django_user_model.objects.create_user("bob", password="x" * 12)
    bobs = token_create(user=bob, name="bob's script", scopes=["read"]).token

    assert "bob&#x27;s script" not in alice_page.get(PAGE).content.decode()
    assert alice_page.post(f"/accounts/tokens/{bobs.id}/revoke/").status_code == 404
    assert ApiToken.objects.get(id=bobs.id).status == TokenStatus.ACTIVE


def test_bad_input_is_explained_and_nothing_is_created(alice_page: Client) -> None:
    response = alice_page.post(PAGE, {"name": "", "days": "30"})

    page = response.content.decode()
    assert response.status_code == 400
    assert "Choose at least one scope." in page
    assert "This field is required." in page
    assert alice_page.post(PAGE, {"name": "x", "scopes": ["read"], "days": "0"}).status_code == 400
    assert not ApiToken.objects.exists()


def test_the_page_needs_a_sign_in_and_runs_no_inline_script(alice_page: Client) -> None:
    response = Client().get(PAGE)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")

    page = alice_page.get(PAGE).content.decode()
    assert re.search(r"<script(?![^>]*\bsrc=)", page) is None
    assert 'href="/accounts/tokens/" aria-current="page"' in page


def test_a_superuser_revokes_anyones_token_in_the_admin_but_changes_nothing_else(
    alice: User, django_user_model: type[User]
) -> None:
    token = token_create(user=alice, name="laptop", scopes=["read"]).token
    root = django_user_model.objects.create_superuser("root", password="x" * 12)
    admin = Client()
    admin.force_login(root)

    listing = admin.get("/admin/accounts/apitoken/").content.decode()
    assert "laptop" in listing
    assert admin.get("/admin/accounts/apitoken/add/").status_code == 403
    detail = admin.get(f"/admin/accounts/apitoken/{token.id}/change/").content.decode()
    assert token.secret_hash not in detail
    assert 'name="name"' not in detail  # read-only

    admin.post(
        "/admin/accounts/apitoken/",
        {"action": "revoke_selected", "_selected_action": [str(token.id)]},
    )

    revoked = ApiToken.objects.get(id=token.id)
    assert revoked.status == TokenStatus.REVOKED
    assert revoked.revoked_by == root
