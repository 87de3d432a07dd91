"""The Sources page: what each role may do there, and an admin's whole round."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from ingestion.models import Document
from sources.models import Source
from sources.runner import runs_pending_once
from sources.services import source_add

pytestmark = pytest.mark.django_db


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    root.mkdir()
    (root / "parking.md").write_text("Visitors park in the north garage.\n")
    (root / "canteen.txt").write_text("The canteen opens at noon.\n")
    return root


@pytest.fixture
def source(share: Path) -> Source:
    return source_add(name="share", kind="folder", location=str(share))


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def member_of(name: str, *groups: str) -> User:
    user = User.objects.create_user(name)
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def pages(source: Source) -> list[tuple[str, str]]:
    base = f"/sources/{source.pk}"
    return [
        ("get", "/sources/"),
        ("post", "/sources/"),
        ("get", f"{base}/"),
        ("post", f"{base}/run/"),
        ("post", f"{base}/pause/"),
        ("get", f"{base}/remove/"),
        ("post", f"{base}/remove/"),
    ]


@pytest.mark.parametrize(
    "role", ["employee", "document admin", "auditor"], ids=lambda role: role.replace(" ", "-")
)
def test_only_superusers_manage_sources(role: str, source: Source) -> None:
    user = {
        "employee": lambda: member_of("employee", "staff"),
        "document admin": lambda: member_of("hr-boss", "hr", "hr-admins"),
        "auditor": lambda: member_of("auditor", "auditors"),
    }[role]()
    client = client_for(user)
    for method, url in pages(source):
        response = getattr(client, method)(url, {"documents": "delete", "name": "x"})
        assert response.status_code == 403, (method, url)
        assert "share" not in response.content.decode()
    assert Source.objects.get().paused is False
    assert Source.objects.count() == 1
    assert "/sources/" not in client.get("/").content.decode()


def test_anonymous_visitors_are_sent_to_log_in(source: Source) -> None:
    for method, url in pages(source):
        response = getattr(client_for(None), method)(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_an_admin_adds_runs_pauses_and_removes_a_source(share: Path, tmp_path: Path) -> None:
    admin = User.objects.create_superuser("admin", password="x" * 12)
    Group.objects.create(name="staff")
    client = client_for(admin)
    assert 'href="/sources/"' in client.get("/").content.decode()

    secret = tmp_path / "header"
    secret.write_text("Bearer never-shown")
    refused = client.post(
        "/sources/",
        {
            "name": "bad",
            "kind": "folder",
            "location": str(share),
            "options": "password=hunter2-clear",
        },
    )
    assert refused.status_code == 400
    assert "password_file" in refused.content.decode()
    assert "hunter2-clear" not in refused.content.decode()

    added = client.post(
        "/sources/",
        {
            "name": "share",
            "kind": "folder",
            "location": str(share),
            "groups": [Group.objects.get(name="staff").pk],
            "options": f"exclude=*.tmp\nsecret_note_file={secret}",
            "schedule": "0 * * * *",
        },
        follow=True,
    )
    page = added.content.decode()
    assert "Added source “share”" in page
    assert "exclude=*.tmp" in page
    assert "never-shown" not in page
    source = Source.objects.get(name="share")

    client.post(f"/sources/{source.pk}/run/")
    assert runs_pending_once() == 1
    (share / "canteen.txt").write_bytes(b"")
    (share / "empty.txt").write_bytes(b"")
    (share / "parking.md").unlink()
    client.post(f"/sources/{source.pk}/run/")
    runs_pending_once()
    detail = client.get(f"/sources/{source.pk}/").content.decode()
    assert "2 new, 0 changed, 0 unchanged, 0 deleted, 0 failed" in detail
    assert "1 new, 1 changed, 0 unchanged, 1 deleted, 0 failed" in detail
    listing = client.get("/sources/").content.decode()
    assert "share" in listing
    assert "never-shown" not in listing

    client.post(f"/sources/{source.pk}/pause/", {"paused": "1"})
    assert Source.objects.get().paused is True
    assert "Resume schedule" in client.get(f"/sources/{source.pk}/").content.decode()

    asks = client.get(f"/sources/{source.pk}/remove/").content.decode()
    assert "Keep its documents" in asks
    assert "Delete its documents" in asks
    assert client.post(f"/sources/{source.pk}/remove/").status_code == 200  # no choice: asks again
    removed = client.post(f"/sources/{source.pk}/remove/", {"documents": "delete"}, follow=True)
    assert "its 2 documents were deleted" in removed.content.decode()
    assert not Source.objects.exists()
    assert not Document.objects.filter(deleted_at__isnull=True).exists()


def test_removing_a_source_can_keep_its_documents(source: Source, share: Path) -> None:
    admin = User.objects.create_superuser("admin", password="x" * 12)
    client = client_for(admin)
    client.post(f"/sources/{source.pk}/run/")
    runs_pending_once()
    client.post(f"/sources/{source.pk}/remove/", {"documents": "keep"})
    assert not Source.objects.exists()
    assert Document.objects.filter(deleted_at__isnull=True).count() == 2
