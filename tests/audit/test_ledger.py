"""The audit ledger: records, the chain, what the database refuses and what verification catches."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import ProtectedError
from django.test import Client
from django.urls import reverse

from assistant.models import AnswerStatus
from audit.hashing import GENESIS_HASH, canonical_json, content_hash, record_content, time_text
from audit.ledger import audit_flag, ledger_append, settings_record_if_changed
from audit.models import AuditEvent, AuditFlag, AuditRecord
from audit.review import AuditFilters, audit_records_filtered
from ingestion.access import access_tags_for_user, groups_of_tags
from ingestion.models import Document
from ingestion.services import document_delete, document_set_access, document_upload_bytes

pytestmark = pytest.mark.django_db

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the trigger and row locks are PostgreSQL's"
)

LEDGER_TABLE = AuditRecord._meta.db_table


def answer_details(number: int = 1, *, status: str = AnswerStatus.ANSWERED) -> dict[str, Any]:
    """What the answering service passes: the evidence, the prompt and the outcome."""
    passage = {
        "n": 1,
        "rank": 1,
        "point_id": str(uuid.uuid4()),
        "document_id": 41,
        "version_id": 7,
        "title": "Travel policy",
        "page": 2,
        "heading": "Hotels",
        "score": 0.8123,
        "text": "Employees stay within the nightly limit of 180 euros.",
    }
    return {
        "question": f"What is the hotel limit? ({number})",
        "searched_query": "hotel nightly limit",
        "passages": [passage],
        "prompt": [{"role": "user", "content": "Answer from the sources. [1] Employees stay..."}],
        "model": "deepseek-r1",
        "endpoint": "http://vllm-1:8000/v1",
        "sampling": {"temperature": 0.6, "top_p": 0.95},
        "reasoning": "The source says 180 euros.",
        "answer": "The limit is 180 euros a night [1]." if status == "answered" else "",
        "citations": [1] if status == "answered" else [],
        "dropped_citations": [],
        "first_token_ms": 312.5,
        "total_ms": 2045.0,
        "status": status,
        "error": "The model server did not answer in time." if status == "failed" else "",
    }


def append_answer(user: User, number: int = 1, **kwargs: Any) -> AuditRecord:
    # The answering service names the groups its search ran with.
    details = {
        **answer_details(number, **kwargs),
        "acl_groups": groups_of_tags(access_tags_for_user(user)),
    }
    with transaction.atomic():
        return ledger_append(event=AuditEvent.ANSWER, actor=user, details=details)


@pytest.fixture
def employee(django_user_model: type[User]) -> User:
    user = django_user_model.objects.create_user("erin", password="a-long-password")
    user.groups.add(Group.objects.create(name="finance"))
    return user


def verify_output(*args: str) -> tuple[int, str]:
    """audit_verify's exit status and its last line."""
    out = io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=out)
        status = 0
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    return status, out.getvalue().strip().splitlines()[-1]


@pytest.fixture
def tamperable() -> None:
    """Hand edits need the append-only triggers out of the way, as a database owner could."""
    if connection.vendor == "postgresql":
        # ALTER TABLE waits for no deferred foreign key checks: run them now.
        raw("SET CONSTRAINTS ALL IMMEDIATE")
        for table in (LEDGER_TABLE, "assistant_auditreference"):
            raw(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        raw("SET CONSTRAINTS ALL DEFERRED")


def delete_records(condition: str, params: list[Any]) -> None:
    """Remove records by hand, with the filter rows that point at them."""
    raw(
        f"DELETE FROM assistant_auditreference WHERE record_id IN "
        f"(SELECT sequence FROM {LEDGER_TABLE} WHERE {condition})",
        params,
    )
    raw(f"DELETE FROM {LEDGER_TABLE} WHERE {condition}", params)


def raw(sql: str, params: list[Any] | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])


def test_records_form_one_chain_from_the_genesis_hash(employee: User) -> None:
    records = [append_answer(employee, number) for number in range(1, 4)]
    start = AuditRecord.objects.order_by("sequence").first()
    assert start is not None
    assert start.prev_hash == GENESIS_HASH
    chain = list(AuditRecord.objects.order_by("sequence"))
    assert [r.sequence for r in chain] == list(range(1, len(chain) + 1))
    for previous, record in itertools.pairwise(chain):
        assert record.prev_hash == previous.hash
    assert chain[-1].hash == records[-1].hash
    status, last_line = verify_output()
    assert status == 0
    assert "The chain is intact" in last_line


def test_a_hash_is_sha256_of_the_canonical_json_of_the_record(employee: User) -> None:
    record = append_answer(employee)
    record.refresh_from_db()
    content = {
        "sequence": record.sequence,
        "time": record.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "event": "answer",
        "actor": {"id": employee.pk, "username": "erin"},
        "details": json.loads(record.details),
        "prev_hash": record.prev_hash,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == record.hash


def test_abstained_and_failed_answers_are_found_by_their_status(employee: User) -> None:
    append_answer(employee, 1)
    abstained = append_answer(employee, 2, status=AnswerStatus.ABSTAINED)
    failed = append_answer(employee, 3, status=AnswerStatus.FAILED)
    assert list(audit_records_filtered(AuditFilters(status="abstained"))) == [abstained]
    assert list(audit_records_filtered(AuditFilters(status="failed"))) == [failed]


def test_filters_find_records_by_cited_document_group_and_words(employee: User) -> None:
    cited = append_answer(employee, 1)
    uncited = append_answer(employee, 2, status=AnswerStatus.ABSTAINED)
    finance = employee.groups.get()
    assert list(audit_records_filtered(AuditFilters(document_id=41))) == [cited]
    group_records = list(audit_records_filtered(AuditFilters(group_id=finance.pk, event="answer")))
    assert group_records == [uncited, cited]
    assert list(audit_records_filtered(AuditFilters(text="180 euros"))) == [cited]
    assert list(audit_records_filtered(AuditFilters(username="nobody"))) == []


@pytest.mark.django_db(transaction=True)
def test_the_ledger_is_written_only_inside_a_transaction(employee: User) -> None:
    with pytest.raises(transaction.TransactionManagementError):
        ledger_append(event="answer", actor=employee, details=answer_details())


def test_times_ids_and_non_numbers_are_stored_as_plain_json(employee: User) -> None:
    point = uuid.uuid4()
    with transaction.atomic():
        record = ledger_append(
            event=AuditEvent.SETTINGS_CHANGED,
            actor=None,
            details={
                "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                "point": point,
                "score": float("nan"),
                "summary": "Zürich \x00 settings",
            },
        )
    assert json.loads(record.details) == {
        "at": "2026-01-02T03:04:05.000000+00:00",
        "point": str(point),
        "score": None,
        "summary": "Zürich \x00 settings",
    }
    assert AuditRecord.objects.get(sequence=record.sequence).summary == "Zürich  settings"
    assert verify_output()[0] == 0


def test_record_content_equals_the_canonical_json_of_the_record() -> None:
    details = {"b": [1, 2.5, None], "a": 'ünïcode \u2028 "quoted"'}
    fields: dict[str, Any] = {
        "sequence": 12,
        "time": time_text(datetime(2026, 5, 6, tzinfo=UTC)),
        "event": "answer",
        "prev_hash": "ab" * 32,
    }
    built = record_content(
        **fields, actor_id=3, actor_username="zoë", details_json=canonical_json(details)
    )
    expected = {**fields, "actor": {"id": 3, "username": "zoë"}, "details": details}
    assert built == canonical_json(expected)
    assert content_hash(built) == hashlib.sha256(canonical_json(expected).encode()).hexdigest()


@postgresql_only
@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {LEDGER_TABLE} SET details = '{{}}' WHERE sequence = 1",
        f"DELETE FROM {LEDGER_TABLE} WHERE sequence = 1",
        "DELETE FROM assistant_audithead",
        "DELETE FROM assistant_auditreference",
    ],
)
def test_the_database_refuses_to_change_or_remove_records(employee: User, statement: str) -> None:
    append_answer(employee)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        raw(statement)
    assert verify_output()[0] == 0


def test_a_hand_edited_record_is_named(employee: User, tamperable: None) -> None:
    for number in range(1, 6):
        append_answer(employee, number)
    target = AuditRecord.objects.filter(event="answer").order_by("sequence")[2].sequence
    raw(
        f"UPDATE {LEDGER_TABLE} SET details = replace(details, '180 euros', '280 euros') "
        "WHERE sequence = %s",
        [target],
    )
    status, last_line = verify_output()
    assert status == 1
    assert last_line.startswith(f"Broken at record {target} (edited)")


def test_an_edited_filter_column_is_named(employee: User, tamperable: None) -> None:
    record = append_answer(employee, status=AnswerStatus.FAILED)
    raw(f"UPDATE {LEDGER_TABLE} SET status = 'answered' WHERE sequence = %s", [record.sequence])
    status, last_line = verify_output()
    assert status == 1
    assert f"record {record.sequence} (edited)" in last_line
    assert "status column" in last_line


def test_a_deleted_record_is_named(employee: User, tamperable: None) -> None:
    records = [append_answer(employee, number) for number in range(1, 5)]
    delete_records("sequence = %s", [records[1].sequence])
    assert verify_output() == (
        1,
        f"Broken at record {records[1].sequence} (deleted): record {records[1].sequence} "
        f"is missing (deleted): the sequence jumps to {records[2].sequence}",
    )


def test_deleting_the_newest_records_is_caught_by_the_head(
    employee: User, tamperable: None
) -> None:
    records = [append_answer(employee, number) for number in range(1, 5)]
    delete_records("sequence >= %s", [records[-2].sequence])
    status, last_line = verify_output()
    assert status == 1
    assert last_line.startswith(f"Broken at record {records[-2].sequence} (deleted)")


def _forged_copy(record: AuditRecord, *, sequence: int, prev_hash: str) -> list[Any]:
    """A record a forger computed correctly, hash and all, for a chosen place in the chain."""
    created_at = record.created_at
    digest = content_hash(
        record_content(
            sequence=sequence,
            time=time_text(created_at),
            event=record.event,
            actor_id=record.actor_id,
            actor_username=record.actor_username,
            details_json=record.details,
            prev_hash=prev_hash,
        )
    )
    return [
        sequence,
        created_at,
        record.event,
        record.actor_id,
        record.actor_username,
        record.details,
        prev_hash,
        digest,
        record.status,
        record.model_name,
        record.summary,
        record.search_text,
    ]


INSERT_COLUMNS = (
    "sequence, created_at, event, actor_id, actor_username, details, prev_hash, hash, "
    "status, model_name, summary, search_text"
)


def _shift_up_from(sequence: int) -> None:
    # Two steps, so that no two rows ever share a sequence number on the way.
    raw(f"UPDATE {LEDGER_TABLE} SET sequence = -sequence - 1 WHERE sequence >= %s", [sequence])
    raw(f"UPDATE {LEDGER_TABLE} SET sequence = -sequence WHERE sequence < 0")


def test_a_forged_record_inserted_in_the_middle_is_named(employee: User, tamperable: None) -> None:
    records = [append_answer(employee, number) for number in range(1, 6)]
    place = records[2].sequence
    _shift_up_from(place)
    forged = _forged_copy(records[0], sequence=place, prev_hash=records[1].hash)
    raw(f"INSERT INTO {LEDGER_TABLE} ({INSERT_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})", forged)
    status, last_line = verify_output()
    assert status == 1
    assert last_line.startswith(f"Broken at record {place} (inserted)")


def test_a_forged_record_appended_after_the_head_is_named(employee: User, tamperable: None) -> None:
    records = [append_answer(employee, number) for number in range(1, 4)]
    place = records[-1].sequence + 1
    forged = _forged_copy(records[0], sequence=place, prev_hash=records[-1].hash)
    raw(f"INSERT INTO {LEDGER_TABLE} ({INSERT_COLUMNS}) VALUES ({', '.join(['%s'] * 12)})", forged)
    status, last_line = verify_output()
    assert status == 1
    assert last_line.startswith(f"Broken at record {place} (inserted)")


def test_two_swapped_records_are_named(employee: User, tamperable: None) -> None:
    records = [append_answer(employee, number) for number in range(1, 6)]
    first, second = records[1].sequence, records[2].sequence
    raw(f"UPDATE {LEDGER_TABLE} SET sequence = -1 WHERE sequence = %s", [first])
    raw(f"UPDATE {LEDGER_TABLE} SET sequence = %s WHERE sequence = %s", [first, second])
    raw(f"UPDATE {LEDGER_TABLE} SET sequence = %s WHERE sequence = -1", [second])
    status, last_line = verify_output()
    assert status == 1
    assert last_line.startswith(f"Broken at record {first} (reordered)")


def test_verification_can_start_at_a_record(employee: User, tamperable: None) -> None:
    records = [append_answer(employee, number) for number in range(1, 5)]
    raw(f"UPDATE {LEDGER_TABLE} SET details = '{{}}' WHERE sequence = %s", [records[0].sequence])
    assert verify_output()[0] == 1
    status, last_line = verify_output("--from", str(records[2].sequence))
    assert status == 0
    assert f"record {records[-1].sequence} has hash {records[-1].hash}" in last_line


@postgresql_only
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_answers_form_one_linear_chain(employee: User) -> None:
    start = threading.Barrier(20)
    failures: list[BaseException] = []

    def answer(number: int) -> None:
        try:
            start.wait()
            append_answer(employee, number)
        except BaseException as error:
            failures.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=answer, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    answers = AuditRecord.objects.filter(event="answer").order_by("sequence")
    assert answers.count() == 20
    chain = list(
        AuditRecord.objects.order_by("sequence").values_list("sequence", "prev_hash", "hash")
    )
    assert [sequence for sequence, _, _ in chain] == list(range(1, len(chain) + 1))
    assert len({prev for _, prev, _ in chain}) == len(chain)
    assert verify_output()[0] == 0


def test_document_acts_are_recorded_with_the_acting_admin(
    admin_client: Client, admin_user: User
) -> None:
    readers = Group.objects.create(name="readers")
    first = document_upload_bytes(
        name="policy.md", data=b"# Policy\n\nFirst text.\n", user=admin_user
    )
    document_upload_bytes(
        name="policy.md", data=b"# Policy\n\nSecond text.\n", source_path="policy.md"
    )
    assert first.version is not None
    document = first.version.document
    response = admin_client.post(
        reverse("ingestion:document-access", args=[document.pk]), {"groups": [readers.pk]}
    )
    assert response.status_code == 302
    document_delete(document=document)

    records = AuditRecord.objects.filter(event__startswith="document.").order_by("sequence")
    assert [r.event for r in records] == [
        "document.uploaded",
        "document.version_added",
        "document.access_changed",
        "document.deleted",
    ]
    uploaded, added, access, _ = (json.loads(r.details) for r in records)
    assert records[0].actor_username == admin_user.username
    assert uploaded["version"]["number"] == 1
    assert added["version"]["number"] == 2
    assert access["before"]["groups"] == []
    assert access["groups"] == [{"id": readers.pk, "name": "readers"}]
    assert records[2].actor_username == admin_user.username
    assert response["X-Request-ID"] == access["request_id"]
    newest_first = list(records)[::-1]
    assert list(audit_records_filtered(AuditFilters(document_id=document.pk))) == newest_first


def test_user_and_group_changes_are_recorded(django_user_model: type[User]) -> None:
    sales = Group.objects.create(name="sales")
    user = django_user_model.objects.create_user("frank", password="a-long-password")
    user.groups.add(sales)
    user.groups.remove(sales)
    sales.user_set.add(user)

    summaries = list(
        AuditRecord.objects.filter(event__in=["user.changed", "group.changed"])
        .order_by("sequence")
        .values_list("summary", flat=True)
    )
    assert summaries == [
        "Group sales created",
        "User frank created",
        "User frank added to groups sales",
        "User frank removed from groups sales",
        "Group sales: frank added",
    ]


def test_signing_in_is_recorded_as_a_sign_in_not_as_a_change(
    client: Client, employee: User
) -> None:
    before = AuditRecord.objects.count()
    assert client.login(username="erin", password="a-long-password")
    added = AuditRecord.objects.filter(sequence__gt=before)
    assert [(record.event, record.actor_username) for record in added] == [
        ("user.signed_in", "erin")
    ]


def test_documents_cited_or_on_hold_cannot_be_purged(employee: User) -> None:
    cited = Document.objects.create(title="Travel policy", source_path="travel.md")
    held = Document.objects.create(title="Contract", source_path="contract.md", legal_hold=True)
    free = Document.objects.create(title="Draft", source_path="draft.md")
    details = answer_details()
    details["passages"][0]["document_id"] = cited.pk
    with transaction.atomic():
        ledger_append(event="answer", actor=employee, details=details)

    for document in (cited, held):
        with pytest.raises(ProtectedError), transaction.atomic():
            document.delete()
    document_delete(document=cited)
    cited.refresh_from_db()
    assert cited.deleted_at is not None
    free.delete()
    assert not Document.objects.filter(pk=free.pk).exists()


def test_settings_that_shape_answers_are_recorded_when_they_change(settings: Any) -> None:
    first = settings_record_if_changed()
    assert first is not None
    assert settings_record_if_changed() is None
    settings.RETRIEVAL_TOP_K = 3
    changed = settings_record_if_changed()
    assert changed is not None
    assert json.loads(changed.details)["changed"] == ["RETRIEVAL_TOP_K"]


def test_a_flag_is_a_new_record_and_leaves_the_flagged_one_alone(employee: User) -> None:
    target = append_answer(employee)
    flag = audit_flag(target=target, actor=None, note="Cites a withdrawn policy.")
    assert flag.event == "audit.flagged"
    assert AuditFlag.objects.get(record=flag).target_id == target.sequence
    assert AuditRecord.objects.get(sequence=target.sequence).hash == target.hash
    assert list(audit_records_filtered(AuditFilters(flagged=True))) == [target]
    assert target not in audit_records_filtered(AuditFilters(flagged=False))
    assert verify_output()[0] == 0


def test_changing_access_records_who_could_read_before(employee: User) -> None:
    finance = employee.groups.get()
    document = Document.objects.create(title="Budget", source_path="budget.md", is_public=True)
    document_set_access(document=document, groups=[finance], is_public=False)
    record = AuditRecord.objects.get(event="document.access_changed")
    details = json.loads(record.details)
    assert details["before"] == {"is_public": True, "groups": []}
    assert details["is_public"] is False
    assert details["groups"] == [{"id": finance.pk, "name": "finance"}]
