"""The ledger record of an answer: built once from the saved answer and what made it."""

from __future__ import annotations

import hashlib
import json

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction

from assistant.answer_record import answer_record_details
from assistant.models import Answer, AnswerMode, AnswerStatus, Conversation
from audit.ledger import ledger_append
from audit.models import AuditEvent
from ingestion.access import access_tags_for_user
from tests.audit.test_ledger import answer_details

pytestmark = pytest.mark.django_db


@pytest.fixture
def employee(django_user_model: type[User]) -> User:
    user = django_user_model.objects.create_user("erin", password="a-long-password")
    user.groups.add(Group.objects.create(name="finance"))
    return user


def test_an_answer_record_holds_the_evidence_and_fills_what_the_answer_knows(
    employee: User,
) -> None:
    conversation = Conversation.objects.create(user=employee, title="Hotels")
    details = answer_details(status=AnswerStatus.FAILED)
    with transaction.atomic():
        answer = Answer.objects.create(
            conversation=conversation,
            user=employee,
            question=details["question"],
            searched_query=details["searched_query"],
            status=AnswerStatus.FAILED,
            mode=AnswerMode.LLM,
            model_name="deepseek-r1",
            error=details["error"],
            passages=details["passages"],
            prompt_tokens=812,
            completion_tokens=0,
        )
        record = ledger_append(
            event=AuditEvent.ANSWER,
            actor=employee,
            request_id="req-42",
            details=answer_record_details(
                answer,
                access_tags=access_tags_for_user(employee),
                prompt=details["prompt"],
                sampling=details["sampling"],
                usage={},
            ),
        )
    stored = json.loads(record.details)
    assert record.answer_id == answer.pk
    assert record.status == "failed"
    assert record.model_name == "deepseek-r1"
    assert stored["error"] == "The model server did not answer in time."
    assert stored["conversation_id"] == conversation.pk
    assert stored["prompt_tokens"] == 812
    assert stored["request_id"] == "req-42"
    # The groups recorded are those the search ran with: the tags, not a second reading.
    assert stored["acl_groups"] == [{"id": employee.groups.get().pk, "name": "finance"}]
    assert stored["access_tags"] == sorted(access_tags_for_user(employee))
    passage = stored["passages"][0]
    assert passage["content_sha256"] == hashlib.sha256(passage["text"].encode()).hexdigest()
    assert stored["prompt"][0]["content"].startswith("Answer from the sources.")
