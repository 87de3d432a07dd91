"""The Sources page: list and add sources, run one now, see its runs, pause or remove it.

Sources read the server's folders and run reader code, so only superusers manage them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts import roles
from sources import selectors, services
from sources.forms import RemoveForm, SourceForm
from sources.models import Source

View = Callable[..., HttpResponseBase]
RUNS_SHOWN = 20


def superuser_required(view: View) -> View:
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not roles.is_superuser(request.user):
            raise PermissionDenied("Only superusers manage sources.")
        return view(request, *args, **kwargs)

    return guarded


@superuser_required
@require_http_methods(["GET", "POST"])
def source_list(request: HttpRequest) -> HttpResponse:
    form = SourceForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            source = services.source_add(
                name=data["name"],
                kind=data["kind"],
                location=data["location"],
                options=data["options"],
                groups=list(data["groups"]),
                is_public=data["everyone"],
                schedule=data["schedule"],
                user=request.user,  # type: ignore[arg-type]
            )
        except services.SourceRefused as refusal:
            form.add_error(None, str(refusal))
        else:
            messages.success(request, f"Added source “{source.name}”.")
            return redirect("sources:source-detail", source_id=source.pk)
    rows = [
        (source, selectors.source_last_run(source)) for source in selectors.sources_with_counts()
    ]
    status = 400 if request.method == "POST" else 200
    return render(request, "sources/source_list.html", {"rows": rows, "form": form}, status=status)


@superuser_required
def source_detail(request: HttpRequest, source_id: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=source_id)
    runs = list(source.runs.order_by("-created_at", "-id")[:RUNS_SHOWN])
    return render(
        request,
        "sources/source_detail.html",
        {
            "source": source,
            "runs": runs,
            "description": services.source_description(source),
            "documents": source.items.filter(
                deleted_at__isnull=True, document__deleted_at__isnull=True
            )
            .exclude(document=None)
            .count(),
        },
    )


@superuser_required
@require_POST
def source_run(request: HttpRequest, source_id: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=source_id)
    confirm = request.POST.get("confirm_deletions") == "1"
    services.source_run_now(source=source, user=request.user, confirm_deletions=confirm)  # type: ignore[arg-type]
    note = " Deletions beyond the usual share are confirmed." if confirm else ""
    messages.success(request, f"A run of “{source.name}” is under way.{note}")
    return redirect("sources:source-detail", source_id=source.pk)


@superuser_required
@require_POST
def source_pause(request: HttpRequest, source_id: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=source_id)
    paused = request.POST.get("paused") == "1"
    services.source_set_paused(source=source, paused=paused, user=request.user)  # type: ignore[arg-type]
    messages.success(
        request, f"“{source.name}” is {'paused' if paused else 'running on schedule'}."
    )
    return redirect("sources:source-detail", source_id=source.pk)


@superuser_required
@require_http_methods(["GET", "POST"])
def source_remove(request: HttpRequest, source_id: int) -> HttpResponse:
    source = get_object_or_404(Source, pk=source_id)
    form = RemoveForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        delete = form.cleaned_data["documents"] == "delete"
        deleted = services.source_remove(
            source=source,
            delete_documents=delete,
            user=request.user,  # type: ignore[arg-type]
        )
        outcome = f"its {deleted} documents were deleted" if delete else "its documents were kept"
        messages.success(request, f"Removed source “{source.name}”; {outcome}.")
        return redirect("sources:source-list")
    return render(request, "sources/source_confirm_remove.html", {"source": source, "form": form})
