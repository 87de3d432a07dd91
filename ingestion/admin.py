"""Django admin for documents: every change that reaches the index goes through the services."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from ingestion import selectors, services
from ingestion.forms import AdminUploadForm
from ingestion.models import Chunk, Document, DocumentVersion, VersionStatus


class LatestStatusFilter(admin.SimpleListFilter):
    title = "status of the newest version"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, str(label)) for value, label in VersionStatus.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in VersionStatus.values:
            return queryset.filter(latest_status=self.value())
        return queryset


class DeletedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "In use"), ("deleted", "Deleted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "active":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


class VersionInline(admin.TabularInline):  # type: ignore[type-arg]
    model = DocumentVersion
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-number"]
    fields = readonly_fields = (
        "number",
        "original_name",
        "size_bytes",
        "status",
        "status_message",
        "chunks_done",
        "chunks_total",
        "uploaded_by",
        "created_at",
    )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["title", "source_path", "latest_status", "readers", "is_public", "updated_at"]
    list_filter = [LatestStatusFilter, "groups", "is_public", DeletedFilter]
    search_fields = ["title", "source_path"]
    date_hierarchy = "updated_at"
    filter_horizontal = ["groups"]
    inlines = [VersionInline]
    fields = [
        "title",
        "source_path",
        "groups",
        "is_public",
        "legal_hold",
        "owner",
        "review_by",
        "current_version",
        "created_by",
        "created_at",
        "updated_at",
        "deleted_at",
    ]
    readonly_fields = [
        "title",
        "source_path",
        "current_version",
        "created_by",
        "created_at",
        "updated_at",
        "deleted_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Document]:
        return selectors.documents_annotate_status(super().get_queryset(request)).prefetch_related(
            "groups"
        )

    @admin.display(description="Status", ordering="latest_status")
    def latest_status(self, document: Document) -> str:
        status = getattr(document, "latest_status", None)
        return str(VersionStatus(status).label) if status else "—"

    @admin.display(description="Who may read")
    def readers(self, document: Document) -> str:
        names = [group.name for group in document.groups.all()]
        if document.is_public:
            names.insert(0, "Everyone")
        return ", ".join(names) or "Nobody yet"

    def save_related(
        self,
        request: HttpRequest,
        form: ModelForm[Document],
        formsets: list[BaseInlineFormSet[Any, Any, Any]],
        change: bool,
    ) -> None:
        # The groups are written by the service so that the index learns of them too.
        services.document_set_access(
            document=form.instance,
            groups=form.cleaned_data["groups"],
            is_public=form.cleaned_data["is_public"],
        )
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        services.document_delete(document=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in queryset.filter(deleted_at__isnull=True):
            services.document_delete(document=document)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        # Deleting takes a document out of search and keeps its rows, so nothing else goes.
        documents = list(objs)
        summary = [
            f"{document.title} (leaves search and answers; its record is kept)"
            for document in documents
        ]
        return summary, {"documents": len(documents)}, set(), []

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """Adding a document means uploading its file, which the upload service stores."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = AdminUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            documents = self._upload(request, form)
            if len(documents) == 1:
                return HttpResponseRedirect(
                    reverse("admin:ingestion_document_change", args=[documents[0].id])
                )
            if documents:
                return HttpResponseRedirect(reverse("admin:ingestion_document_changelist"))
        context = {
            **self.admin_site.each_context(request),
            **(extra_context or {}),
            "opts": self.opts,
            "title": "Upload documents",
            "form": form,
            "has_view_permission": self.has_view_permission(request),
        }
        return TemplateResponse(request, "ingestion/admin_upload.html", context)

    def _upload(self, request: HttpRequest, form: AdminUploadForm) -> list[Document]:
        stored: dict[int, Document] = {}
        outcomes = services.documents_upload(
            [
                services.UploadItem(
                    name=uploaded.name or "",
                    file=uploaded,
                    source_path=form.cleaned_data["source_path"] or None,
                )
                for uploaded in form.cleaned_data["files"]
            ],
            groups=list(form.cleaned_data["groups"]),
            is_public=form.cleaned_data["is_public"],
            user=request.user if request.user.is_authenticated else None,
        )
        for outcome in outcomes:
            if outcome.version is None:
                messages.error(request, f"{outcome.name}: {outcome.error}")
                continue
            document = outcome.version.document
            stored[document.id] = document
            if outcome.created:
                self.log_addition(request, outcome.version, "Uploaded")
                messages.success(
                    request,
                    f"{outcome.name} is stored as version {outcome.version.number} of "
                    f"“{document.title}” and queued for indexing.",
                )
            else:
                # The service says what it did: nothing new stored, or a failed version retried.
                messages.info(
                    request,
                    f"{outcome.name}: {outcome.note}"
                    if outcome.note
                    else f"{outcome.name} has the same content as version "
                    f"{outcome.version.number} of “{document.title}”; nothing new was stored.",
                )
        return list(stored.values())


@admin.register(DocumentVersion)
class DocumentVersionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "document",
        "number",
        "original_name",
        "status",
        "chunks_done",
        "chunks_total",
        "uploaded_by",
        "created_at",
    ]
    list_filter = ["status", "detected_type"]
    search_fields = ["original_name", "document__title", "sha256"]
    list_select_related = ["document", "uploaded_by"]
    actions = ["retry", "cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_ingest_permission(self, request: HttpRequest) -> bool:
        """Retrying and cancelling are for those who may change versions."""
        return request.user.has_perm("ingestion.change_documentversion")

    @admin.action(
        description="Retry the selected failed or cancelled versions", permissions=["ingest"]
    )
    def retry(self, request: HttpRequest, queryset: QuerySet[DocumentVersion]) -> None:
        retried = sum(services.version_retry(version) for version in queryset)
        skipped = queryset.count() - retried
        self.message_user(
            request, f"{retried} version(s) queued again; {skipped} left as they were."
        )

    @admin.action(
        description="Cancel the ingestion of the selected versions", permissions=["ingest"]
    )
    def cancel(self, request: HttpRequest, queryset: QuerySet[DocumentVersion]) -> None:
        cancelled = sum(services.version_cancel(version) for version in queryset)
        skipped = queryset.count() - cancelled
        self.message_user(
            request, f"{cancelled} version(s) cancelled; {skipped} had already finished."
        )


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["version", "index", "page", "heading", "preview"]
    search_fields = ["text", "heading", "version__document__title"]
    list_select_related = ["version__document"]
    show_full_result_count = False

    @admin.display(description="Text")
    def preview(self, chunk: Chunk) -> str:
        return chunk.text[:120] + ("…" if len(chunk.text) > 120 else "")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
