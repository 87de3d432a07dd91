"""The permission matrix of docs/PERMISSIONS.md, one test per cell, as real users of each role.

The tables are read from the document itself, so the page and the behaviour cannot drift: a
changed status, a new URL without a row, or a new command without a line fails here.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import get_commands
from django.db import transaction
from django.http import HttpResponseBase, StreamingHttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from accounts.tokens import token_create
from assistant.answer_record import answer_record_details
from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation
from audit.ledger import ledger_append
from audit.models import AuditEvent, AuditRecord
from ingestion.access import access_tags_for_user
from ingestion.models import Chunk, Document, DocumentVersion, VersionStatus
from ingestion.services import document_upload_bytes
from sources.services import source_add
from tests.accounts.api_tokens import api_token

PERMISSIONS = Path(settings.BASE_DIR) / "docs" / "PERMISSIONS.md"
ROLES = (
    "anonymous",
    "employee",
    "document admin (own groups)",
    "document admin (other groups)",
    "auditor",
    "superuser",
)
NOT_ABOUT_ROLES = "—"
PROJECT_APPS = {
    "accounts",
    "assistant",
    "audit",
    "bench",
    "config",
    "inference",
    "ingestion",
    "sources",
}
SECRET = "The {group} travel budget for 2031 is {amount} euros."
FIELD = re.compile(r"(\w+)=(.*?)(?=\s+\w+=|$)")


@dataclass(frozen=True)
class Row:
    what: str
    method: str
    path: str
    sends: str
    expected: dict[str, str]

    @property
    def is_api(self) -> bool:
        return self.path.startswith(("/api/", "/v1/"))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _tables(text: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """Each markdown table of the page: its header and its rows."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[number + 1].startswith("| ---"):
            body = []
            for row in lines[number + 2 :]:
                if not row.startswith("|"):
                    break
                body.append(_cells(row))
            yield _cells(line), body


def matrix_rows() -> list[Row]:
    rows = []
    for header, body in _tables(PERMISSIONS.read_text()):
        if "path" not in header:
            continue
        assert tuple(header[4:10]) == ROLES, header
        for cells in body:
            rows.append(
                Row(
                    what=cells[0],
                    method=cells[1],
                    path=cells[2].strip("`"),
                    sends=cells[3].strip("`"),
                    expected=dict(zip(ROLES, cells[4:10], strict=True)),
                )
            )
    return rows


def documented_commands() -> set[str]:
    for header, body in _tables(PERMISSIONS.read_text()):
        if header[0] == "command":
            return {cells[0].strip("`") for cells in body}
    return set()


class World:
    """Groups finance and sales, a document of each, and one person per role.

    Each document has a version that search serves (with a passage), a failed one and a queued
    one; the document admin administers finance and is not a member of it.
    """

    def __init__(self) -> None:
        self.finance = Group.objects.create(name="finance")
        self.sales = Group.objects.create(name="sales")
        self.users: dict[str, User | None] = {
            "anonymous": None,
            "employee": self._user("erin", "finance"),
            "document admin (own groups)": self._user("dana", f"finance{self.suffix}"),
            "auditor": self._user("audrey", settings.AUDITORS_GROUP),
            "superuser": self._user("root", superuser=True),
        }
        self.users["document admin (other groups)"] = self.users["document admin (own groups)"]
        self.olivia = self._user("olivia", "finance")
        root = self.users["superuser"]
        assert root is not None
        self.documents = {
            group.name: self._document(group, amount, root)
            for group, amount in ((self.finance, "48,000"), (self.sales, "75,500"))
        }
        self.others_conversation, self.others_answer = self._answer(self.olivia)
        self.others_token = token_create(
            user=self.olivia, name="olivia's", scopes=["read"], days=None
        ).token
        with transaction.atomic():
            self.answer_record = ledger_append(
                event=AuditEvent.ANSWER,
                actor=self.olivia,
                details=answer_record_details(
                    self.others_answer,
                    access_tags=access_tags_for_user(self.olivia),
                    prompt=[],
                    sampling={},
                    usage={},
                ),
            )
        self.source = source_add(
            name="finance-share", kind="folder", location="/srv/finance", groups=[self.finance]
        )

    @property
    def suffix(self) -> str:
        return str(settings.DOCUMENT_ADMIN_GROUP_SUFFIX)

    def _user(self, name: str, *groups: str, superuser: bool = False) -> User:
        user = User.objects.create_user(name, password=f"pw-{name}-123", is_superuser=superuser)
        user.groups.set(Group.objects.get_or_create(name=group)[0] for group in groups)
        return user

    def _document(self, group: Group, amount: str, uploader: User) -> Document:
        text = SECRET.format(group=group.name, amount=amount)
        versions = [
            document_upload_bytes(
                name=f"{group.name}-budget.md",
                data=f"# {group.name} budget\n\n{text}\n\nDraft {number}.\n".encode(),
                groups=[group],
                user=uploader,
            ).version
            for number in (1, 2, 3)
        ]
        ready, failed, queued = versions
        assert ready is not None
        assert failed is not None
        assert queued is not None
        DocumentVersion.objects.filter(pk=ready.pk).update(status=VersionStatus.READY)
        DocumentVersion.objects.filter(pk=failed.pk).update(
            status=VersionStatus.FAILED, status_message="The file could not be read."
        )
        Chunk.objects.create(version=ready, index=0, text=text, heading=f"{group.name} budget")
        document = ready.document
        document.current_version = ready
        document.save()
        assert queued.status == VersionStatus.QUEUED
        return document

    def _answer(self, user: User) -> tuple[Conversation, Answer]:
        """An answer that cites the finance document's passage."""
        chunk = Chunk.objects.get(version=self.documents["finance"].current_version)
        passage = {
            "n": 1,
            "point_id": str(chunk.point_id),
            "document_id": chunk.version.document_id,
            "version_id": chunk.version_id,
            "chunk_index": chunk.index,
            "source": chunk.version.document.source_path,
            "title": chunk.version.document.title,
            "page": None,
            "heading": chunk.heading,
            "text": chunk.text,
            "score": 0.9,
        }
        conversation = Conversation.objects.create(user=user, title="Travel")
        answer = Answer.objects.create(
            conversation=conversation,
            user=user,
            question="What is the travel budget?",
            searched_query="travel budget",
            answer="It is 48,000 euros [1].",
            status=AnswerStatus.ANSWERED,
            mode=AnswerMode.EXTRACTIVE,
            passages=[passage],
            citations=[passage],
        )
        return conversation, answer

    def values_for(self, role: str) -> dict[str, Any]:
        """What the placeholders of a path stand for, for a person of `role`."""
        group = self.sales if role == "document admin (other groups)" else self.finance
        document = self.documents[group.name]
        versions = {v.status: v for v in document.versions.all()}
        actor = self.users[role] or self.olivia
        conversation, answer = self._answer(actor)
        subject = AuditRecord.objects.filter(
            event=AuditEvent.DOCUMENT_UPLOADED, references__target_id=document.pk
        ).get()
        return {
            "doc": document.pk,
            "number": 1,
            "n": 1,
            "version": versions[VersionStatus.READY].pk,
            "failed_version": versions[VersionStatus.FAILED].pk,
            "queued_version": versions[VersionStatus.QUEUED].pk,
            "point": Chunk.objects.get(version=document.current_version).point_id,
            "group": group.name,
            "group_id": group.pk,
            "my_conversation": conversation.pk,
            "my_answer": answer.pk,
            "my_token": token_create(user=actor, name="mine", scopes=["read"], days=None).token.pk,
            "others_conversation": self.others_conversation.pk,
            "others_answer": self.others_answer.pk,
            "others_token": self.others_token.pk,
            "doc_record": subject.sequence,
            "answer_record": self.answer_record.sequence,
            "source": self.source.pk,
        }

    def secret_for(self, role: str) -> str:
        group = "sales" if role == "document admin (other groups)" else "finance"
        return str(self.documents[group].current_version.chunks.get().text)  # type: ignore[union-attr]


@pytest.fixture
def world(db: None) -> World:
    return World()


def _fields(sends: str) -> dict[str, str]:
    return {key: value.strip() for key, value in FIELD.findall(sends)}


def _a_file() -> SimpleUploadedFile:
    name = f"note-{uuid.uuid4().hex[:8]}.md"
    return SimpleUploadedFile(name, f"# Note\n\n{name}\n".encode(), content_type="text/markdown")


def _api_request(row: Row, user: User | None, sends: str) -> HttpResponseBase:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token(user)}")
    method = getattr(client, row.method.lower())
    if sends.startswith("{"):
        return method(row.path, json.loads(sends), format="json")
    fields: dict[str, Any] = _fields(sends)
    if "files" in fields:
        fields["files"] = [_a_file()]
        return method(row.path, fields, format="multipart")
    if "groups" in fields:
        fields["groups"] = [fields["groups"]]
    if row.method == "GET":
        return method(row.path)
    return method(row.path, fields or None, format="json")


def _page_request(row: Row, user: User | None, sends: str) -> HttpResponseBase:
    client = Client()
    if user is not None:
        client.force_login(user)
    if row.method == "GET":
        return client.get(row.path)
    fields: dict[str, Any] = _fields(sends)
    if "files" in fields:
        fields["files"] = [_a_file()]
    return client.post(row.path, fields)


def _body(response: HttpResponseBase) -> bytes:
    if not isinstance(response, StreamingHttpResponse):
        return bytes(getattr(response, "content", b""))
    if not response.is_async:
        return b"".join(response.streaming_content)  # type: ignore[arg-type]

    async def read() -> bytes:
        return b"".join([part async for part in response.streaming_content])  # type: ignore[union-attr]

    return async_to_sync(read)()


CELLS = [
    pytest.param(row, role, id=f"{row.method} {row.path} {row.sends} as {role}".replace(" ", "_"))
    for row in matrix_rows()
    for role in ROLES
    if row.expected[role] != NOT_ABOUT_ROLES
]


@pytest.mark.parametrize(("row", "role"), CELLS)
def test_each_cell_of_the_matrix(world: World, row: Row, role: str) -> None:
    values = world.values_for(role)
    sends = row.sends
    for name, value in values.items():
        sends = sends.replace(f"{{{name}}}", str(value))
    filled = Row(
        what=row.what,
        method=row.method,
        path=row.path.format(**values),
        sends=sends,
        expected=row.expected,
    )
    user = world.users[role]
    send = _api_request if row.is_api else _page_request

    response = send(filled, user, filled.sends)
    body = _body(response)

    expected = int(row.expected[role])
    assert response.status_code == expected, body[:500]
    if role == "anonymous" and expected == 302 and row.path != "/accounts/logout/":
        assert "login" in response["Location"]
    if expected in (401, 403, 404):
        assert world.secret_for(role).encode() not in body


def _routes(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        else:
            yield "/" + route


def _shape(path: str) -> str:
    """A path with its variable parts as *, for comparing the URL patterns with the rows."""
    path = path.split("?", 1)[0]
    path = re.sub(r"<[^>]+>", "*", path)
    return re.sub(r"\{[^}]+\}", "*", path)


def test_every_url_of_the_project_has_a_row() -> None:
    documented = {_shape(row.path) for row in matrix_rows()}
    undocumented = [
        route
        for route in _routes(get_resolver().url_patterns)
        if _shape(route) not in documented
        # The Django admin's own pages are one role's: its rows stand for all of them.
        and not route.startswith("/admin/")
    ]
    assert undocumented == []


def test_every_command_of_the_project_is_listed() -> None:
    ours = {name for name, app in get_commands().items() if app in PROJECT_APPS}
    assert ours == documented_commands()


def test_the_matrix_covers_every_role_and_kind_of_path() -> None:
    rows = matrix_rows()
    assert len(rows) > 50
    assert {row.method for row in rows} == {"GET", "POST", "PATCH", "DELETE"}
    assert any(row.path.startswith("/v1/") for row in rows)
    assert any(row.path.startswith("/admin/") for row in rows)
