"""Reads for the pages and commands: sources with their last runs, and one run's summary."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from sources.models import Source, SourceRun


def run_summary(run: SourceRun) -> dict[str, Any]:
    """A run as `source_sync --json` prints it."""
    summary: dict[str, Any] = {
        "source": run.source.name,
        "run": run.pk,
        "status": run.status,
        **run.counts(),
    }
    if run.error:
        summary["error"] = run.error
    if run.failures:
        summary["failures"] = run.failures
    return summary


def sources_with_counts() -> list[Source]:
    return list(
        Source.objects.annotate(
            documents=Count(
                "items",
                filter=Q(
                    items__deleted_at__isnull=True,
                    items__document__isnull=False,
                    items__document__deleted_at__isnull=True,
                ),
            )
        ).prefetch_related("groups")
    )


def source_last_run(source: Source) -> SourceRun | None:
    return source.runs.order_by("-created_at", "-id").first()


def source_summaries() -> list[dict[str, Any]]:
    summaries = []
    for source in sources_with_counts():
        last = source_last_run(source)
        summaries.append(
            {
                "name": source.name,
                "kind": source.kind,
                "location": source.location,
                "groups": sorted(group.name for group in source.groups.all()),
                "everyone": source.is_public,
                "schedule": source.schedule,
                "next_run_at": source.next_run_at.isoformat() if source.next_run_at else None,
                "paused": source.paused,
                "documents": source.documents,  # type: ignore[attr-defined]
                "last_run": None
                if last is None
                else {
                    **run_summary(last),
                    "finished_at": last.finished_at.isoformat() if last.finished_at else None,
                },
            }
        )
    return summaries
