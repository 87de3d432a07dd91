"""Writes for the portal: conversation housekeeping and feedback on answers."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.utils import timezone

from assistant.models import Answer, Conversation, Feedback, FeedbackRating

CONVERSATION_TITLE_MAX_CHARS = 200
FEEDBACK_COMMENT_MAX_CHARS = 2000


class PortalInputError(ValueError):
    """The request cannot be carried out as sent; the message tells the user why."""


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    clean_title = " ".join(title.split())
    if not clean_title:
        raise PortalInputError("Please give the conversation a name.")
    if len(clean_title) > CONVERSATION_TITLE_MAX_CHARS:
        raise PortalInputError(
            f"The name is {len(clean_title)} characters long; the limit is "
            f"{CONVERSATION_TITLE_MAX_CHARS}."
        )
    conversation.title = clean_title
    # Renaming is not using: the conversation keeps its place in the list.
    Conversation.objects.filter(id=conversation.id).update(title=clean_title)
    return conversation


def conversation_hide(*, conversation: Conversation) -> Conversation:
    """Take the conversation off its owner's list; its answers and their audit records stay."""
    if conversation.hidden_at is None:
        conversation.hidden_at = timezone.now()
        Conversation.objects.filter(id=conversation.id).update(hidden_at=conversation.hidden_at)
    return conversation


def feedback_give(*, user: User, answer: Answer, rating: int, comment: str = "") -> Feedback:
    """Record or replace the user's verdict on one of their answers."""
    if rating not in FeedbackRating.values:
        raise PortalInputError("Choose helpful or not helpful.")
    clean_comment = comment.strip()
    if len(clean_comment) > FEEDBACK_COMMENT_MAX_CHARS:
        raise PortalInputError(
            f"The comment is {len(clean_comment)} characters long; the limit is "
            f"{FEEDBACK_COMMENT_MAX_CHARS}."
        )
    feedback, _ = Feedback.objects.update_or_create(
        answer=answer, user=user, defaults={"rating": rating, "comment": clean_comment}
    )
    return feedback
