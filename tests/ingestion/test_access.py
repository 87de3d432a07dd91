"""The ACL leak suite: every read path, as every kind of user, against canary documents.

Each restricted document carries a canary sentence. Every role walks every page, download,
API, answer stream and audit page it can name (including ids of other people's things, which
must fail without saying what they hold), and no response may contain a canary that the role
may not see. Positive controls prove the walk reaches the canaries where they are allowed, so
the suite cannot pass by seeing nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import Group, User
from django.http import StreamingHttpResponse
from django.test import AsyncClient

from assistant.models import Answer, Conversation
from audit.models import AuditRecord
from inference.simulator import SimulatorHandle, run_simulator_in_thread
from ingestion.access import can_manage_document, manageable_documents
from ingestion.models import Chunk, Document, DocumentVersion, VersionStatus
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes
from tests.accounts.api_tokens import api_token
from tests.accounts.test_roles import make_document, make_user

pytestmark = pytest.mark.django_db

CANARIES = {
    "research": "NIGHTJAR-LAUNCH-7419",
    "sales": "KESTREL-DISCOUNT-5521",
    "nobody": "OSPREY-MERGER-3308",
}
QUESTIONS = {
    "research": "What is the launch code for Project Nightjar?",
    "sales": "What is the discount code for the Kestrel licence?",
    "nobody": "What is the codename of the Osprey merger?",
}

# What each role may see, by kind of path. "read": the employee's paths (portal, passages,
# search, ask, conversations, the OpenAI-compatible endpoint); "manage": document pages and
# the documents API; "audit": the audit pages; "admin": the Django admin.
EVERYTHING = frozenset(CANARIES)
ALLOWED: dict[str, dict[str, frozenset[str]]] = {
    "anonymous": {
        "read": frozenset(),
        "manage": frozenset(),
        "audit": frozenset(),
        "admin": frozenset(),
    },
    "alice": {
        "read": frozenset({"research"}),
        "manage": frozenset({"research"}),
        "audit": frozenset(),
        "admin": frozenset(),
    },
    "bob": {
        "read": frozenset({"sales"}),
        "manage": frozenset({"sales"}),
        "audit": frozenset(),
        "admin": frozenset(),
    },
    "nora": {
        "read": frozenset(),
        "manage": frozenset(),
        "audit": frozenset(),
        "admin": frozenset(),
    },
    # Administers research's documents without being one of its readers.
    "dora": {
        "read": frozenset(),
        "manage": frozenset({"research"}),
        "audit": frozenset({"research"}),
        "admin": frozenset(),
    },
    # Reads every answer's evidence in the audit log, and nothing else beyond the reading rule.
    "audrey": {
        "read": frozenset(),
        "manage": frozenset(),
        "audit": EVERYTHING,
        "admin": frozenset(),
    },
    # Manages everything; reads through the assistant only what their groups allow (none).
    "root": {"read": frozenset(), "manage": EVERYTHING, "audit": EVERYTHING, "admin": EVERYTHING},
}


@dataclass
class Seen:
    """Which canaries each (path kind, path) showed."""

    by_path: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def record(self, kind: str, path: str, body: str) -> None:
        found = {owner for owner, canary in CANARIES.items() if canary in body}
        self.by_path.setdefault((kind, path), set()).update(found)

    def canaries_of(self, kind: str) -> set[str]:
        return {
            owner
            for (seen_kind, _), found in self.by_path.items()
            if seen_kind == kind
            for owner in found
        }

    def leaks(self, allowed: dict[str, frozenset[str]]) -> list[str]:
        return [
            f"{kind} {path}: {sorted(found - allowed[kind])}"
            for (kind, path), found in sorted(self.by_path.items())
            if found - allowed[kind]
        ]


class Company:
    """Three restricted documents, one public one, and a person of every role."""

    def __init__(self) -> None:
        research = Group.objects.create(name="research")
        sales = Group.objects.create(name="sales")
        research_admins = Group.objects.create(name="research-admins")
        auditors = Group.objects.create(name="auditors")
        self.users: dict[str, User] = {}
        for name, groups in {
            "alice": [research],
            "bob": [sales],
            "nora": [],
            "dora": [research_admins],
            "audrey": [auditors],
        }.items():
            user = User.objects.create_user(name, password=f"pw-{name}-12345")
            user.groups.set(groups)
            self.users[name] = user
        self.users["root"] = User.objects.create_superuser("root", password="pw-root-12345")
        upload = document_upload_bytes
        upload(
            name="nightjar.md",
            data=(
                "# Project Nightjar\n\nThe launch code for Project Nightjar is "
                f"{CANARIES['research']}. The security board approved it in March.\n"
            ).encode(),
            groups=[research],
        )
        upload(
            name="kestrel.md",
            data=(
                "# Kestrel pricing\n\nThe discount code for the Kestrel licence is "
                f"{CANARIES['sales']}. Discounts above 20 percent need approval.\n"
            ).encode(),
            groups=[sales],
        )
        upload(
            name="osprey.md",
            data=(
                "# Osprey\n\nThe codename of the Osprey merger is "
                f"{CANARIES['nobody']}. Only the board knows of it.\n"
            ).encode(),
            groups=[],
        )
        upload(
            name="travel.md",
            data=b"# Travel policy\n\nEmployees book second class train travel under four hours.\n",
            is_public=True,
        )
        run_pending_once()
        assert DocumentVersion.objects.filter(status=VersionStatus.READY).count() == 4


def client_for(user: User | None) -> AsyncClient:
    client = AsyncClient()
    if user is not None:
        async_to_sync(client.aforce_login)(user)
    return client


async def body_of(response: Any) -> str:
    if isinstance(response, StreamingHttpResponse):
        if response.is_async:
            parts = [part async for part in response.streaming_content]  # type: ignore[union-attr]
        else:
            # A sync stream (a file, an export) reads the database as it goes: off the loop.
            stream: Iterable[bytes] = response.streaming_content  # type: ignore[assignment]
            parts = await sync_to_async(lambda: list(stream))()
        return b"".join(parts).decode(errors="replace")
    return bytes(response.content).decode(errors="replace")


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    payload: dict[str, Any] | None = None
    api: bool = False


def every_request() -> list[Request]:
    """Every read path, with every id that exists, whoever it belongs to."""
    documents = list(Document.objects.all())
    versions = list(DocumentVersion.objects.all())
    conversations = list(Conversation.objects.values_list("id", flat=True))
    answers = list(Answer.objects.values_list("id", flat=True))
    points = list(Chunk.objects.values_list("point_id", flat=True))
    records = list(AuditRecord.objects.values_list("sequence", flat=True))
    requests = [
        Request("read", "GET", "/"),
        Request("read", "GET", "/feedback/"),
        Request("read", "GET", "/accounts/tokens/"),
        Request("read", "GET", "/api/assistant/conversations", api=True),
        Request("manage", "GET", "/documents/"),
        Request("manage", "GET", "/documents/?q=code"),
        Request("manage", "GET", "/api/documents/", api=True),
        Request(
            "manage", "GET", f"/documents/status.json?ids={','.join(str(v.id) for v in versions)}"
        ),
        Request("audit", "GET", "/audit/"),
        Request("audit", "GET", "/audit/?q=code"),
        Request("audit", "GET", "/audit/export/"),
        Request("audit", "GET", "/audit/export/?format=csv"),
        Request("admin", "GET", "/admin/"),
        Request("admin", "GET", "/admin/ingestion/chunk/"),
        Request("admin", "GET", "/admin/ingestion/chunk/?q=code"),
        Request("admin", "GET", "/admin/ingestion/document/"),
        Request("admin", "GET", "/admin/ingestion/documentversion/"),
    ]
    for document in documents:
        requests += [
            Request("manage", "GET", f"/documents/{document.id}/"),
            Request("manage", "GET", f"/api/documents/{document.id}/", api=True),
            Request("admin", "GET", f"/admin/ingestion/document/{document.id}/change/"),
        ]
    for version in versions:
        requests += [
            Request("manage", "GET", f"/documents/versions/{version.id}/download/"),
            Request("manage", "GET", f"/api/versions/{version.id}/", api=True),
            Request(
                "read", "GET", f"/documents/{version.document_id}/versions/{version.number}/file"
            ),
            Request("admin", "GET", f"/admin/ingestion/documentversion/{version.id}/change/"),
        ]
    for chunk_id in Chunk.objects.values_list("id", flat=True):
        requests.append(Request("admin", "GET", f"/admin/ingestion/chunk/{chunk_id}/change/"))
    for point in points:
        requests.append(Request("read", "GET", f"/passages/point/{point}/"))
    for conversation in conversations:
        requests += [
            Request("read", "GET", f"/c/{conversation}/"),
            Request("read", "GET", f"/api/assistant/conversations/{conversation}", api=True),
        ]
    for answer in answers:
        requests.append(Request("read", "GET", f"/answers/{answer}/fragment"))
        requests += [Request("read", "GET", f"/passages/{answer}/{n}/") for n in range(1, 5)]
    for sequence in records:
        requests.append(Request("audit", "GET", f"/audit/{sequence}/"))
    for question in QUESTIONS.values():
        requests += [
            Request("read", "GET", f"/api/assistant/search?q={question}", api=True),
            Request("read", "POST", "/api/assistant/ask", {"question": question}, api=True),
            Request(
                "read",
                "POST",
                "/api/assistant/ask",
                {"question": question, "stream": True},
                api=True,
            ),
            Request("read", "POST", "/ask/stream", {"question": question}),
            Request(
                "read",
                "POST",
                "/v1/chat/completions",
                {
                    "model": "knowledge-assistant",
                    "messages": [{"role": "user", "content": question}],
                },
                api=True,
            ),
            Request(
                "read",
                "POST",
                "/v1/chat/completions",
                {
                    "model": "knowledge-assistant",
                    "stream": True,
                    "messages": [{"role": "user", "content": question}],
                },
                api=True,
            ),
        ]
    return requests


def walk(user: User | None, requests: Iterable[Request]) -> Seen:
    """Send every request as `user`: pages with a session, APIs with the user's own token."""
    seen = Seen()
    session = client_for(user)
    headers = {}
    if user is not None:
        headers = {"Authorization": f"Bearer {api_token(user)}"}
    tokenless = AsyncClient()

    async def send_all() -> None:
        for request in requests:
            client = tokenless if request.api and user is not None else session
            extra = headers if request.api else {}
            if request.method == "GET":
                response = await client.get(request.path, headers=extra)
            else:
                response = await client.post(
                    request.path,
                    json.dumps(request.payload),
                    content_type="application/json",
                    headers=extra,
                )
            body = await body_of(response)
            # Headers too: a file name or an error can travel there.
            body += " ".join(f"{name}: {value}" for name, value in response.items())
            seen.record(request.kind, f"{request.method} {request.path}", body)

    async_to_sync(send_all)()
    return seen


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    with run_simulator_in_thread(port=0) as handle:
        yield handle


@pytest.fixture
def company(simulator: SimulatorHandle, settings: Any) -> Company:
    settings.VLLM_URLS = [simulator.url]
    settings.RATE_LIMIT_ASK = "off"
    settings.RATE_LIMIT_ASK_TOKEN = "off"
    company = Company()
    # Real history to look through: each reader asks about their own canary.
    walk(
        company.users["alice"],
        [Request("read", "POST", "/ask/stream", {"question": QUESTIONS["research"]})],
    )
    walk(
        company.users["bob"],
        [Request("read", "POST", "/ask/stream", {"question": QUESTIONS["sales"]})],
    )
    return company


ROLES = list(ALLOWED)


@pytest.mark.parametrize("role", ROLES)
def test_no_role_sees_a_canary_it_may_not_read_on_any_path(
    company: Company, simulator: SimulatorHandle, role: str
) -> None:
    user = None if role == "anonymous" else company.users[role]
    requests = every_request()
    assert len(requests) > 100
    asked_before = len(simulator.stats.records())
    seen = walk(user, requests)

    assert seen.leaks(ALLOWED[role]) == []
    # What reached the model on this role's behalf stays within the reading rule too.
    for record in simulator.stats.records()[asked_before:]:
        prompt = json.dumps(record.__dict__, default=str)
        shown = {owner for owner, canary in CANARIES.items() if canary in prompt}
        assert shown <= ALLOWED[role]["read"]


def test_the_walk_reaches_each_canary_where_it_is_allowed(company: Company) -> None:
    """The positive control: without it, a suite that saw nothing would pass."""
    alice = walk(company.users["alice"], every_request())
    assert alice.canaries_of("read") == {"research"}
    for path in (
        "GET /api/assistant/search",
        "POST /api/assistant/ask",
        "POST /ask/stream",
        "POST /v1/chat/completions",
        "GET /passages/point/",
    ):
        assert any(
            path in seen_path and "research" in found
            for (_, seen_path), found in alice.by_path.items()
        ), path

    dora = walk(company.users["dora"], every_request())
    assert dora.canaries_of("manage") == {"research"}
    assert dora.canaries_of("read") == set()

    audrey = walk(company.users["audrey"], every_request())
    assert {"research", "sales"} <= audrey.canaries_of("audit")

    root = walk(company.users["root"], every_request())
    assert root.canaries_of("manage") == EVERYTHING
    assert "nobody" in root.canaries_of("admin")


# ---- Which documents a role manages ----------------------------------------------------------


def test_a_document_admin_manages_documents_read_only_by_their_groups() -> None:
    dana = make_user("dana", "finance-admins", "hr-admins")
    own = make_document("budget", "finance")
    both_own = make_document("payroll", "finance", "hr")
    shared_with_other = make_document("forecast", "finance", "sales")
    other = make_document("pricing", "sales")
    public = make_document("handbook", "finance", public=True)
    nobody = make_document("draft")

    assert set(manageable_documents(dana)) == {own, both_own}
    assert manageable_documents(dana).count() == 2
    assert can_manage_document(dana, own)
    for document in (shared_with_other, other, public, nobody):
        assert not can_manage_document(dana, document)


def test_deleted_documents_leave_the_pages_but_stay_in_the_admin_s_records() -> None:
    dana = make_user("dana", "finance-admins")
    budget = make_document("budget", "finance")
    Document.objects.filter(pk=budget.pk).update(deleted_at="2030-01-01T00:00:00Z")
    assert not manageable_documents(dana).exists()
    assert list(manageable_documents(dana, include_deleted=True)) == [budget]


def test_superusers_manage_public_and_unshared_documents() -> None:
    root = make_user("root", superuser=True)
    public = make_document("handbook", public=True)
    nobody = make_document("draft")
    assert can_manage_document(root, public)
    assert can_manage_document(root, nobody)
    assert set(manageable_documents(root)) == {public, nobody}
