from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("accounts.urls")),
    # OpenID Connect sign-on; its views answer 404 while no provider is configured.
    path("oidc/", include("mozilla_django_oidc.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/", include("ingestion.api_urls")),
    path("documents/", include("ingestion.urls")),
    path("sources/", include("sources.urls")),
    path("audit/", include("assistant.audit_urls")),
    path("insight/", include("assistant.insight.urls")),
    path("", include("assistant.api_urls")),
    path("", include("assistant.probes_urls")),
    path("", include("assistant.urls")),
]

handler403 = "config.errors.permission_denied"
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"
