"""The ledger record of an answer, built once from the saved answer and what made it.

What an auditor reads is what the employee saw (the saved `Answer`), the evidence the model
was shown, the prompt and sampling, and the access tags the search ran with, with the groups
those tags name. Nothing is read again at save time that could differ from what was used.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from assistant.models import Answer
from ingestion.access import groups_of_tags


def answer_record_details(
    answer: Answer,
    *,
    access_tags: Collection[str],
    prompt: Sequence[Mapping[str, str]],
    sampling: Mapping[str, Any],
    usage: Mapping[str, Any],
) -> dict[str, Any]:
    """The details of an `answer` record; `ledger_append(answer_id=answer.pk, ...)` takes them."""
    return {
        "answer_id": answer.pk,
        "conversation_id": answer.conversation_id,
        "question": answer.question,
        "searched_query": answer.searched_query,
        "access_tags": sorted(access_tags),
        "acl_groups": groups_of_tags(access_tags),
        "passages": [{**passage, "rank": passage["n"]} for passage in answer.passages],
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
