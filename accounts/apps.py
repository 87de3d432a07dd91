from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class AccountsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "accounts"

    def ready(self) -> None:
        # Signing in and out, and changes to people and groups, are audited whoever makes them.
        from accounts import directory, ledger_hooks

        directory.connect_signals()
        ledger_hooks.connect_signals()


class SuperuserAdminConfig(admin_apps.AdminConfig):
    """The Django admin, whose site lets in superusers only (see accounts/admin_site.py)."""

    # Not the default configuration of this module: INSTALLED_APPS names it in full.
    default = False
    default_site = "accounts.admin_site.SuperuserAdminSite"
