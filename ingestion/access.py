"""Who may read and manage what: the one home of the access rule.

A passage carries the tags of its document (`group:<id>` per group, `public` when everyone
may read it); a user holds `public` and one tag per group they belong to. Every read path
(portal, passage viewer, downloads, search, answers, REST, the OpenAI endpoint, audit pages,
admin) asks these functions; the vector index backends only translate the `PointScope` built
here into their own filters. The roles themselves (who is an auditor or administers which
group) are accounts/roles.py.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.db.models import Q, QuerySet

from accounts.roles import (
    administered_groups,
    is_active_user,
    is_auditor,
    is_document_admin,
    is_superuser,
)
from audit.models import AuditReference, AuditReferenceKind
from ingestion.models import GROUP_TAG_PREFIX, PUBLIC_TAG, Chunk, Document, group_tag
from ingestion.vector_index.base import PointScope

Someone = AbstractBaseUser | AnonymousUser

# The administrative acts on documents; document admins read these records and no others.
DOCUMENT_EVENT_PREFIX = "document."


# ---- Tags: what a reader holds and what a document carries --------------------------------


def _group_ids(user: AbstractBaseUser) -> list[int]:
    return list(Group.objects.filter(user__pk=user.pk).values_list("id", flat=True))


def access_tags_for_user(user: Someone) -> frozenset[str]:
    if not is_active_user(user):
        return frozenset()
    group_ids = _group_ids(user)
    return frozenset({PUBLIC_TAG, *(group_tag(group_id) for group_id in group_ids)})


def document_access_tags(document: Document) -> list[str]:
    """The tags stored on each passage of a document; a reader needs one of them."""
    return documents_access_tags([document])[document.pk]


def documents_access_tags(documents: Collection[Document]) -> dict[int, list[str]]:
    """`document_access_tags` of many documents, by document id, read in one query."""
    group_ids_of: dict[int, list[int]] = {document.pk: [] for document in documents}
    memberships = Document.groups.through.objects.filter(document_id__in=group_ids_of)
    for document_id, group_id in memberships.values_list("document_id", "group_id"):
        group_ids_of[document_id].append(group_id)
    return {
        document.pk: sorted(
            [group_tag(group_id) for group_id in group_ids_of[document.pk]]
            + ([PUBLIC_TAG] if document.is_public else [])
        )
        for document in documents
    }


def groups_of_tags(tags: Collection[str]) -> list[dict[str, object]]:
    """The groups that `tags` name, as {"id", "name"}: what a search with them could read."""
    group_tags = [tag for tag in tags if tag.startswith(GROUP_TAG_PREFIX)]
    numbers = (tag.removeprefix(GROUP_TAG_PREFIX) for tag in group_tags)
    ids = sorted(int(number) for number in numbers if number.isdigit())
    names = dict(Group.objects.filter(id__in=ids).values_list("id", "name"))
    return [{"id": group_id, "name": names[group_id]} for group_id in ids if group_id in names]


def index_scope(
    access_tags: Collection[str],
    *,
    only_active: bool,
    document_ids: Collection[int] | None = None,
) -> PointScope | None:
    """The passages a person holding `access_tags` may read, or None when they may read none.

    Both vector index backends search only inside this scope, as a filter of the query itself.
    `document_ids` narrows it to the documents the person chose; the access tags still hold,
    so choosing a document they may not read finds nothing of it, exactly like choosing one
    that does not exist.
    """
    if isinstance(access_tags, str):
        # A lone string is a collection of its characters: refuse it rather than match
        # tags nobody meant.
        raise TypeError("access_tags must be a collection of tags, not a single string")
    tags = sorted({tag for tag in access_tags if tag})
    if not tags:
        return None
    if document_ids is not None:
        chosen = sorted({int(document_id) for document_id in document_ids})
        if not chosen:
            return None
        return PointScope(
            groups_any=tags, document_ids=chosen, active=True if only_active else None
        )
    return PointScope(groups_any=tags, active=True if only_active else None)


# ---- Documents: readable and manageable ----------------------------------------------------


def readable_documents(user: Someone) -> QuerySet[Document]:
    """Documents the user may read: live, and public or shared with one of their groups."""
    if not is_active_user(user):
        return Document.objects.none()
    group_ids = _group_ids(user)
    return (
        Document.objects.filter(deleted_at__isnull=True)
        .filter(Q(is_public=True) | Q(groups__id__in=group_ids))
        .distinct()
    )


def readable_document_choice(
    user: Someone, *, document_ids: Collection[int] = (), group_ids: Collection[int] = ()
) -> frozenset[int]:
    """The documents a reader chose to ask within: those named, and those shared with the
    named groups, that they may read. Anything else they named is left out without a word,
    so a choice reveals nothing of what exists beyond their access."""
    own_groups = set(_group_ids(user)) if is_active_user(user) else set()
    chosen = Q(id__in=list(document_ids)) | Q(groups__id__in=own_groups & set(group_ids))
    return frozenset(readable_documents(user).filter(chosen).values_list("id", flat=True))


def readable_chunks(user: Someone) -> QuerySet[Chunk]:
    return Chunk.objects.filter(version__document__in=readable_documents(user))


def manageable_documents(user: Someone, *, include_deleted: bool = False) -> QuerySet[Document]:
    """Documents the user may manage: for a document admin, those read by their groups only.

    A document everyone may read, or that no group may read, is a superuser's alone: a group's
    administrator must not decide for the whole company.
    """
    documents = Document.objects.all()
    if not include_deleted:
        documents = documents.filter(deleted_at__isnull=True)
    if not is_active_user(user):
        return documents.none()
    if is_superuser(user):
        return documents
    administered = administered_groups(user)
    return (
        documents.filter(is_public=False)
        .exclude(groups__isnull=True)
        .exclude(groups__in=Group.objects.exclude(pk__in=administered.values("pk")))
    )


def can_manage_document(user: Someone, document: Document) -> bool:
    if not is_active_user(user):
        return False
    if is_superuser(user):
        return True
    return manageable_documents(user, include_deleted=True).filter(pk=document.pk).exists()


def documents_seen_by(user: Someone) -> QuerySet[Document]:
    """What the access rule lets the user read, and the documents they manage."""
    return Document.objects.filter(
        Q(id__in=readable_documents(user).values("id"))
        | Q(id__in=manageable_documents(user).values("id"))
    )


# ---- The audit log: which records a person may review ---------------------------------------


def audit_scope_for(user: Someone) -> Q | None:
    """The records a user may read in the audit pages and exports; None when they may not look.

    Auditors (and superusers) read everything. Document admins read the administrative records
    of the documents they manage (deleted ones too), and never answers, users, groups, settings
    or the auditors' own records. Everyone else reads nothing.
    """
    if not is_active_user(user):
        return None
    if is_auditor(user):
        return Q()
    if not is_document_admin(user):
        return None
    managed = manageable_documents(user, include_deleted=True)
    subjects = AuditReference.objects.filter(
        kind=AuditReferenceKind.DOCUMENT_SUBJECT, target_id__in=managed.values("pk")
    )
    return Q(event__startswith=DOCUMENT_EVENT_PREFIX, sequence__in=subjects.values("record_id"))


# ---- Insight: the usage and knowledge-gap pages ----------------------------------------------


@dataclass(frozen=True)
class InsightScope:
    """What one person may see on the usage and knowledge-gap pages (docs/PERMISSIONS.md).

    Answers are counted by the groups the asker read with when they asked (the `acl_groups` of
    the answer's ledger records): every answer when `group_ids` is None. Documents are named,
    counted and quoted only among `documents`. Who asked is shown only when `names_people`.
    Gaps are marked resolved only among the answers of `resolve_group_ids` (None: every answer)
    and only when `may_resolve`.
    """

    group_ids: frozenset[int] | None
    documents: QuerySet[Document]
    names_people: bool
    may_resolve: bool
    resolve_group_ids: frozenset[int] | None

    @property
    def every_answer(self) -> bool:
        return self.group_ids is None


def insight_scope_for(user: Someone) -> InsightScope | None:
    """The usage and gap pages' scope for a user; None when they may not open them.

    Auditors (and superusers) read every answer record and every passage in the audit log:
    here they see every answer, every document, and who asked. A document admin sees the
    answers of people who read with a group they administer, names and quotes only the
    documents they may read or manage (`documents_seen_by`), and never sees who asked: the
    audit log shows them no answers, so this page shows them no people. Curating is for
    document admins and superusers: they mark gaps resolved, within the answers they see
    as admins; an auditor who administers nothing only reads.
    """
    if not is_active_user(user):
        return None
    administered = frozenset(administered_groups(user).values_list("id", flat=True))
    if is_auditor(user):
        everything = is_superuser(user)
        return InsightScope(
            group_ids=None,
            documents=Document.objects.all(),
            names_people=True,
            may_resolve=everything or bool(administered),
            resolve_group_ids=None if everything else administered,
        )
    if not administered:
        return None
    return InsightScope(
        group_ids=administered,
        documents=documents_seen_by(user),
        names_people=False,
        may_resolve=True,
        resolve_group_ids=administered,
    )
