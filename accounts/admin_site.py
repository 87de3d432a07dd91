"""The Django admin site, for superusers only: `is_staff` alone opens nothing."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.http import HttpRequest


class SuperuserAdminSite(AdminSite):
    def has_permission(self, request: HttpRequest) -> bool:
        # Document admins and auditors have their own pages; the admin edits users and groups,
        # which would let anyone in it grant themselves every role.
        user = request.user
        return bool(user.is_active and user.is_superuser)
