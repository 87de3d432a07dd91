"""The administrators' document pages: list and upload, live status, one document, downloads."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import roles
from accounts.limits import Limited, limited_response, upload_limit_check
from config.errors import json_error, wants_json
from ingestion import selectors, services
from ingestion.forms import TOO_LARGE, DocumentAccessForm, DocumentReviewForm, UploadForm
from ingestion.index_upkeep import index_upkeep_state
from ingestion.models import Document, DocumentVersion, VersionStatus
from ingestion.review import is_overdue, review_today
from ingestion.services import UploadOutcome

View = Callable[..., HttpResponseBase]


def document_admin_required(view: View) -> View:
    """Document pages are for document admins: others log in first, then get 403.

    Within them, a document the user does not manage answers 404, as if it did not exist.
    """

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not roles.is_document_admin(request.user):
            raise PermissionDenied("Only document admins may manage documents.")
        return view(request, *args, **kwargs)

    return guarded


def _readers_offered(form: UploadForm | DocumentAccessForm, user: Any) -> None:
    """Offer the groups the user administers; a superuser alone may also choose everyone."""
    form.fields["groups"].queryset = roles.administered_groups(user).order_by("name")  # type: ignore[attr-defined]
    if not roles.is_superuser(user):
        del form.fields["everyone"]


def _readers_allowed(form: UploadForm | DocumentAccessForm, user: Any) -> bool:
    """Check the chosen readers against the user's role; the reason is a form error."""
    refusal = roles.sharing_refusal(
        user, form.cleaned_data["groups"], form.cleaned_data.get("everyone", False)
    )
    if refusal:
        form.add_error("groups", refusal)
    return not refusal


NO_READERS = (
    "Choose who may read these files: tick at least one group or Everyone. A document "
    "nobody may read appears in no answer; nothing was uploaded."
)


def _upload_readers_chosen(form: UploadForm) -> bool:
    """An upload names its readers; a superuser may share with nobody only on purpose, later."""
    if form.cleaned_data["groups"] or form.cleaned_data.get("everyone", False):
        return True
    form.add_error("groups", NO_READERS)
    return False


def _upload_limit_check(request: HttpRequest, form: UploadForm) -> None:
    """Count the files against the user's upload limit (accounts/limits.py), or raise Limited."""
    upload_limit_check(user_id=request.user.pk, token=None, files=len(form.cleaned_data["files"]))


def _upload_allowed(request: HttpRequest, form: UploadForm) -> bool:
    """The upload limit for the page without scripts: a refusal is a form error."""
    try:
        _upload_limit_check(request, form)
    except Limited as limited:
        form.add_error(None, limited.message)
        return False
    return True


def _refusal_status(form: UploadForm) -> int:
    """413 when a file is over the size limit, 400 for any other mistake in the form."""
    return 413 if form.has_error("files", code=TOO_LARGE) else 400


def version_state(version: DocumentVersion) -> dict[str, Any]:
    """What the page needs to redraw a version's status, progress and buttons."""
    return {
        "id": version.id,
        "document_id": version.document_id,
        "number": version.number,
        "status": version.status,
        "status_label": VersionStatus(version.status).label,
        "message": version.status_message,
        "chunks_done": version.chunks_done,
        "chunks_total": version.chunks_total,
        "progress": version.progress_percent,
        "final": version.is_final,
        "can_retry": version.is_retryable,
        "can_cancel": not version.is_final,
        "document_url": reverse("ingestion:document-detail", args=[version.document_id]),
        "retry_url": reverse("ingestion:version-retry", args=[version.id]),
        "cancel_url": reverse("ingestion:version-cancel", args=[version.id]),
    }


def upload_result(outcome: UploadOutcome) -> dict[str, Any]:
    result: dict[str, Any] = {
        "name": outcome.name,
        "created": outcome.created,
        "error": outcome.error,
        "note": outcome.note,
        "status": outcome.status,
        "version": None,
    }
    if outcome.version is not None:
        result["version"] = version_state(outcome.version)
    return result


def _upload(request: HttpRequest, form: UploadForm) -> list[UploadOutcome]:
    return services.documents_upload(
        [
            services.UploadItem(name=uploaded.name or "", file=uploaded)
            for uploaded in form.cleaned_data["files"]
        ],
        groups=list(form.cleaned_data["groups"]),
        is_public=form.cleaned_data.get("everyone", False),
        user=request.user if request.user.is_authenticated else None,
        manager=request.user if request.user.is_authenticated else None,
    )


@document_admin_required
@require_http_methods(["GET", "POST"])
def document_list(request: HttpRequest) -> HttpResponse:
    """The documents and the upload form; a post here is the upload without scripts."""
    outcomes: list[UploadOutcome] = []
    if request.method == "POST":
        form = UploadForm(request.POST, request.FILES)
        _readers_offered(form, request.user)
        if (
            form.is_valid()
            and _readers_allowed(form, request.user)
            and _upload_readers_chosen(form)
            and _upload_allowed(request, form)
        ):
            outcomes = _upload(request, form)
            form = UploadForm(initial={"groups": form.cleaned_data["groups"]})
            _readers_offered(form, request.user)
    else:
        form = UploadForm()
        _readers_offered(form, request.user)
    query = request.GET.get("q", "")
    status = request.GET.get("status", "")
    review = request.GET.get("review", "")
    listing = selectors.documents_for_admin(
        request.user, query=query, status=status, review=review, page=request.GET.get("page", 1)
    )
    overdue, overdue_count = selectors.documents_overdue_for_admin(request.user)
    return render(
        request,
        "ingestion/document_list.html",
        {
            "form": form,
            "listing": listing,
            "query": query,
            "status": status,
            "statuses": VersionStatus.choices,
            "review": review,
            "overdue": overdue,
            "overdue_count": overdue_count,
            "today": review_today(),
            "upload_results": outcomes,
            "upload_max_mb": f"{settings.UPLOAD_MAX_BYTES / (1024 * 1024):g}",
            "index_upkeep": index_upkeep_state(),
        },
        status=_refusal_status(form) if form.errors else 200,
    )


@document_admin_required
@require_POST
def document_upload_json(request: HttpRequest) -> JsonResponse:
    form = UploadForm(request.POST, request.FILES)
    _readers_offered(form, request.user)
    if (
        not form.is_valid()
        or not _readers_allowed(form, request.user)
        or not _upload_readers_chosen(form)
    ):
        first_error = next(iter(form.errors.values()))[0]
        return JsonResponse(
            {"detail": first_error, "errors": form.errors}, status=_refusal_status(form)
        )
    try:
        _upload_limit_check(request, form)
    except Limited as limited:
        return limited_response(limited)
    return JsonResponse({"results": [upload_result(outcome) for outcome in _upload(request, form)]})


@document_admin_required
@require_GET
def version_status_json(request: HttpRequest) -> JsonResponse:
    """The state of the versions named in ?ids=1,2,3; the page polls it while any is running."""
    raw_ids = [part for part in request.GET.get("ids", "").split(",") if part.strip()]
    try:
        ids = [int(part) for part in raw_ids]
    except ValueError:
        return json_error("ids must be a comma-separated list of version numbers.", 400)
    return JsonResponse(
        {
            "versions": [
                version_state(version)
                for version in selectors.versions_managed_by(request.user, ids=ids)
            ]
        }
    )


@document_admin_required
@require_GET
def document_detail(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_managed_by(request.user, document_id=document_id)
    try:
        shown_version_id = int(request.GET["version"]) if "version" in request.GET else None
    except ValueError as error:
        raise Http404("No such version.") from error
    access_form = DocumentAccessForm(
        initial={"groups": list(document.groups.all()), "everyone": document.is_public}
    )
    _readers_offered(access_form, request.user)
    attached_to, attachments = selectors.document_mail_links(request.user, document=document)
    return render(
        request,
        "ingestion/document_detail.html",
        {
            "document": document,
            "review_form": _review_form_of(document),
            "review_overdue": is_overdue(document.review_by),
            "attached_to": attached_to,
            "attachments": attachments,
            "versions": selectors.document_versions(document),
            "chunks": selectors.document_chunks(
                document=document, version_id=shown_version_id, page=request.GET.get("page", 1)
            ),
            "access_form": access_form,
        },
    )


@document_admin_required
@require_POST
def document_access(request: HttpRequest, document_id: int) -> HttpResponse:
    document = selectors.document_managed_by(request.user, document_id=document_id)
    form = DocumentAccessForm(request.POST)
    _readers_offered(form, request.user)
    if form.is_valid() and _readers_allowed(form, request.user):
        services.document_set_access(
            document=document,
            groups=form.cleaned_data["groups"],
            is_public=form.cleaned_data.get("everyone", False),
        )
        messages.success(request, "Who may read this document was saved.")
    else:
        problem = " ".join(str(error) for error in form.errors.get("groups", [])) or (
            "The choice of groups was not valid."
        )
        messages.error(request, f"{problem} Nothing was changed.")
    return redirect("ingestion:document-detail", document_id=document.id)


def _review_form_of(document: Document) -> DocumentReviewForm:
    return DocumentReviewForm(
        initial={
            "owner": document.owner.get_username() if document.owner else "",
            "review_by": document.review_by,
        }
    )


@document_admin_required
@require_POST
def document_review(request: HttpRequest, document_id: int) -> HttpResponse:
    """Set the document's owner and review date; an unknown owner changes nothing."""
    document = selectors.document_managed_by(request.user, document_id=document_id)
    form = DocumentReviewForm(request.POST)
    if form.is_valid():
        services.document_set_review(
            document=document,
            owner=form.cleaned_data["owner"],
            review_by=form.cleaned_data["review_by"],
        )
        messages.success(request, "The owner and review date were saved.")
    else:
        problems = " ".join(str(error) for errors in form.errors.values() for error in errors)
        messages.error(request, f"{problems} Nothing was changed.")
    return redirect("ingestion:document-detail", document_id=document.id)


@document_admin_required
@require_http_methods(["GET", "POST"])
def document_delete(request: HttpRequest, document_id: int) -> HttpResponse:
    """A page asks for confirmation; its post takes the document out of search."""
    document = selectors.document_managed_by(request.user, document_id=document_id)
    if request.method == "POST":
        services.document_delete(document=document)
        messages.success(
            request, f"“{document.title}” was deleted and no longer appears in answers."
        )
        return redirect("ingestion:document-list")
    return render(request, "ingestion/document_confirm_delete.html", {"document": document})


def _back(request: HttpRequest, version: DocumentVersion) -> HttpResponse:
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("ingestion:document-detail", args=[version.document_id])
    return redirect(target)


def _version_acted_on(
    request: HttpRequest, version: DocumentVersion, *, done: bool, refusal: str, success: str
) -> HttpResponse:
    """The answer to a retry or cancel: the new state for the page's script, else a message."""
    if not done:
        if wants_json(request):
            return json_error(refusal, 409)
        messages.error(request, refusal)
        return _back(request, version)
    version.refresh_from_db()
    if wants_json(request):
        return JsonResponse(version_state(version))
    messages.success(request, success)
    return _back(request, version)


@document_admin_required
@require_POST
def version_retry(request: HttpRequest, version_id: int) -> HttpResponse:
    version = selectors.version_managed_by(request.user, version_id=version_id)
    return _version_acted_on(
        request,
        version,
        done=services.version_retry(version),
        refusal=services.version_retry_refusal(noun="file"),
        success=f"{version.original_name} is queued again.",
    )


@document_admin_required
@require_POST
def version_cancel(request: HttpRequest, version_id: int) -> HttpResponse:
    version = selectors.version_managed_by(request.user, version_id=version_id)
    return _version_acted_on(
        request,
        version,
        done=services.version_cancel(version),
        refusal=services.version_cancel_refusal(noun="file"),
        success=f"The ingestion of {version.original_name} was cancelled.",
    )


@document_admin_required
@require_GET
def version_download(request: HttpRequest, version_id: int) -> FileResponse:
    version = selectors.version_managed_by(request.user, version_id=version_id)
    try:
        stored = version.file.open("rb")
    except FileNotFoundError as error:
        raise Http404("The stored file is missing.") from error
    return FileResponse(stored, as_attachment=True, filename=version.original_name)
