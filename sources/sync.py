"""One run of a source: list what it holds, bring new and changed items in as document
versions, take deleted ones out of search, and count it all.

Each change is one transaction with its item's bookkeeping, the run's counts and its ledger
record, so a worker killed mid-run leaves nothing half done: the run is resumed (by the next
worker, the scheduler or `source_sync`), skips what it already did and counts nothing twice.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.ledger import ledger_append
from audit.models import AuditEvent
from ingestion.services import (
    StoreRefused,
    document_delete,
    document_set_access,
    document_sync_store,
)
from sources.kinds import FoundItem, KnownItem, SourceUnreachable, source_reader
from sources.models import ACTIVE_RUN_STATUSES, RunStatus, Source, SourceItem, SourceRun
from sources.options import OptionError, option_number
from sources.schedule import next_run_after

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
UNCHANGED_BATCH = 500
FAILURES_KEPT = 200


# ---- Asking for a run ----------------------------------------------------------------------


def run_request(
    *, source: Source, user: User | None = None, confirm_deletions: bool = False
) -> tuple[SourceRun, bool]:
    """The source's run in progress, or a new queued one; True when it is new."""
    for _ in range(3):
        active = SourceRun.objects.filter(source=source, status__in=ACTIVE_RUN_STATUSES).first()
        if active is not None:
            if confirm_deletions and not active.confirm_deletions:
                SourceRun.objects.filter(id=active.id).update(confirm_deletions=True)
                active.confirm_deletions = True
            return active, False
        try:
            with transaction.atomic():
                run = SourceRun.objects.create(
                    source=source,
                    requested_by=user if user is not None and user.is_authenticated else None,
                    confirm_deletions=confirm_deletions,
                )
            return run, True
        except IntegrityError:
            continue  # another request made one a moment ago: that one is the run
    raise RuntimeError("could not queue a run")


def runs_stale(*, stale_after_s: float) -> list[int]:
    """Runs queued, or running with no sign of life for `stale_after_s`: to be (re)started."""
    cutoff = timezone.now() - timedelta(seconds=stale_after_s)
    return list(
        SourceRun.objects.filter(
            Q(status=RunStatus.QUEUED)
            | Q(status=RunStatus.RUNNING, heartbeat_at__lte=cutoff)
            | Q(status=RunStatus.RUNNING, heartbeat_at__isnull=True)
        )
        .order_by("id")
        .values_list("id", flat=True)
    )


def run_claim(run_id: int, *, stale_after_s: float) -> SourceRun | None:
    """Take the run for this worker; None when it ended or another live worker holds it."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=stale_after_s)
    claimed = SourceRun.objects.filter(
        Q(id=run_id)
        & (
            Q(status=RunStatus.QUEUED)
            | Q(status=RunStatus.RUNNING, heartbeat_at__lte=cutoff)
            | Q(status=RunStatus.RUNNING, heartbeat_at__isnull=True)
        )
    ).update(status=RunStatus.RUNNING, heartbeat_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return None
    run = SourceRun.objects.select_related("source", "requested_by").get(id=run_id)
    if run.started_at is None:
        run.started_at = now
        SourceRun.objects.filter(id=run_id).update(started_at=now)
    return run


# ---- Running ---------------------------------------------------------------------------------


def run_execute(run_id: int, *, stale_after_s: float) -> SourceRun | None:
    """Claim and carry out a run; the run as it ended, or None when it was not ours to run."""
    run = run_claim(run_id, stale_after_s=stale_after_s)
    if run is None:
        return None
    try:
        _Sync(run).carry_out()
    except SoftTimeLimitExceeded:
        # Out of time, not failed: the run stays open, at once claimable, and the next worker
        # goes on from where this one stopped.
        SourceRun.objects.filter(id=run.pk).update(heartbeat_at=None)
        raise
    except (SourceUnreachable, OptionError) as error:
        _run_finish(run, status=RunStatus.FAILED, error=str(error))
    except Exception as error:  # a run must end with its reason, whatever happened
        logger.exception("source %s: run %s failed", run.source.name, run.id)
        _run_finish(
            run, status=RunStatus.FAILED, error=f"Unexpected error: {error.__class__.__name__}"
        )
    else:
        _run_finish(run, status=RunStatus.OK)
    run.refresh_from_db()
    return run


def delete_share_allowed(source: Source) -> float:
    return option_number(source.options, "max_delete_share", settings.SOURCE_DELETE_MAX_SHARE)


@dataclass
class _Readers:
    groups: list[Group]
    is_public: bool

    @property
    def signature(self) -> str:
        ids = ",".join(str(group.pk) for group in sorted(self.groups, key=lambda g: g.pk))
        return f"{'public;' if self.is_public else ''}{ids}"


@dataclass
class _Sync:
    run: SourceRun
    seen: set[str] = field(default_factory=set)
    kept_prefixes: list[str] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    failed_keys: set[str] = field(default_factory=set)
    beat_at: float = 0.0
    _groups: dict[str, Group] = field(default_factory=dict)

    @property
    def source(self) -> Source:
        return self.run.source

    def origin(self, key: str) -> dict[str, Any]:
        return {
            "id": self.source.pk,
            "name": self.source.name,
            "kind": self.source.kind,
            "run_id": self.run.pk,
            "item": key,
        }

    @property
    def actor(self) -> User | None:
        return self.run.requested_by

    def carry_out(self) -> None:
        reader = source_reader(self.source)
        known_items = {
            item.key: item
            for item in SourceItem.objects.filter(source=self.source, deleted_at__isnull=True)
        }
        known = {
            key: KnownItem(key, item.signature, item.content_sha256, item.extra)
            for key, item in known_items.items()
        }
        self.failed_keys = {str(entry.get("item")) for entry in self.run.failures}
        self.default_readers = _Readers(list(self.source.groups.all()), self.source.is_public)
        gone: list[SourceItem] = []
        for found in reader.items(known):
            self._heartbeat()
            if found.keeps_prefix is not None:
                self.kept_prefixes.append(found.keeps_prefix)
                self._failure(found.key or "/", found.error)
                continue
            self.seen.add(found.key)
            item = known_items.get(found.key)
            if found.gone:
                if item is not None:
                    gone.append(item)
                continue
            if found.error:
                self._failure(found.key, found.error)
                continue
            if item is not None and item.last_run_id == self.run.pk:
                continue  # done before this run was resumed
            self._apply(found, item)
        self._unchanged_flush()
        self._state_save(reader.state())
        vanished = [
            item
            for key, item in known_items.items()
            if key not in self.seen
            and not any(key.startswith(prefix) for prefix in self.kept_prefixes)
        ]
        self._delete_all([*gone, *vanished], live=len(known_items))

    # Items

    def _apply(self, found: FoundItem, item: SourceItem | None) -> None:
        readers = self._readers(found.group_names)
        if found.data is None:
            if item is None:
                self._failure(found.key, "The source gave no content for a new item.")
                return
            self._readers_update(item, readers)
            self.unchanged.append(item.pk)
            if len(self.unchanged) >= UNCHANGED_BATCH:
                self._unchanged_flush()
            return
        sha256 = hashlib.sha256(found.data).hexdigest()
        document_live = (
            item is not None and item.document is not None and (item.document.deleted_at is None)
        )
        if item is not None and document_live and item.content_sha256 == sha256:
            # Touched, not changed: only the signature moves on.
            with transaction.atomic():
                SourceItem.objects.filter(id=item.pk).update(
                    signature=found.signature, extra=found.extra, last_run=self.run
                )
                self._count(unchanged=1)
            self._readers_update(item, readers)
            return
        self._store(found, item if document_live else None, sha256, readers, known=item is not None)

    def _store(
        self,
        found: FoundItem,
        item: SourceItem | None,
        sha256: str,
        readers: _Readers,
        *,
        known: bool,
    ) -> None:
        assert found.data is not None
        try:
            with transaction.atomic():
                version = document_sync_store(
                    document=item.document if item is not None else None,
                    name=found.name or found.key.rsplit("/", 1)[-1] or "item",
                    data=found.data,
                    source_path=found.source_path or found.key,
                    groups=readers.groups,
                    is_public=readers.is_public,
                    actor=self.actor,
                    origin=self.origin(found.key),
                )
                SourceItem.objects.update_or_create(
                    source=self.source,
                    key=found.key,
                    defaults={
                        "document": version.document,
                        "content_sha256": sha256,
                        "signature": found.signature,
                        "readers": readers.signature,
                        "extra": found.extra,
                        "last_run": self.run,
                        "deleted_at": None,
                    },
                )
                if known:
                    self._count(changed=1)
                else:
                    self._count(new=1)
        except StoreRefused as refusal:
            self._failure(found.key, str(refusal))

    def _readers(self, group_names: Iterable[str]) -> _Readers:
        names = list(group_names)
        if not names:
            return self.default_readers
        groups = []
        for name in names:
            if name not in self._groups:
                self._groups[name] = Group.objects.get_or_create(name=name[:150])[0]
            groups.append(self._groups[name])
        return _Readers(groups, self.source.is_public)

    def _readers_update(self, item: SourceItem, readers: _Readers) -> None:
        """A mapping that changed gives the item's document its new readers, in the index too."""
        if item.readers == readers.signature or item.document is None:
            return
        with transaction.atomic():
            document_set_access(
                document=item.document,
                groups=readers.groups,
                is_public=readers.is_public,
                actor=self.actor,
                origin=self.origin(item.key),
            )
            SourceItem.objects.filter(id=item.pk).update(readers=readers.signature)

    def _unchanged_flush(self) -> None:
        if not self.unchanged:
            return
        with transaction.atomic():
            SourceItem.objects.filter(id__in=self.unchanged).update(last_run=self.run)
            self._count(unchanged=len(self.unchanged))
        self.unchanged = []

    # Deletions, within the share a run may delete unless confirmed

    def _delete_all(self, doomed: list[SourceItem], *, live: int) -> None:
        doomed = [item for item in doomed if item.deleted_at is None]
        if not doomed:
            return
        share = delete_share_allowed(self.source)
        everything = len(doomed) >= live
        if not self.run.confirm_deletions and (everything or len(doomed) > share * live):
            raise SourceUnreachable(
                f"The source would delete {len(doomed)} of its {live} documents, more than "
                f"the {share:.0%} a run may delete unaided (an unmounted share or a site that "
                "is down looks like this); nothing was deleted. If they are really gone, run "
                "it again confirming the deletions."
            )
        for item in doomed:
            self._heartbeat()
            with transaction.atomic():
                document = item.document
                if document is not None and document.deleted_at is None:
                    document_delete(
                        document=document, actor=self.actor, origin=self.origin(item.key)
                    )
                SourceItem.objects.filter(id=item.pk).update(
                    deleted_at=timezone.now(), last_run=self.run
                )
                self._count(deleted=1)

    # Bookkeeping

    def _count(self, **increments: int) -> None:
        SourceRun.objects.filter(id=self.run.pk).update(
            **{name: F(name) + value for name, value in increments.items()},
            heartbeat_at=timezone.now(),
        )

    def _failure(self, key: str, reason: str) -> None:
        if key in self.failed_keys:
            return  # counted before this run was resumed
        self.failed_keys.add(key)
        if len(self.run.failures) < FAILURES_KEPT:
            self.run.failures.append({"item": key, "reason": reason})
        SourceRun.objects.filter(id=self.run.pk).update(
            failed=F("failed") + 1, failures=self.run.failures
        )

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.beat_at >= HEARTBEAT_S:
            self.beat_at = now
            SourceRun.objects.filter(id=self.run.pk).update(heartbeat_at=timezone.now())

    def _state_save(self, state: dict[str, Any]) -> None:
        if state != self.source.state:
            Source.objects.filter(id=self.source.pk).update(state=state)


def _run_finish(run: SourceRun, *, status: RunStatus, error: str = "") -> None:
    """End the run, append its ledger record and set the source's next scheduled run."""
    now = timezone.now()
    with transaction.atomic():
        SourceRun.objects.filter(id=run.pk).update(status=status, error=error, finished_at=now)
        run.refresh_from_db()
        source = run.source
        details: dict[str, Any] = {
            "source": {"id": source.pk, "name": source.name, "kind": source.kind},
            "run_id": run.pk,
            "status": str(status),
            **run.counts(),
            "summary": (
                f"Synced source “{source.name}”: {run.new} new, {run.changed} changed, "
                f"{run.deleted} deleted, {run.failed} failed"
                + (f"; failed: {error}" if error else "")
            ),
        }
        if error:
            details["error"] = error
        if run.failures:
            details["failures"] = run.failures
        ledger_append(event=AuditEvent.SOURCE_RUN, actor=run.requested_by, details=details)
        if source.schedule:
            Source.objects.filter(id=source.pk).update(
                next_run_at=next_run_after(source.schedule, now)
            )
