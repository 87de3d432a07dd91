"""Insight for admins: the usage page, knowledge gaps, and how well answers are supported.

The people: erin reads finance, sam reads sales, dana administers finance (and reads
nothing), audrey audits, root is a superuser. Finance has a travel policy, sales a price
list; answers are recorded with their ledger records, as the answering service records them,
so the groups each asker read with are the ones the pages count by.
"""

from __future__ import annotations

import csv
import io
import queue
import threading
import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistant.answer_record import answer_record_details
from assistant.insight import support
from assistant.insight.charts import Series, bar_chart, column_chart
from assistant.insight.clusters import average_linkage
from assistant.insight.scope import Period, answers_in_scope
from assistant.insight.support import sentences_of, support_measure
from assistant.insight.usage import usage_for
from assistant.models import (
    Answer,
    AnswerMode,
    AnswerStatus,
    AnswerSupport,
    Conversation,
    Feedback,
    GapResolution,
)
from audit.ledger import ledger_append
from audit.models import AuditEvent, AuditRecord
from ingestion.access import access_tags_for_user, insight_scope_for
from ingestion.models import Chunk, Document, DocumentVersion

pytestmark = [pytest.mark.django_db]

TRAVEL = "The travel budget for 2031 is 48,000 euros. Flights need approval from a director."
PRICES = "The list price of the Kestrel licence rises to 1,200 euros per seat in 2031."
SECRET_TITLE = "Kestrel price list"


def make_user(name: str, *groups: str, superuser: bool = False) -> User:
    user = User.objects.create_user(name, password="a-long-password", is_superuser=superuser)
    for group in groups:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


def make_document(title: str, group: str, text: str) -> tuple[Document, Chunk]:
    document = Document.objects.create(title=title, source_path=f"{title.lower()}.md")
    document.groups.add(Group.objects.get_or_create(name=group)[0])
    version = DocumentVersion.objects.create(
        document=document,
        number=1,
        sha256=uuid.uuid4().hex * 2,
        file=f"documents/{uuid.uuid4().hex}.md",
        original_name=f"{title}.md",
        size_bytes=len(text),
        status="READY",
    )
    chunk = Chunk.objects.create(version=version, index=0, text=text, heading=title)
    document.current_version = version
    document.save()
    return document, chunk


def passage_of(chunk: Chunk, n: int = 1) -> dict[str, Any]:
    document = chunk.version.document
    return {
        "n": n,
        "point_id": str(chunk.point_id),
        "document_id": document.pk,
        "version_id": chunk.version_id,
        "chunk_index": chunk.index,
        "source": document.source_path,
        "title": document.title,
        "page": None,
        "heading": chunk.heading,
        "text": chunk.text,
        "score": 0.8,
    }


def record(
    user: User,
    question: str,
    *,
    answer: str = "",
    status: str = AnswerStatus.ANSWERED,
    found: tuple[Chunk, ...] = (),
    cited: tuple[int, ...] = (),
    first_token_ms: float | None = None,
    days_ago: int = 0,
) -> Answer:
    """An answer and its ledger record, as the answering service writes them."""
    passages = [passage_of(chunk, n) for n, chunk in enumerate(found, start=1)]
    saved = Answer.objects.create(
        conversation=Conversation.objects.create(user=user, title=question[:40]),
        user=user,
        question=question,
        searched_query=question,
        answer=answer or ("Not in the documents." if status == "abstained" else "Yes."),
        status=status,
        mode=AnswerMode.LLM,
        passages=passages,
        citations=[passages[n - 1] for n in cited],
        first_token_ms=first_token_ms,
    )
    if days_ago:
        Answer.objects.filter(pk=saved.pk).update(
            created_at=timezone.now() - timedelta(days=days_ago)
        )
        saved.refresh_from_db()
    with transaction.atomic():
        ledger_append(
            event=AuditEvent.ANSWER,
            actor=user,
            details=answer_record_details(
                saved, access_tags=access_tags_for_user(user), prompt=[], sampling={}, usage={}
            ),
        )
    return saved


class Office:
    def __init__(self) -> None:
        self.erin = make_user("erin", "finance")
        self.sam = make_user("sam", "sales")
        self.dana = make_user("dana", f"finance{settings.DOCUMENT_ADMIN_GROUP_SUFFIX}")
        self.audrey = make_user("audrey", settings.AUDITORS_GROUP)
        self.root = make_user("root", superuser=True)
        self.travel, self.travel_chunk = make_document("Travel policy", "finance", TRAVEL)
        self.prices, self.prices_chunk = make_document(SECRET_TITLE, "sales", PRICES)
        self.idle, _ = make_document("Parking rules", "finance", "Park in bay C.")
        self.finance = Group.objects.get(name="finance")
        self.sales = Group.objects.get(name="sales")

    def client_for(self, user: User) -> Client:
        client = Client()
        client.force_login(user)
        return client


@pytest.fixture
def office() -> Office:
    return Office()


# ---- Who sees what ---------------------------------------------------------------------------


def test_the_scope_of_each_role(office: Office) -> None:
    auditor = insight_scope_for(office.audrey)
    admin = insight_scope_for(office.dana)
    root = insight_scope_for(office.root)
    assert auditor is not None
    assert auditor.every_answer
    assert auditor.names_people
    assert not auditor.may_resolve
    assert root is not None
    assert root.every_answer
    assert root.may_resolve
    assert admin is not None
    assert admin.group_ids == frozenset({office.finance.pk})
    assert not admin.names_people
    assert admin.may_resolve
    assert set(admin.documents.values_list("title", flat=True)) == {
        "Travel policy",
        "Parking rules",
    }
    assert insight_scope_for(office.erin) is None


def test_a_document_admin_counts_only_their_groups_and_never_sees_other_documents(
    office: Office,
) -> None:
    record(office.erin, "What is the travel budget?", found=(office.travel_chunk,), cited=(1,))
    record(office.sam, "What does a Kestrel seat cost?", found=(office.prices_chunk,), cited=(1,))
    record(
        office.sam, "What does a Kestrel seat cost now?", found=(office.prices_chunk,), cited=(1,)
    )

    page = office.client_for(office.dana).get(reverse("insight:usage"))
    body = page.content.decode()
    assert page.status_code == 200
    assert page.context["usage"].questions == 1
    assert [d.title for d in page.context["usage"].most_cited] == ["Travel policy"]
    assert [d.title for d in page.context["usage"].not_cited] == ["Parking rules"]
    assert SECRET_TITLE not in body
    assert "sam" not in body
    assert "erin" not in body

    export = office.client_for(office.dana).get(reverse("insight:usage-export") + "?kind=documents")
    assert SECRET_TITLE not in export.content.decode()

    audited = office.client_for(office.audrey).get(reverse("insight:usage"))
    assert audited.context["usage"].questions == 3
    assert [d.title for d in audited.context["usage"].most_cited] == [
        SECRET_TITLE,
        "Travel policy",
    ]
    assert SECRET_TITLE in audited.content.decode()


def test_a_document_admin_may_not_filter_by_another_group(office: Office) -> None:
    client = office.client_for(office.dana)
    refused = client.get(reverse("insight:usage") + f"?group={office.sales.pk}")
    assert refused.status_code == 400
    assert "usage" not in refused.context
    # The form offers only the groups they administer.
    assert list(refused.context["form"].fields["group"].queryset) == [office.finance]
    # Even a scope asked directly for another group counts nothing.
    scope = insight_scope_for(office.dana)
    assert scope is not None
    record(office.sam, "Kestrel?", status="abstained")
    assert not answers_in_scope(scope, group_id=office.sales.pk).exists()


def test_employees_and_visitors_are_kept_out(office: Office) -> None:
    for name in ("insight:usage", "insight:usage-export", "insight:gaps"):
        assert office.client_for(office.erin).get(reverse(name)).status_code == 403
        response = Client().get(reverse(name))
        assert response.status_code == 302
        assert "login" in response["Location"]
    resolve = reverse("insight:gap-resolve")
    assert office.client_for(office.erin).post(resolve, {"answers": "1"}).status_code == 403
    assert "login" in Client().post(resolve, {"answers": "1"})["Location"]


def test_the_navigation_links_the_insight_pages_for_their_readers(office: Office) -> None:
    usage_url = reverse("insight:usage")
    for user, shown in ((office.erin, False), (office.dana, True), (office.audrey, True)):
        home = office.client_for(user).get("/").content.decode()
        assert (f'href="{usage_url}"' in home) is shown


# ---- Usage figures -----------------------------------------------------------------------------


def test_the_usage_figures(office: Office) -> None:
    record(office.erin, "Budget?", found=(office.travel_chunk,), cited=(1,), first_token_ms=100)
    record(
        office.erin, "Budget again?", found=(office.travel_chunk,), cited=(1,), first_token_ms=300
    )
    record(office.erin, "Old question?", days_ago=2, first_token_ms=200)
    record(office.sam, "Kestrel?", status="abstained")
    record(office.sam, "Kestrel broke?", status="failed")
    record(office.sam, "Kestrel cut?", status="cut_off", first_token_ms=1000)
    record(office.sam, "Long ago?", days_ago=90)
    answered = Answer.objects.filter(question="Budget?").get()
    Feedback.objects.create(answer=answered, user=office.erin, rating=1)
    Feedback.objects.create(
        answer=Answer.objects.get(question="Kestrel?"), user=office.sam, rating=-1
    )

    scope = insight_scope_for(office.audrey)
    assert scope is not None
    period = Period.last_days(30)
    figures = usage_for(scope, answers_in_scope(scope).filter(created_at__gte=period.start), period)

    assert figures.questions == 6
    assert figures.people == 2
    assert figures.outcomes["answered"] == 3
    assert figures.outcomes["abstained"] == 1
    assert figures.outcomes["failed"] == 1
    assert figures.outcomes["cut_off"] == 1
    assert figures.rated_answers == 2
    assert figures.feedback_rate == pytest.approx(2 / 6)
    assert figures.helpful_share == pytest.approx(0.5)
    assert figures.first_token_ms[50] == pytest.approx(250)
    assert figures.first_token_count == 4
    assert len(figures.days) == 30
    today = figures.days[-1]
    assert today.questions == 5
    assert today.people == 2
    assert today.helpful == 1
    assert figures.days[-3].questions == 1
    assert [d.title for d in figures.most_cited] == ["Travel policy"]


def test_the_usage_page_draws_its_charts_and_exports_csv(office: Office) -> None:
    record(office.erin, "Budget?", found=(office.travel_chunk,), cited=(1,), first_token_ms=120)
    client = office.client_for(office.audrey)
    page = client.get(reverse("insight:usage"))
    body = page.content.decode()
    assert body.count("<svg") >= 5
    assert "Questions per day" in body
    assert "Documents never cited" in body
    assert "Parking rules" in body

    daily = client.get(reverse("insight:usage-export"))
    assert daily["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(daily.content.decode())))
    assert rows[0][:3] == ["day", "questions", "active_people"]
    assert rows[-1][1:3] == ["1", "1"]
    assert len(rows) == 31

    documents = client.get(reverse("insight:usage-export") + "?kind=documents")
    rows = list(csv.reader(io.StringIO(documents.content.decode())))
    assert rows[0] == ["document_id", "title", "source_path", "answers_citing", "deleted"]
    assert rows[1][1:4] == ["Travel policy", "travel policy.md", "1"]


def test_a_period_and_a_group_narrow_the_figures(office: Office) -> None:
    record(office.erin, "Budget?")
    record(office.sam, "Kestrel?")
    record(office.sam, "Older?", days_ago=10)
    client = office.client_for(office.audrey)
    by_sales = client.get(reverse("insight:usage") + f"?group={office.sales.pk}")
    assert by_sales.context["usage"].questions == 2
    today = timezone.localdate()
    recent = client.get(
        reverse("insight:usage") + f"?group={office.sales.pk}&since={today.isoformat()}"
    )
    assert recent.context["usage"].questions == 1
    backwards = client.get(
        reverse("insight:usage")
        + f"?since={today.isoformat()}&until={(today - timedelta(days=3)).isoformat()}"
    )
    assert backwards.status_code == 400
    assert "ends before it starts" in backwards.content.decode()


def test_chart_labels_are_escaped() -> None:
    svg = str(bar_chart("Cited", [("<script>alert(1)</script>", 3)]))
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    columns = str(column_chart("Days", ["<b>"], [Series("<i>", 'x"y', [2])]))
    assert "<b>" not in columns
    assert "<i>" not in columns
    assert 'x"y' not in columns


# ---- Knowledge gaps ----------------------------------------------------------------------------


def test_average_linkage_groups_only_what_is_close() -> None:
    vectors = np.array(
        [[1, 0, 0], [0.95, 0.31, 0], [0, 1, 0], [0, 0.96, 0.28], [0, 0, 1]], dtype=np.float64
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert average_linkage(vectors, 0.8) == [[0, 1], [2, 3], [4]]
    assert average_linkage(vectors, 0.99) == [[0], [1], [2], [3], [4]]
    assert average_linkage(np.zeros((0, 3)), 0.5) == []


def gap_questions(office: Office) -> None:
    for question in (
        "How many vacation days do I get per year?",
        "What is my annual leave allowance in days?",
        "How many days of paid holiday do employees get?",
    ):
        record(office.erin, question, status="abstained", found=(office.travel_chunk,))
    record(office.erin, "How do I reset my VPN token?", status="abstained")
    record(office.sam, "How many days of paid holiday does sales get?", status="abstained",
           found=(office.prices_chunk,))  # fmt: skip
    down = record(office.erin, "Who approves flights?", found=(office.travel_chunk,), cited=(1,))
    Feedback.objects.create(answer=down, user=office.erin, rating=-1)
    up = record(office.erin, "What is the budget?", found=(office.travel_chunk,), cited=(1,))
    Feedback.objects.create(answer=up, user=office.erin, rating=1)


def test_gaps_group_similar_questions_with_the_passages_found(office: Office) -> None:
    gap_questions(office)
    page = office.client_for(office.audrey).get(reverse("insight:gaps"))
    assert page.status_code == 200
    gaps = [gap for gap, _ in page.context["gaps"]]
    leave = gaps[0]
    assert len(leave.questions) == 4
    assert {q.answer.user.username for q in leave.questions} == {"erin", "sam"}
    assert {p.title for p in leave.passages} == {"Travel policy", SECRET_TITLE}
    singles = sorted(gap.title for gap in gaps[1:])
    assert singles == ["How do I reset my VPN token?", "Who approves flights?"]
    body = page.content.decode()
    assert "What is the budget?" not in body
    assert "asked by sam" in body
    assert "audit record" in body
    # Opening the gaps is on record, like the audit pages.
    viewed = AuditRecord.objects.filter(event=AuditEvent.AUDIT_VIEWED, actor=office.audrey)
    assert viewed.filter(summary__startswith="Opened the knowledge gaps").exists()


def test_a_document_admin_sees_the_gaps_of_their_groups_without_other_documents(
    office: Office,
) -> None:
    gap_questions(office)
    record(office.sam, "Can I expense a Kestrel seat?", status="abstained",
           found=(office.prices_chunk,))  # fmt: skip
    page = office.client_for(office.dana).get(reverse("insight:gaps"))
    body = page.content.decode()
    questions = {q.answer.question for gap, _ in page.context["gaps"] for q in gap.questions}
    assert "Can I expense a Kestrel seat?" not in questions
    assert "How many days of paid holiday does sales get?" not in questions
    assert "How many vacation days do I get per year?" in questions
    assert SECRET_TITLE not in body
    assert PRICES not in body
    assert "asked by" not in body
    assert "audit record" not in body
    assert all(may_resolve for _, may_resolve in page.context["gaps"])


def test_passages_of_unreadable_documents_are_neither_shown_nor_counted(office: Office) -> None:
    # An asker reading both groups: the finance admin sees their question, not sales' passage.
    both = make_user("bea", "finance", "sales")
    record(both, "What do Kestrel seats cost?", status="abstained",
           found=(office.prices_chunk, office.travel_chunk))  # fmt: skip
    page = office.client_for(office.dana).get(reverse("insight:gaps"))
    [(gap, _)] = page.context["gaps"]
    assert [p.title for p in gap.passages] == ["Travel policy"]
    assert [p.times for p in gap.passages] == [1]
    body = page.content.decode()
    assert "may not read" not in body
    assert PRICES not in body
    assert SECRET_TITLE not in body


def test_marking_a_gap_resolved_takes_it_out_of_the_open_gaps(office: Office) -> None:
    gap_questions(office)
    client = office.client_for(office.dana)
    gaps = [gap for gap, _ in client.get(reverse("insight:gaps")).context["gaps"]]
    vpn = next(gap for gap in gaps if gap.title == "How do I reset my VPN token?")
    response = client.post(
        reverse("insight:gap-resolve"),
        {
            "answers": ",".join(map(str, vpn.answer_ids)),
            "note": "Added the VPN guide.",
            "document": office.idle.pk,
            "next": reverse("insight:gaps") + "?since=2000-01-01",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("insight:gaps") + "?since=2000-01-01"
    resolution = GapResolution.objects.get()
    assert resolution.resolved_by == office.dana
    assert resolution.document == office.idle
    open_titles = [g.title for g, _ in client.get(reverse("insight:gaps")).context["gaps"]]
    assert "How do I reset my VPN token?" not in open_titles
    resolved = client.get(reverse("insight:gaps") + "?show=resolved")
    [item] = resolved.context["resolved"]
    assert item.questions == ["How do I reset my VPN token?"]
    assert item.document_title == "Parking rules"
    assert "Added the VPN guide." in resolved.content.decode()


def test_a_gap_outside_the_curators_groups_cannot_be_resolved(office: Office) -> None:
    sales_gap = record(office.sam, "Kestrel?", status="abstained")
    finance_gap = record(office.erin, "Budget?", status="abstained")
    dana = office.client_for(office.dana)
    resolve = reverse("insight:gap-resolve")
    assert dana.post(resolve, {"answers": f"{finance_gap.pk},{sales_gap.pk}"}).status_code == 404
    assert dana.post(resolve, {"answers": "abc"}).status_code == 404
    sales_document = {"answers": str(finance_gap.pk), "document": office.prices.pk}
    assert dana.post(resolve, sales_document).status_code == 404
    assert not GapResolution.objects.exists()
    # Auditors read; curating is for document admins and superusers.
    assert (
        office.client_for(office.audrey).post(resolve, {"answers": str(sales_gap.pk)}).status_code
        == 403
    )
    assert (
        office.client_for(office.root).post(resolve, {"answers": str(sales_gap.pk)}).status_code
        == 302
    )
    assert GapResolution.objects.get().answers.get() == sales_gap
    # Someone else's page is no place to go back to.
    outside = dana.post(resolve, {"answers": str(finance_gap.pk), "next": "https://evil.example/"})
    assert outside["Location"] == reverse("insight:gaps")


# ---- How well an answer is supported -------------------------------------------------------------


def test_sentences_keep_the_citations_that_follow_them() -> None:
    sentences = sentences_of(
        "## Leave\n\nYou get 25 days [1]. Unused days expire in March. [2]\n- Flights need a "
        "director [1, 2]\n```\nmake deploy\n```"
    )
    assert [(s.text, s.cited) for s in sentences] == [
        ("Leave", ()),
        ("You get 25 days.", (1,)),
        ("Unused days expire in March.", (2,)),
        ("Flights need a director", (1, 2)),
        ("make deploy", ()),
    ]


def test_support_holds_each_sentence_against_its_cited_passages() -> None:
    passages = {
        1: "Each employee is entitled to twenty-five days of annual leave. Unused days expire "
        "at the end of March.",
        2: TRAVEL,
    }
    answer = (
        "Employees get 25 days of paid leave per year [1]. "
        "The travel budget is 58,000 euros [2]. "
        "Flights must be approved by a director [2]. "
        "Employees may also work from the Moon on Fridays [1]. "
        "Unused leave expires at the end of March."
    )
    result = support_measure(answer, passages)
    verdicts = [(s.supported, s.passage) for s in result.sentences]
    assert verdicts == [(True, 1), (False, 2), (True, 2), (False, 1), (True, 1)]
    assert result.sentences[1].reason == "a number is not in the passage"
    assert result.supported_count == 3
    nothing_cited = support_measure("The budget is 48,000 euros for travel.", {})
    assert [s.reason for s in nothing_cited.sentences] == ["cites no passage"]


def test_auditors_see_the_support_of_each_sentence_on_the_record(office: Office) -> None:
    answer = record(
        office.erin,
        "What is the travel budget?",
        answer="The travel budget for 2031 is 48,000 euros [1]. It covers trips to Mars [1].",
        found=(office.travel_chunk,),
        cited=(1,),
    )
    sequence = AuditRecord.objects.get(event=AuditEvent.ANSWER, answer_id=answer.pk).sequence
    page = office.client_for(office.audrey).get(reverse("audit:record-detail", args=[sequence]))
    body = page.content.decode()
    assert "1 of 2 sentences supported" in body
    stored = AnswerSupport.objects.get(answer=answer)
    assert (stored.supported_count, stored.sentence_count) == (1, 2)
    # The usage page counts the same measure.
    usage = office.client_for(office.audrey).get(reverse("insight:usage")).context["usage"]
    assert (usage.supported_sentences, usage.sentences) == (1, 2)
    assert usage.supported_share == pytest.approx(0.5)


def test_the_usage_page_measures_answers_nobody_opened_yet(office: Office) -> None:
    record(office.erin, "Budget?", answer="The travel budget for 2031 is 48,000 euros [1].",
           found=(office.travel_chunk,), cited=(1,))  # fmt: skip
    record(office.erin, "Nothing?", status="abstained")
    usage = office.client_for(office.audrey).get(reverse("insight:usage")).context["usage"]
    assert (usage.answers_measured, usage.answers_measurable) == (1, 1)
    assert usage.supported_share == 1.0


def test_an_answer_is_measured_after_it_is_recorded_not_while_it_streams(
    office: Office,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.ANSWER_SUPPORT_AFTER_ANSWER = True
    measured: list[int] = []
    monkeypatch.setattr(support, "_enqueue", measured.append)
    with django_capture_on_commit_callbacks(execute=True):
        in_progress = record(office.erin, "Streaming?", status="in_progress", answer="So far")
    assert measured == []
    with django_capture_on_commit_callbacks(execute=True):
        Answer.objects.filter(pk=in_progress.pk).update(answer="Partial")  # a checkpoint
        in_progress.status = AnswerStatus.ANSWERED
        in_progress.answer = "The travel budget for 2031 is 48,000 euros."
        in_progress.save()
    assert measured == [in_progress.pk]
    support.support_measure_pending(in_progress.pk)
    assert AnswerSupport.objects.filter(answer=in_progress).exists()


def test_no_thread_measures_when_it_is_switched_off(
    office: Office,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.ANSWER_SUPPORT_AFTER_ANSWER = False
    measured: list[int] = []
    monkeypatch.setattr(support, "_enqueue", measured.append)
    with django_capture_on_commit_callbacks(execute=True):
        record(office.erin, "Budget?")
    assert measured == []


def test_the_end_of_the_process_ends_the_support_thread_after_its_measure(
    office: Office, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A support thread still in the encoder's native code when the interpreter ends would
    abort the process; at exit the thread finishes the measure in hand and ends."""
    monkeypatch.setattr(support, "_pending", queue.SimpleQueue())
    monkeypatch.setattr(support, "_stopping", threading.Event())
    monkeypatch.setattr(support, "_worker", None)
    monkeypatch.setattr(support, "SUPPORT_DELAY_S", 0.0)
    answer = record(office.erin, "Budget?", answer="The travel budget for 2031 is 48,000 euros.")
    support._enqueue(answer.pk)
    worker = support._worker
    assert worker is not None
    assert worker.is_alive()

    support.support_thread_stop()

    assert not worker.is_alive()
    support._enqueue(answer.pk)  # an answer recorded while the process ends starts no thread
    assert support._worker is worker
