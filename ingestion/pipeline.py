"""What a queued document version goes through: parse (sandboxed), chunk, embed, index.

Celery tasks (cluster) and the in-process runner (standalone) call `versions_ingest`; a
version becomes READY only once search serves it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from config.metrics import record_passages_indexed
from ingestion.access import documents_access_tags
from ingestion.attachments import attachments_store
from ingestion.chunking import ChunkDraft, WordPieceCounter, chunk_document
from ingestion.models import FINAL_STATUSES, Chunk, Document, DocumentVersion, VersionStatus
from ingestion.parsing import ParsedDocument, ParseError
from ingestion.passage_vectors import HEADING_SEPARATOR, IndexedPassage, dense, passage_points
from ingestion.sandbox import (
    SHARED_CHILD_FILES,
    limits_from_settings,
    parse_document_isolated,
    parse_documents_isolated,
    shareable,
)
from ingestion.vector_index.base import IndexPoint, VectorIndex, point_id
from ingestion.vector_index.configured import vector_index

logger = logging.getLogger(__name__)


@cache
def _token_counter() -> WordPieceCounter:
    encoder = dense()
    return WordPieceCounter(
        encoder.model_path, tokenizer_json_matches=encoder.tokenizer_json_matches
    )


def _set_status(
    version_id: int, status: VersionStatus, message: str = "", **fields: object
) -> None:
    if status in FINAL_STATUSES:
        fields.setdefault("finished_at", timezone.now())
    DocumentVersion.objects.filter(id=version_id).update(
        status=status, status_message=message, **fields
    )


@dataclass(frozen=True)
class _Chunked:
    """A parsed file's passages, and what each of them carries into the index."""

    drafts: list[ChunkDraft]
    search_context: str
    has_attachments: bool


def _parse_and_chunk(versions: Sequence[DocumentVersion]) -> list[_Chunked | None]:
    """Parse the stored files and save their passages; None for each file that failed (recorded).

    The versions come from `_parse_group`: more than one only when they may share a parser
    child. A document's title, when its file gives one, is set on `version.document` too.
    """
    DocumentVersion.objects.filter(id__in=[version.id for version in versions]).update(
        status=VersionStatus.PARSING,
        status_message="",
        started_at=timezone.now(),
        attempts=F("attempts") + 1,
        chunks_done=0,
    )
    stored: dict[int, bytes] = {}
    for version in versions:
        try:
            with version.file.open("rb") as file:
                stored[version.id] = file.read()
        except FileNotFoundError:
            _set_status(version.id, VersionStatus.FAILED, "The stored file is missing.")
    # In a child process under memory and time limits: a hostile file fails alone.
    limits, sandbox = limits_from_settings()
    readable = [version for version in versions if version.id in stored]
    parsed_of: dict[int, ParsedDocument | ParseError] = {}
    if len(readable) == 1:
        (version,) = readable
        try:
            parsed_of[version.id] = parse_document_isolated(
                stored[version.id],
                version.original_name,
                limits=limits,
                sandbox=sandbox,
                # Scans are read page by page; the documents page shows how far.
                progress=lambda text: DocumentVersion.objects.filter(id=version.id).update(
                    status_message=text
                ),
            )
        except ParseError as error:
            parsed_of[version.id] = error
    elif readable:
        outcomes = parse_documents_isolated(
            [(stored[version.id], version.original_name) for version in readable],
            limits=limits,
            sandbox=sandbox,
        )
        parsed_of = {
            version.id: outcome for version, outcome in zip(readable, outcomes, strict=True)
        }
    chunked_of: dict[int, tuple[ParsedDocument, list[ChunkDraft]]] = {}
    for version in readable:
        chunked = _chunked(version, parsed_of[version.id])
        if chunked is not None:
            chunked_of[version.id] = chunked
    # The group's passages are written in one transaction, and in one statement of each kind
    # where they can be: with many small files, a transaction or statement per file made the
    # parser wait for the database once more per file.
    with transaction.atomic():
        # A re-delivered task starts over; deterministic point ids make the index side harmless.
        Chunk.objects.filter(version_id__in=list(chunked_of)).delete()
        Chunk.objects.bulk_create(
            chunk
            for version in readable
            if version.id in chunked_of
            for chunk in _chunk_rows(version, chunked_of[version.id][1])
        )
        return [
            _stored(version, *chunked_of[version.id]) if version.id in chunked_of else None
            for version in versions
        ]


def _chunk_rows(version: DocumentVersion, drafts: list[ChunkDraft]) -> Iterator[Chunk]:
    for draft in drafts:
        yield Chunk(
            version=version,
            index=draft.index,
            point_id=point_id(version.id, draft.index),
            text=draft.text,
            page=draft.page,
            heading=HEADING_SEPARATOR.join(draft.heading_path),
            token_count=draft.token_count,
        )


def _chunked(
    version: DocumentVersion, parsed: ParsedDocument | ParseError
) -> tuple[ParsedDocument, list[ChunkDraft]] | None:
    """The file's passages; None, and the version failed with the reason, if it has none."""
    try:
        if isinstance(parsed, ParseError):
            raise parsed
        drafts = chunk_document(
            parsed,
            _token_counter(),
            max_tokens=settings.CHUNK_MAX_TOKENS,
            overlap_tokens=settings.CHUNK_OVERLAP_TOKENS,
        )
        if not drafts:
            raise ParseError("The file has no extractable text.")
    except ParseError as error:
        _set_status(version.id, VersionStatus.FAILED, str(error))
        return None
    return parsed, drafts


def _stored(version: DocumentVersion, parsed: ParsedDocument, drafts: list[ChunkDraft]) -> _Chunked:
    """What the file said of itself, once its passages are saved; the version is EMBEDDING.

    Runs inside the group's transaction (`_parse_and_chunk`), without a savepoint of its own:
    one per file would cost two more statements, and a failure here fails the group anyway.
    """
    document = version.document
    if version.number == 1 and parsed.title and document.title != parsed.title:
        document.title = parsed.title[:500]
        document.updated_at = timezone.now()
        Document.objects.filter(id=document.id).update(
            title=document.title, updated_at=document.updated_at
        )
    context = search_context(parsed)
    attachments_store(version, parsed.attachments)
    DocumentVersion.objects.filter(id=version.id).update(
        status=VersionStatus.EMBEDDING,
        status_message="",
        detected_type=parsed.detected_type,
        chunks_total=len(drafts),
        search_context=context,
        metadata=[list(pair) for pair in parsed.metadata],
    )
    return _Chunked(drafts, context, has_attachments=bool(parsed.attachments))


# The opening words of a document that every passage carries into lexical search.
LEAD_WORDS = 30


def search_context(parsed: ParsedDocument) -> str:
    """Running headers and the opening words: what the whole document is, for every passage."""
    lead: list[str] = []
    for section in parsed.sections:
        lead.extend(section.text.split()[: LEAD_WORDS - len(lead)])
        if len(lead) >= LEAD_WORDS:
            break
    return "\n".join(part for part in (parsed.running_text, " ".join(lead)) if part)


def _versions_activate(indexed_with_tags: dict[int, list[str]]) -> None:
    """Make fully indexed versions the ones search serves, then drop older passages.

    `indexed_with_tags` maps each version to the access tags its passages were written
    with; if the document's readers changed meanwhile, the passages are corrected here.
    A version is READY only once search serves it: whoever sees READY and asks at once
    finds its passages.
    """
    finished: list[int] = []
    activate: list[int] = []
    retag: dict[int, list[str]] = {}
    stale_versions: list[int] = []
    deleted_documents: list[int] = []
    if not indexed_with_tags:
        return
    # One transaction for all the versions a batch completes: with many small files, one
    # per version made the parser wait for the database's write lock once more per file.
    # Rows are locked in id order, versions before documents, as every caller does.
    with transaction.atomic():
        versions_of = (
            DocumentVersion.objects.select_for_update().order_by("id").in_bulk(indexed_with_tags)
        )
        documents_of = (
            Document.objects.select_for_update()
            .order_by("id")
            .in_bulk({version.document_id for version in versions_of.values()})
        )
        # Read for all the versions at once: a query or four per file was most of the
        # bookkeeping when the files are small.
        number_of = dict(
            DocumentVersion.objects.filter(
                id__in={document.current_version_id for document in documents_of.values()}
            ).values_list("id", "number")
        )
        tags_now = documents_access_tags(documents_of.values())
        switched: dict[int, int] = {}  # document id -> the version it serves now
        for version_id, indexed_tags in indexed_with_tags.items():
            version = versions_of[version_id]
            document = documents_of[version.document_id]
            if version.status == VersionStatus.READY and document.current_version_id == version.id:
                # Another delivery of this task finished it first, and this one wrote its
                # passages again (switched off): switch them back on.
                activate.append(version.id)
                continue
            if version.status != VersionStatus.EMBEDDING:
                continue
            finished.append(version.id)
            if document.deleted_at is not None:
                deleted_documents.append(document.id)
                continue
            current_id = document.current_version_id
            if current_id is not None and number_of[current_id] > version.number:
                # An older version finished after a newer one: it is kept on record only.
                stale_versions.append(version.id)
                continue
            document.current_version_id = version.id
            number_of[version.id] = version.number
            switched[document.id] = version.id
            activate.append(version.id)
            if tags_now[document.id] != indexed_tags:
                retag[version.id] = tags_now[document.id]
        # One UPDATE that reads each document's new version from the versions switched on:
        # `bulk_update` built a CASE of every row in Python, most of this function's time.
        Document.objects.filter(id__in=switched).update(
            current_version=Subquery(
                DocumentVersion.objects.filter(
                    document_id=OuterRef("id"), id__in=list(switched.values())
                ).values("id")[:1]
            ),
            updated_at=timezone.now(),
        )
        # Older versions served until now, or finished a moment ago in this same call.
        stale_versions.extend(
            DocumentVersion.objects.filter(document_id__in=switched)
            .exclude(id__in=switched.values())
            .filter(Q(status=VersionStatus.READY) | Q(id__in=finished))
            .values_list("id", flat=True)
        )
    index = vector_index()
    for version_id, tags in retag.items():
        index.set_payload(
            values={"groups": tags},
            document_id=versions_of[version_id].document_id,
            version_id=version_id,
        )
    index.activate_versions(activate)
    for version_id in dict.fromkeys(stale_versions):
        index.delete(version_id=version_id)
    for document_id in deleted_documents:
        index.delete(document_id=document_id)
    # A version cancelled meanwhile stays cancelled.
    DocumentVersion.objects.filter(id__in=finished, status=VersionStatus.EMBEDDING).update(
        status=VersionStatus.READY, chunks_done=F("chunks_total"), finished_at=timezone.now()
    )


def _parse_group(
    versions: Sequence[DocumentVersion], start: int, tags_of: Callable[[DocumentVersion], list[str]]
) -> list[DocumentVersion]:
    """The versions from `start` on that are parsed together.

    Small text and Markdown files that the same people may read share a parser child (see
    `ingestion.sandbox`); every other file is parsed alone.
    """
    first = versions[start]
    group = [first]
    if not shareable(first.original_name, first.size_bytes):
        return group
    for version in versions[start + 1 : start + SHARED_CHILD_FILES]:
        if (
            version.is_final
            or not shareable(version.original_name, version.size_bytes)
            or tags_of(version) != tags_of(first)
        ):
            break
        group.append(version)
    return group


def _attachments_queued(message: DocumentVersion) -> list[DocumentVersion]:
    return list(
        DocumentVersion.objects.filter(
            document__attached_to_id=message.document_id, status=VersionStatus.QUEUED
        )
        .select_related("document")
        .order_by("id")
    )


# Parsing runs ahead of the encoder by at most this many batches: the encoder never waits for
# the parser, and memory stays bounded. (The encoder sorts each batch by length itself.)
_PARSE_AHEAD_BATCHES = 2


# Files claimed at once by `versions_claim_queued`.
FILES_PER_CLAIM = 256


def versions_claim_queued(limit: int = FILES_PER_CLAIM) -> list[int]:
    """Take the oldest queued versions for ingestion here (marked PARSING); their ids."""
    with transaction.atomic():
        ids = list(
            DocumentVersion.objects.filter(status=VersionStatus.QUEUED)
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        if ids:
            DocumentVersion.objects.filter(id__in=ids, status=VersionStatus.QUEUED).update(
                status=VersionStatus.PARSING
            )
    return ids


def _versions_loaded(version_ids: Sequence[int]) -> list[DocumentVersion]:
    return list(
        DocumentVersion.objects.filter(id__in=version_ids).select_related("document").order_by("id")
    )


def versions_ingest(version_ids: Sequence[int], *, join_queued: bool = False) -> dict[int, str]:
    """Parse, chunk, embed and index versions; chunks of many small files share batches.

    Every file fails alone: a broken one ends FAILED with its reason and the rest go on.
    Returns each version's final status.

    Three stages overlap: this thread parses (in the sandbox) and keeps the books in the
    database, one thread embeds, one writes into the index, each batch in order.

    With `join_queued` (the standalone runner, the one process that ingests), versions queued
    meanwhile join this run when the parser reaches the end of its list: the encoder goes on
    from one file to the next instead of finishing each run alone, with one core idle, and
    files uploaded one by one still fill whole batches.
    """
    versions = _versions_loaded(version_ids)
    handled = list(version_ids)
    remaining: dict[int, int] = {}
    tags_of: dict[int, list[str]] = {}
    chunked_of: dict[int, _Chunked] = {}
    cancelled: set[int] = set()
    finished_elsewhere: set[int] = set()
    parsed_ahead: list[tuple[DocumentVersion, ChunkDraft]] = []
    in_flight: deque[tuple[Future[None], list[tuple[DocumentVersion, ChunkDraft]]]] = deque()
    index = vector_index()
    batch_size = settings.INGEST_EMBED_BATCH

    def read_tags(loaded: Sequence[DocumentVersion]) -> None:
        """The access tags the versions' passages are written with, read once per run (in one
        query for all the versions loaded together)."""
        documents = {version.document_id: version.document for version in loaded}
        tags_of_document = documents_access_tags(documents.values())
        for version in loaded:
            tags_of.setdefault(version.id, tags_of_document[version.document_id])

    def tags(version: DocumentVersion) -> list[str]:
        if version.id not in tags_of:
            read_tags([version])
        return tags_of[version.id]

    def settle(written: Future[None], batch: list[tuple[DocumentVersion, ChunkDraft]]) -> None:
        """Once a batch is in the index: its progress, and the versions it completes."""
        written.result()
        record_passages_indexed(len(batch))
        done_in_batch: dict[int, int] = {}
        for version, _ in batch:
            done_in_batch[version.id] = done_in_batch.get(version.id, 0) + 1
        completed: dict[int, list[str]] = {}
        for version_id, done in done_in_batch.items():
            remaining[version_id] -= done
            if remaining[version_id] == 0:
                # Activation sets its count to the total; only progress part-way is written.
                completed[version_id] = tags_of[version_id]
                continue
            DocumentVersion.objects.filter(id=version_id, status=VersionStatus.EMBEDDING).update(
                chunks_done=F("chunks_done") + done
            )
        _versions_activate(completed)

    def submit(
        batch: list[tuple[DocumentVersion, ChunkDraft]], encoder: Executor, writer: Executor
    ) -> None:
        nonlocal cancelled, finished_elsewhere
        stopped = dict(
            DocumentVersion.objects.filter(id__in={version.id for version, _ in batch})
            .exclude(status=VersionStatus.EMBEDDING)
            .values_list("id", "status")
        )
        # READY means another delivery of this task finished the version: its passages
        # are served and must stay; anything else stopped it (cancelled, failed).
        cancelled |= {version_id for version_id, status in stopped.items() if status != "READY"}
        finished_elsewhere |= {
            version_id for version_id, status in stopped.items() if status == "READY"
        }
        batch = [
            (version, draft)
            for version, draft in batch
            if version.id not in cancelled and version.id not in finished_elsewhere
        ]
        if not batch:
            return
        passages = [
            IndexedPassage(
                document_id=version.document_id,
                version_id=version.id,
                chunk_index=draft.index,
                title=version.document.title,
                source=version.document.source_path,
                groups=tags_of[version.id],
                page=draft.page,
                heading=HEADING_SEPARATOR.join(draft.heading_path),
                text=draft.text,
                active=False,
                file_name=version.original_name,
                context=chunked_of[version.id].search_context,
            )
            for version, draft in batch
        ]
        embedded = encoder.submit(passage_points, passages)
        in_flight.append((writer.submit(_index_when_embedded, index, embedded), batch))

    def submit_parsed(*, everything: bool, encoder: Executor, writer: Executor) -> None:
        # A batch goes to the encoder as soon as it is full: the first file's passages do not
        # wait for the parser to fill the whole window.
        while len(parsed_ahead) >= batch_size or (everything and parsed_ahead):
            submit(parsed_ahead[:batch_size], encoder, writer)
            del parsed_ahead[:batch_size]
        while in_flight and (in_flight[0][0].done() or len(in_flight) > _PARSE_AHEAD_BATCHES):
            settle(*in_flight.popleft())

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder") as encoder,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer") as writer,
    ):
        # A message's attachments, queued as documents of their own while it is parsed,
        # join the end of the list and are ingested in this same run.
        position = 0
        read_tags(versions)
        while True:
            while position < len(versions):
                if versions[position].is_final:
                    position += 1
                    continue
                group = _parse_group(versions, position, tags)
                position += len(group)
                for version, chunked in zip(group, _parse_and_chunk(group), strict=True):
                    if chunked is None:
                        continue
                    if chunked.has_attachments:
                        versions.extend(_attachments_queued(version))
                    tags(version)
                    chunked_of[version.id] = chunked
                    remaining[version.id] = len(chunked.drafts)
                    parsed_ahead.extend((version, draft) for draft in chunked.drafts)
                    submit_parsed(everything=False, encoder=encoder, writer=writer)
            # A message's attachments are already in the list, though still queued.
            known = {version.id for version in versions}
            claimed = versions_claim_queued() if join_queued else []
            joined = [version_id for version_id in claimed if version_id not in known]
            if claimed:
                handled.extend(joined)
                loaded = _versions_loaded(joined)
                read_tags(loaded)
                versions.extend(loaded)
                continue
            if not join_queued or not (parsed_ahead or in_flight):
                break
            # Nothing queued at the moment: the encoder takes what is parsed, and the queue is
            # looked at again once the oldest batch is written.
            submit_parsed(everything=True, encoder=encoder, writer=writer)
            if in_flight:
                settle(*in_flight.popleft())
        submit_parsed(everything=True, encoder=encoder, writer=writer)
        while in_flight:
            settle(*in_flight.popleft())

    # Passages this delivery wrote again (switched off) for a version finished elsewhere.
    _versions_activate({version_id: tags_of[version_id] for version_id in finished_elsewhere})
    for version_id in cancelled:
        index.delete(version_id=version_id)
    return dict(DocumentVersion.objects.filter(id__in=handled).values_list("id", "status"))


def _index_when_embedded(index: VectorIndex, embedded: Future[list[IndexPoint]]) -> None:
    index.upsert(embedded.result())


def version_mark_failed(version_id: int, message: str) -> None:
    """Bookkeeping when a task gives up: the file is FAILED with a reason, nothing else moves."""
    DocumentVersion.objects.filter(id=version_id).exclude(
        status__in=[VersionStatus.READY, VersionStatus.CANCELLED]
    ).update(status=VersionStatus.FAILED, status_message=message, finished_at=timezone.now())


# The ledger event of a purge; its "document." prefix puts it among the document admins' records.
