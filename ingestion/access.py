"""Who may read what: the one place the access rule is written.

A passage carries the tags of its document (`group:<id>` per group, `public` when everyone
may read it); a user holds `public` and one tag per group they belong to. Every read path
(search, answers, citations, the passage viewer, downloads) asks these functions.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Q, QuerySet

from ingestion.models import PUBLIC_TAG, Chunk, Document, group_tag


def _group_ids(user: AbstractBaseUser) -> list[int]:
    return list(Group.objects.filter(user__pk=user.pk).values_list("id", flat=True))


def access_tags_for_user(user: AbstractBaseUser | AnonymousUser) -> frozenset[str]:
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    group_ids = _group_ids(user)
    return frozenset({PUBLIC_TAG, *(group_tag(group_id) for group_id in group_ids)})


def readable_documents(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Document]:
    """Documents the user may read: live, and public or shared with one of their groups."""
    if not user.is_authenticated or not user.is_active:
        return Document.objects.none()
    group_ids = _group_ids(user)
    return (
        Document.objects.filter(deleted_at__isnull=True)
        .filter(Q(is_public=True) | Q(groups__id__in=group_ids))
        .distinct()
    )


def readable_chunks(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Chunk]:
    return Chunk.objects.filter(version__document__in=readable_documents(user))
