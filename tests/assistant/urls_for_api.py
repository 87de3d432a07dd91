"""The project's URLs with the assistant's APIs, for tests and servers started by them.

The project's urlconf includes the APIs once it routes them; until then this adds them.
"""

from __future__ import annotations

from django.urls import URLResolver, include, path

from config.urls import urlpatterns as project_urlpatterns


def _routes_the_apis() -> bool:
    return any(
        isinstance(pattern, URLResolver) and pattern.urlconf_name == "assistant.api_urls"
        for pattern in project_urlpatterns
    )


urlpatterns = [*project_urlpatterns]
if not _routes_the_apis():
    urlpatterns.insert(0, path("", include("assistant.api_urls")))
