"""Mailbox sources against a real Dovecot IMAP server started by the tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from assistant.retrieval import passages_for_user
from audit.models import AuditRecord
from sources.kinds.imap import EML_PARSED
from sources.models import RunStatus, Source, SourceItem
from sources.services import SourceRefused, source_add
from tests.sources.conftest import Sync
from tests.sources.dovecot import DOVECOT, Mailbox, dovecot_running

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(not DOVECOT.exists(), reason="dovecot-imapd is not installed (bin/setup)"),
]

PASSWORD = "imap-s3cret"


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    with dovecot_running("policies", PASSWORD) as running:
        yield running


def message(subject: str, body: str, attachment: tuple[str, bytes] | None = None) -> bytes:
    mail = EmailMessage()
    mail["Subject"] = subject
    mail["From"] = "hr@example.org"
    mail["To"] = "policies@example.org"
    mail.set_content(body)
    if attachment is not None:
        name, data = attachment
        mail.add_attachment(data, maintype="text", subtype="markdown", filename=name)
    return mail.as_bytes()


def mail_source(mailbox: Mailbox, password_file: Path) -> Source:
    password_file.write_text(PASSWORD)
    return source_add(
        name="policies",
        kind="imap",
        location=f"imap://127.0.0.1:{mailbox.port}/INBOX",
        options={"user": "policies", "password_file": str(password_file)},
        groups=[Group.objects.get_or_create(name="staff")[0]],
    )


def test_messages_and_attachments_become_documents_and_expunged_ones_leave(
    mailbox: Mailbox, tmp_path: Path, sync: Sync
) -> None:
    staff = User.objects.create_user("employee")
    staff.groups.add(Group.objects.get_or_create(name="staff")[0])
    mailbox.append(message("Remote work", "Staff may work remotely two days a week."))
    mailbox.append(
        message(
            "Updated expense policy",
            "The new expense policy is attached.",
            ("expenses.md", b"# Expenses\n\nTaxi receipts are refunded up to forty euros.\n"),
        )
    )
    mailbox.append(message("Lunch", "The canteen serves fish on Fridays."))
    source = mail_source(mailbox, tmp_path / "password")
    first = sync(source)
    # Where the parsers read .eml, the attachment is the message's to bring in, not an item.
    items = 3 if EML_PARSED else 4
    assert first.counts() == {"new": items, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 0}
    hits = passages_for_user(user=staff, query="how many days may staff work remotely")
    assert "two days a week" in hits[0].text
    taxi = passages_for_user(user=staff, query="taxi receipts refund limit")
    assert "forty euros" in taxi[0].text

    assert sync(source, ingest=False).counts()["unchanged"] == items
    mailbox.expunge("Lunch")
    run = sync(source)
    assert (run.deleted, run.unchanged) == (1, items - 1)
    assert all("fish" not in hit.text for hit in passages_for_user(user=staff, query="fish"))
    assert SourceItem.objects.filter(deleted_at__isnull=True).count() == items - 1
    stored = json.dumps([record.details for record in AuditRecord.objects.all()])
    assert PASSWORD not in stored + json.dumps(list(Source.objects.values_list("options")))


def test_a_refused_login_fails_the_run_and_deletes_nothing(
    mailbox: Mailbox, tmp_path: Path, sync: Sync
) -> None:
    mailbox.append(message("Parking", "Visitors park in the north garage."))
    source = mail_source(mailbox, tmp_path / "password")
    assert sync(source, ingest=False).status == RunStatus.OK
    (tmp_path / "password").write_text("wrong")
    run = sync(source, ingest=False)
    assert run.status == RunStatus.FAILED
    assert "refused the login of policies" in run.error
    assert run.deleted == 0


def test_a_mailbox_password_in_clear_is_refused() -> None:
    with pytest.raises(SourceRefused, match="password_file"):
        source_add(
            name="clear",
            kind="imap",
            location="imap://127.0.0.1/INBOX",
            options={"user": "x", "password": PASSWORD},
        )
