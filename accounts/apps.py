from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"

    def ready(self) -> None:
        # Signing in and out is audited whichever backend let the person in.
        from accounts.directory import connect_signals

        connect_signals()


class SuperuserAdminConfig(admin_apps.AdminConfig):
    """The Django admin, whose site lets in superusers only (see accounts/admin_site.py)."""

    # Not the default configuration of this module: INSTALLED_APPS names it in full.
    default = False
    default_site = "accounts.admin_site.SuperuserAdminSite"
