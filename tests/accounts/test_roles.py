"""The roles: who administers which group's documents, who audits, what may be shared."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import override_settings

from accounts.roles import (
    administered_groups,
    can_share_with,
    is_auditor,
    is_document_admin,
    sharing_refusal,
)
from ingestion.access import manageable_documents
from ingestion.models import Document

pytestmark = pytest.mark.django_db


def make_user(name: str, *groups: str, superuser: bool = False, active: bool = True) -> User:
    user = User.objects.create_user(name, is_superuser=superuser, is_active=active)
    user.groups.set(Group.objects.get_or_create(name=group)[0] for group in groups)
    return user


def make_document(title: str, *groups: str, public: bool = False) -> Document:
    document = Document.objects.create(title=title, source_path=f"{title}.md", is_public=public)
    document.groups.set(Group.objects.get_or_create(name=group)[0] for group in groups)
    return document


def group(name: str) -> Group:
    return Group.objects.get_or_create(name=name)[0]


def test_members_of_g_admins_administer_g_and_nothing_else() -> None:
    group("hr")
    dana = make_user("dana", "finance-admins", "finance", "hr")
    assert [g.name for g in administered_groups(dana)] == ["finance"]
    assert is_document_admin(dana)


def test_an_admin_group_whose_group_does_not_exist_administers_nothing() -> None:
    orphan = make_user("olga", "legal-admins")
    assert not administered_groups(orphan).exists()
    assert not is_document_admin(orphan)


def test_plain_members_and_staff_flags_grant_no_role() -> None:
    employee = make_user("erin", "finance")
    employee.is_staff = True
    employee.save()
    assert not is_document_admin(employee)
    assert not is_auditor(employee)
    assert not manageable_documents(employee).exists()


def test_superusers_administer_every_group_and_audit() -> None:
    group("finance")
    group("hr")
    root = make_user("root", superuser=True)
    assert set(administered_groups(root).values_list("name", flat=True)) == {"finance", "hr"}
    assert is_document_admin(root)
    assert is_auditor(root)


def test_inactive_users_have_no_role_at_all() -> None:
    group("finance")
    gone = make_user("gone", "finance-admins", "auditors", superuser=True, active=False)
    assert not is_document_admin(gone)
    assert not is_auditor(gone)
    assert not administered_groups(gone).exists()
    assert not manageable_documents(gone).exists()


def test_auditors_are_the_members_of_the_configured_group() -> None:
    audrey = make_user("audrey", "auditors")
    assert is_auditor(audrey)
    with override_settings(AUDITORS_GROUP="compliance"):
        assert not is_auditor(audrey)
        assert is_auditor(make_user("carl", "compliance"))


def test_the_admin_suffix_is_configurable() -> None:
    group("finance")
    fay = make_user("fay", "finance.owners")
    assert not is_document_admin(fay)
    with override_settings(DOCUMENT_ADMIN_GROUP_SUFFIX=".owners"):
        assert [g.name for g in administered_groups(fay)] == ["finance"]


def test_document_admins_share_only_with_groups_they_administer() -> None:
    dana = make_user("dana", "finance-admins", "hr-admins")
    finance, hr, sales = group("finance"), group("hr"), group("sales")
    assert can_share_with(dana, [finance], everyone=False)
    assert can_share_with(dana, [finance, hr], everyone=False)
    assert not can_share_with(dana, [finance, sales], everyone=False)
    assert not can_share_with(dana, [finance], everyone=True)
    assert not can_share_with(dana, [], everyone=False)
    assert can_share_with(make_user("root", superuser=True), [], everyone=True)
    assert not can_share_with(make_user("erin", "finance"), [finance], everyone=False)


def test_a_refused_choice_of_readers_says_which_groups_are_allowed() -> None:
    dana = make_user("dana", "finance-admins")
    sales = group("sales")
    assert sharing_refusal(dana, [group("finance")], everyone=False) == ""
    assert sharing_refusal(dana, [sales], everyone=False) == (
        "You may share documents only with the groups you administer (finance)."
    )
    assert "Only a superuser may share a document with everyone" in sharing_refusal(
        dana, [], everyone=True
    )
    assert sharing_refusal(dana, [], everyone=False).startswith("Choose who may read")


def adduser(*arguments: str) -> str:
    out = StringIO()
    call_command("adduser", *arguments, stdout=out)
    return out.getvalue()


def test_adduser_grants_the_document_admin_role_per_group() -> None:
    said = adduser("dana", "--admin-of", "finance,hr")
    dana = User.objects.get(username="dana")
    assert set(administered_groups(dana).values_list("name", flat=True)) == {"finance", "hr"}
    assert "document admin of: finance, hr" in said
    assert not dana.is_staff
    assert not dana.groups.filter(name="finance").exists()


def test_adduser_grants_the_auditor_role_and_keeps_other_groups() -> None:
    adduser("audrey", "--groups", "research")
    said = adduser("audrey", "--auditor")
    audrey = User.objects.get(username="audrey")
    assert is_auditor(audrey)
    assert set(audrey.groups.values_list("name", flat=True)) == {"research", "auditors"}
    assert said.startswith("Updated user audrey (groups: auditors, research; auditor)\n")


def test_adduser_makes_superusers() -> None:
    assert "superuser" in adduser("root", "--superuser")
    root = User.objects.get(username="root")
    assert root.is_superuser
    assert is_document_admin(root)
    assert is_auditor(root)


def test_adduser_says_how_an_account_without_a_password_can_log_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    said = adduser("erin", "--groups", "finance")
    assert said.startswith("Created user erin (groups: finance)\n")
    assert "erin has no password yet, so they cannot log in" in said
    assert "manage.py changepassword erin" in said
    assert "--password-stdin" in said

    monkeypatch.setattr("sys.stdin", StringIO("a-long-password-for-erin\n"))
    said = adduser("erin", "--password-stdin")
    assert "no password" not in said
    assert User.objects.get(username="erin").check_password("a-long-password-for-erin")


def test_adduser_refuses_staff_and_says_what_to_use() -> None:
    with pytest.raises(CommandError, match="use --admin-of GROUP"):
        adduser("dana", "--staff")
    assert not User.objects.filter(username="dana").exists()
