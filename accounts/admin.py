"""API tokens in the Django admin: superusers see everyone's and may revoke, nothing else."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.models import ApiToken
from accounts.tokens import token_revoke


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "name",
        "user",
        "prefix",
        "scopes_text",
        "created_at",
        "expires_at",
        "last_used_at",
        "status",
    ]
    list_filter = ["revoked_at", "expires_at"]
    search_fields = ["name", "prefix", "user__username"]
    # The hash is left out: it is of no use to a person and need not travel.
    fields = readonly_fields = (
        "user",
        "name",
        "prefix",
        "scopes",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_ip",
        "revoked_at",
        "revoked_by",
    )
    actions = ["revoke_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Tokens are issued by their owner, who alone ever sees the secret.
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        # The detail page opens read-only; revoking is the one change, done by the action.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        # A revoked token stays on record.
        return False

    def has_view_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.action(description="Revoke the selected tokens", permissions=["revoke"])
    def revoke_selected(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        actor = request.user if request.user.is_authenticated else None
        revoked = sum(
            token_revoke(token=token, actor=actor) for token in queryset.select_related("user")
        )
        self.message_user(request, f"Revoked {revoked} token(s).", messages.SUCCESS)
