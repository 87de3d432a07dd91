"""The documents REST API: reads for anyone signed in (what they may read or manage), writes for
document admins on the documents they manage (accounts/roles.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import roles
from accounts.authentication import TokenScopePermission
from accounts.limits import api_upload_admit
from ingestion import selectors, services
from ingestion.access import can_manage_document
from ingestion.models import Document, DocumentVersion, VersionStatus
from ingestion.review import REVIEW_FILTER_OVERDUE, is_overdue

ERROR_RESPONSE = OpenApiResponse(
    response={"type": "object", "properties": {"detail": {"type": "string"}}},
    description="What was wrong, in `detail`.",
)


class RequestInvalid(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The request is not valid."
    default_code = "invalid"


class UploadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "A file is larger than the upload limit."
    default_code = "too_large"


class StateConflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The version is not in a state that allows this."
    default_code = "conflict"


class DocumentAdminForWrites(BasePermission):
    """Anyone signed in may read; only document admins may upload, change, delete, retry or cancel.

    Which documents a document admin may change is checked on each document (`managed`).
    """

    message = "Only document admins may change documents."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or roles.is_document_admin(user)


def managed(user: Any, document: Document) -> Document:
    """The document, if the user manages it; 403 otherwise (they can see it, so it exists)."""
    if not can_manage_document(user, document):
        raise PermissionDenied(
            "You do not manage this document: only documents read by groups you administer."
        )
    return document


def validated(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """Validate, or answer 400 with every problem spelled out in `detail`."""
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        problems = [
            f"{field}: {' '.join(str(message) for message in messages)}"
            if field != "non_field_errors"
            else " ".join(str(message) for message in messages)
            for field, messages in serializer.errors.items()
        ]
        raise RequestInvalid("; ".join(problems))
    return dict(serializer.validated_data)


def groups_from_references(references: Iterable[str]) -> list[Group]:
    """Groups named by name or id; a comma-separated value names several."""
    wanted = [part.strip() for reference in references for part in str(reference).split(",")]
    wanted = [reference for reference in wanted if reference]
    by_name = {group.name: group for group in Group.objects.filter(name__in=wanted)}
    numeric_ids = [int(reference) for reference in wanted if reference.isdigit()]
    by_id = {str(group.id): group for group in Group.objects.filter(id__in=numeric_ids)}
    found: dict[int, Group] = {}
    unknown: list[str] = []
    for reference in wanted:
        group = by_name.get(reference) or by_id.get(reference)
        if group is None:
            unknown.append(reference)
        else:
            found[group.id] = group
    if unknown:
        raise RequestInvalid(f"groups: no such group: {', '.join(unknown)}.")
    return list(found.values())


class GroupSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class VersionSerializer(serializers.ModelSerializer):
    document_id = serializers.IntegerField(read_only=True)
    # None for files ingested by a command or another system rather than a person.
    uploaded_by = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True
    )
    progress = serializers.IntegerField(
        source="progress_percent", read_only=True, help_text="Percent of passages indexed."
    )
    final = serializers.BooleanField(
        source="is_final", read_only=True, help_text="READY, FAILED or CANCELLED: it will not move."
    )

    class Meta:
        model = DocumentVersion
        fields = [
            "id",
            "document_id",
            "number",
            "original_name",
            "size_bytes",
            "sha256",
            "detected_type",
            "status",
            "status_message",
            "chunks_done",
            "chunks_total",
            "progress",
            "final",
            "attempts",
            "uploaded_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class DocumentSerializer(serializers.ModelSerializer):
    groups = GroupSerializer(many=True, read_only=True)
    everyone = serializers.BooleanField(
        source="is_public", read_only=True, help_text="Everyone may read it, whatever their groups."
    )
    status = serializers.ChoiceField(
        source="latest_status",
        choices=VersionStatus.choices,
        read_only=True,
        allow_null=True,
        help_text="The status of the newest version.",
    )
    latest_version_id = serializers.IntegerField(read_only=True, allow_null=True)
    current_version_id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="The version that answers are drawn from."
    )
    chunk_count = serializers.IntegerField(
        read_only=True, help_text="Passages of the current version, the ones answers draw from."
    )
    owner = serializers.SlugRelatedField(
        slug_field="username",
        read_only=True,
        allow_null=True,
        help_text="The user who answers for the content; null for nobody.",
    )
    review_by = serializers.DateField(
        read_only=True, allow_null=True, help_text="When the document should be read again."
    )
    review_overdue = serializers.SerializerMethodField(
        help_text="The review date has passed: answers citing it say so."
    )

    class Meta:
        model = Document
        fields = [
            "id",
            "title",
            "source_path",
            "groups",
            "everyone",
            "status",
            "latest_version_id",
            "current_version_id",
            "chunk_count",
            "owner",
            "review_by",
            "review_overdue",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_review_overdue(self, document: Document) -> bool:
        return is_overdue(document.review_by)


class DocumentDetailSerializer(DocumentSerializer):
    versions = serializers.SerializerMethodField()

    class Meta(DocumentSerializer.Meta):
        fields = [*DocumentSerializer.Meta.fields, "versions"]
        read_only_fields = fields

    @extend_schema_field(VersionSerializer(many=True))
    def get_versions(self, document: Document) -> list[dict[str, Any]]:
        return VersionSerializer(selectors.document_versions(document), many=True).data


@extend_schema_field(OpenApiTypes.BINARY)
class UploadedFileField(serializers.FileField):
    """A file part of a multipart request."""


class DocumentUploadSerializer(serializers.Serializer):
    files = serializers.ListField(
        child=UploadedFileField(allow_empty_file=True),
        allow_empty=False,
        help_text="One or many files (repeat the field).",
    )
    groups = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        default=list,
        help_text="Groups that may read, by name or id; repeat the field or separate with commas.",
    )
    everyone = serializers.BooleanField(required=False, default=False)


class DocumentAccessSerializer(serializers.Serializer):
    groups = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="Groups that may read, by name or id; omitted keeps the current groups.",
    )
    everyone = serializers.BooleanField(
        required=False, help_text="Everyone may read; omitted keeps the current setting."
    )
    owner = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        help_text="The owner's user name; null or empty for nobody; omitted keeps the owner.",
    )
    review_by = serializers.DateField(
        required=False,
        allow_null=True,
        help_text="Review date (YYYY-MM-DD); null for none; omitted keeps the date.",
    )

    def validate_owner(self, value: str | None) -> User | None:
        name = (value or "").strip()
        if not name:
            return None
        owner = User.objects.filter(username=name, is_active=True).first()
        if owner is None:
            raise serializers.ValidationError(f"There is no active user named {name!r}.")
        return owner


class UploadResultSerializer(serializers.Serializer):
    name = serializers.CharField()
    created = serializers.BooleanField(help_text="False when the same bytes were already stored.")
    status = serializers.ChoiceField(choices=VersionStatus.choices)
    error = serializers.CharField(help_text="Why the file was refused; empty when it was stored.")
    note = serializers.CharField(
        help_text="What else happened: the same content was already stored (and, when its "
        "ingestion had failed, is queued again), or the file was kept apart from a document "
        "you manage with its name or content but other readers. Often empty."
    )
    document_id = serializers.IntegerField(allow_null=True)
    version_id = serializers.IntegerField(allow_null=True)


class UploadResponseSerializer(serializers.Serializer):
    results = UploadResultSerializer(many=True)


def _upload_result(outcome: services.UploadOutcome) -> dict[str, Any]:
    return {
        "name": outcome.name,
        "created": outcome.created,
        "status": outcome.status,
        "error": outcome.error,
        "note": outcome.note,
        "document_id": outcome.version.document_id if outcome.version else None,
        "version_id": outcome.version.id if outcome.version else None,
    }


class DocumentListView(generics.GenericAPIView):
    permission_classes = [DocumentAdminForWrites, TokenScopePermission]
    serializer_class = DocumentSerializer

    def get_queryset(self) -> QuerySet[Document]:
        return selectors.documents_search(
            selectors.documents_readable_by(self.request.user),
            query=self.request.query_params.get("q", ""),
            status=self.request.query_params.get("status", ""),
            review=self.request.query_params.get("review", ""),
        )

    @extend_schema(
        summary="List documents",
        description="The documents the caller may read, and those they manage.",
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, description="Words in the title or source."),
            OpenApiParameter(
                "status",
                OpenApiTypes.STR,
                enum=VersionStatus.values,
                description="Only documents whose newest version has this status.",
            ),
            OpenApiParameter(
                "review",
                OpenApiTypes.STR,
                enum=[REVIEW_FILTER_OVERDUE],
                description="`overdue`: only documents whose review date has passed.",
            ),
        ],
        responses={200: DocumentSerializer(many=True), 401: ERROR_RESPONSE},
    )
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(DocumentSerializer(page, many=True).data)

    @extend_schema(
        summary="Upload documents",
        description="Each file becomes a new version of the document you manage with the same "
        "name and the same readers, or a new document. A file whose content is already "
        "stored for those readers is that version (queued again if its ingestion failed). "
        "A file refused for its name is reported in its result and the others go on; 201 "
        "when at least one file was stored. A file over the upload limit refuses the whole "
        "request with 413 and nothing is stored.",
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={
            201: UploadResponseSerializer,
            200: UploadResponseSerializer,
            400: ERROR_RESPONSE,
            401: ERROR_RESPONSE,
            403: ERROR_RESPONSE,
            413: ERROR_RESPONSE,
            429: ERROR_RESPONSE,
        },
    )
    def post(self, request: Request) -> Response:
        data = validated(DocumentUploadSerializer, request.data)
        groups = groups_from_references(data["groups"])
        refusal = roles.sharing_refusal(request.user, groups, data["everyone"])
        if refusal:
            raise PermissionDenied(refusal)
        for uploaded in data["files"]:
            too_large = services.upload_size_refusal(uploaded.size or 0)
            if too_large:
                raise UploadTooLarge(f"{uploaded.name}: {too_large} Nothing was stored.")
        api_upload_admit(request, files=len(data["files"]))
        outcomes = services.documents_upload(
            [
                services.UploadItem(name=uploaded.name or "", file=uploaded)
                for uploaded in data["files"]
            ],
            groups=groups,
            is_public=data["everyone"],
            user=request.user if request.user.is_authenticated else None,
            manager=request.user if request.user.is_authenticated else None,
        )
        any_stored = any(outcome.created for outcome in outcomes)
        return Response(
            {"results": [_upload_result(outcome) for outcome in outcomes]},
            status=status.HTTP_201_CREATED if any_stored else status.HTTP_200_OK,
        )


class DocumentDetailView(generics.GenericAPIView):
    permission_classes = [DocumentAdminForWrites, TokenScopePermission]
    serializer_class = DocumentDetailSerializer

    def get_queryset(self) -> QuerySet[Document]:
        return selectors.documents_readable_by(self.request.user)

    def _document(self, document_id: int) -> Document:
        return get_object_or_404(self.get_queryset(), id=document_id)

    @extend_schema(
        summary="A document with its versions",
        responses={200: DocumentDetailSerializer, 404: ERROR_RESPONSE},
    )
    def get(self, request: Request, document_id: int) -> Response:
        return Response(DocumentDetailSerializer(self._document(document_id)).data)

    @extend_schema(
        summary="Change who may read a document, its owner or its review date",
        description="Readers (`groups`, `everyone`) reach the search index at once. `owner` "
        "and `review_by` say who answers for the content and when it should be read again; "
        "past that date, answers citing the document say it is overdue for review. Fields "
        "left out keep their values.",
        request=DocumentAccessSerializer,
        responses={
            200: DocumentDetailSerializer,
            400: ERROR_RESPONSE,
            403: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
        },
    )
    def patch(self, request: Request, document_id: int) -> Response:
        document = managed(request.user, self._document(document_id))
        data = validated(DocumentAccessSerializer, request.data)
        if not {"groups", "everyone", "owner", "review_by"} & data.keys():
            raise RequestInvalid("Send groups, everyone, owner or review_by.")
        if "groups" in data or "everyone" in data:
            groups = (
                groups_from_references(data["groups"])
                if "groups" in data
                else list(document.groups.all())
            )
            everyone = data.get("everyone", document.is_public)
            refusal = roles.sharing_refusal(request.user, groups, everyone)
            if refusal:
                raise PermissionDenied(refusal)
            services.document_set_access(document=document, groups=groups, is_public=everyone)
        if "owner" in data or "review_by" in data:
            services.document_set_review(
                document=document,
                owner=data.get("owner", document.owner),
                review_by=data.get("review_by", document.review_by),
            )
        return Response(DocumentDetailSerializer(self._document(document_id)).data)

    @extend_schema(
        summary="Delete a document",
        description="It leaves search and answers at once; its record is kept.",
        responses={204: None, 403: ERROR_RESPONSE, 404: ERROR_RESPONSE},
    )
    def delete(self, request: Request, document_id: int) -> Response:
        services.document_delete(document=managed(request.user, self._document(document_id)))
        return Response(status=status.HTTP_204_NO_CONTENT)


class VersionDetailView(APIView):
    permission_classes = [DocumentAdminForWrites, TokenScopePermission]

    @extend_schema(
        summary="The status and progress of a version",
        responses={200: VersionSerializer, 404: ERROR_RESPONSE},
    )
    def get(self, request: Request, version_id: int) -> Response:
        version = selectors.version_readable_by(request.user, version_id=version_id)
        return Response(VersionSerializer(version).data)


def _version_acted_on(
    request: Request,
    version_id: int,
    *,
    act: Callable[[DocumentVersion], bool],
    refusal: str,
) -> Response:
    """Retry or cancel (`act`) a version the caller manages: its new state, or 409."""
    version = selectors.version_readable_by(request.user, version_id=version_id)
    managed(request.user, version.document)
    if not act(version):
        raise StateConflict(refusal)
    version.refresh_from_db()
    return Response(VersionSerializer(version).data)


class VersionRetryView(APIView):
    permission_classes = [DocumentAdminForWrites, TokenScopePermission]

    @extend_schema(
        summary="Queue a failed or cancelled version again",
        request=None,
        responses={
            200: VersionSerializer,
            403: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
            409: ERROR_RESPONSE,
        },
    )
    def post(self, request: Request, version_id: int) -> Response:
        return _version_acted_on(
            request,
            version_id,
            act=services.version_retry,
            refusal=services.version_retry_refusal(noun="version"),
        )


class VersionCancelView(APIView):
    permission_classes = [DocumentAdminForWrites, TokenScopePermission]

    @extend_schema(
        summary="Stop the ingestion of a queued or running version",
        request=None,
        responses={
            200: VersionSerializer,
            403: ERROR_RESPONSE,
            404: ERROR_RESPONSE,
            409: ERROR_RESPONSE,
        },
    )
    def post(self, request: Request, version_id: int) -> Response:
        return _version_acted_on(
            request,
            version_id,
            act=services.version_cancel,
            refusal=services.version_cancel_refusal(noun="version"),
        )
