"""The ledger record of an answer, built once from the saved answer and what made it.

What an auditor reads is what the employee saw (the saved `Answer`), the evidence the model
was shown, the prompt and sampling, and the access tags the search ran with, with the groups
those tags name. Nothing is read again at save time that could differ from what was used.
`audit_verify` compares each saved answer with its record (`answer_rows_problem`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from assistant.models import Answer
from audit.models import AuditEvent
from audit.verify import ChainProblem, VerifiedRecord
from ingestion.access import groups_of_tags


def answer_record_details(
    answer: Answer,
    *,
    access_tags: Collection[str],
    prompt: Sequence[Mapping[str, str]],
    sampling: Mapping[str, Any],
    usage: Mapping[str, Any],
    document_choice: Collection[int] | None = None,
) -> dict[str, Any]:
    """The details of an `answer` record, for `ledger_append`."""
    return {
        **_question_details(answer, access_tags, document_choice),
        "prompt": list(prompt),
        "mode": answer.mode,
        "model": answer.model_name,
        "model_name": answer.model_name,
        "endpoint": answer.endpoint,
        "sampling": dict(sampling),
        "reasoning": answer.reasoning,
        "answer": answer.answer,
        "citations": [citation["n"] for citation in answer.citations],
        "dropped_citations": answer.dropped_citations,
        "usage": dict(usage),
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "first_token_ms": answer.first_token_ms,
        "total_ms": answer.total_ms,
        "status": answer.status,
        "error": answer.error,
    }


def answer_start_details(
    answer: Answer,
    *,
    access_tags: Collection[str],
    document_choice: Collection[int] | None = None,
) -> dict[str, Any]:
    """The details of an `answer.started` record: written before the first byte streams.

    Whatever happens to the process afterwards, the ledger knows who asked what, with which
    groups, and which passages the model was given.
    """
    return {
        **_question_details(answer, access_tags, document_choice),
        "mode": answer.mode,
        "summary": answer.question[:300],
    }


def _question_details(
    answer: Answer, access_tags: Collection[str], document_choice: Collection[int] | None
) -> dict[str, Any]:
    """Who asked what, with which groups, and the passages the model was given; when the
    asker chose documents to ask within, which of those they may read were searched."""
    choice = {} if document_choice is None else {"document_choice": sorted(document_choice)}
    return {
        **choice,
        "answer_id": answer.pk,
        "conversation_id": answer.conversation_id,
        "question": answer.question,
        "searched_query": answer.searched_query,
        "access_tags": sorted(access_tags),
        "acl_groups": groups_of_tags(access_tags),
        "passages": [{**passage, "rank": passage["n"]} for passage in answer.passages],
    }


def _numbers(citations: Any) -> list[Any]:
    """Citations as their numbers, whether stored as passages or as numbers."""
    items = citations if isinstance(citations, list) else []
    return [item.get("n") if isinstance(item, Mapping) else item for item in items]


def _passage_texts(passages: Any) -> list[str]:
    items = passages if isinstance(passages, list) else []
    return [str(item.get("text", "")) for item in items if isinstance(item, Mapping)]


def answer_rows_problem(batch: Sequence[VerifiedRecord]) -> ChainProblem | None:
    """The first answer record whose saved answer was edited or deleted since it was written.

    Registered with the ledger's verification: the ledger vouches for what the employee saw.
    """
    by_answer = {
        record.details["answer_id"]: record
        for record in batch
        if record.event == AuditEvent.ANSWER and isinstance(record.details.get("answer_id"), int)
    }
    rows = {answer.pk: answer for answer in Answer.objects.filter(pk__in=list(by_answer))}
    for answer_id, record in sorted(by_answer.items(), key=lambda item: item[1].sequence):
        answer = rows.get(answer_id)
        if answer is None:
            return ChainProblem(
                record.sequence,
                "edited",
                f"answer {answer_id}, which record {record.sequence} vouches for, was deleted",
            )
        details = record.details
        saved = {
            "question": answer.question,
            "answer": answer.answer,
            "reasoning": answer.reasoning,
            "status": answer.status,
            "citations": _numbers(answer.citations),
            "passages": _passage_texts(answer.passages),
        }
        recorded = {
            "question": details.get("question"),
            "answer": details.get("answer"),
            "reasoning": details.get("reasoning"),
            "status": details.get("status"),
            "citations": _numbers(details.get("citations")),
            "passages": _passage_texts(details.get("passages")),
        }
        for name, value in saved.items():
            if value != recorded[name]:
                return ChainProblem(
                    record.sequence,
                    "edited",
                    f"answer {answer_id} was edited: its {name} differs from what record "
                    f"{record.sequence} vouches for",
                )
    return None
