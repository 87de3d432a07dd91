from __future__ import annotations

import logging

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.views import APIView

from config import urls as config_urls
from ingestion.models import Document


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view's internals")


class BrokenAPIView(APIView):
    authentication_classes: list[type] = []
    permission_classes: list[type] = []

    def get(self, request: Request) -> HttpResponse:
        raise RuntimeError("the view's internals")


# This module is also the URLconf of the server-error tests: the app's addresses and error
# handlers, and views that fail under each of them.
urlpatterns = [
    path("api/broken", broken),
    path("api/broken-drf", BrokenAPIView.as_view()),
    path("v1/broken", broken),
    path("broken", broken),
    *config_urls.urlpatterns,
]
handler404 = config_urls.handler404
handler500 = config_urls.handler500


@pytest.mark.django_db
def test_an_unknown_api_address_answers_json_in_the_apis_own_shape(client: Client) -> None:
    rest = client.get("/api/documents/not-a-number/")
    assert rest.status_code == 404
    assert rest.json() == {"detail": "Not found."}

    openai = client.get("/v1/engines")
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "not_found"

    page = client.get("/no-such-page/")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
@pytest.mark.parametrize("address", ["/api/broken", "/api/broken-drf"])
def test_a_server_error_in_the_rest_api_answers_json(address: str) -> None:
    response = Client(raise_request_exception=False).get(address)

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_a_server_error_in_the_openai_api_answers_in_openais_shape() -> None:
    response = Client(raise_request_exception=False).get("/v1/broken")

    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "message": "Internal server error.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__)
def test_a_server_error_on_a_page_shows_the_error_page() -> None:
    response = Client(raise_request_exception=False).get("/broken")

    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"internals" not in response.content


@pytest.mark.django_db
def test_a_refused_page_says_why_in_the_site_s_layout_without_a_traceback_in_the_log(
    django_user_model: type[User], caplog: pytest.LogCaptureFixture
) -> None:
    erin = django_user_model.objects.create_user("erin", password="a-long-password")
    client = Client()
    client.force_login(erin)

    with caplog.at_level(logging.WARNING, logger="django.request"):
        refused = client.get("/documents/")

    assert refused.status_code == 403
    html = refused.content.decode()
    assert '<nav class="site-nav"' in html
    assert "Not for your account" in html
    assert "Only document admins may manage documents." in html
    assert "<p></p>" not in html
    (logged,) = [record for record in caplog.records if record.name == "django.request"]
    assert logged.getMessage() == "Forbidden (Permission denied): /documents/"
    assert logged.exc_info is None
    assert "Traceback" not in caplog.text


@pytest.mark.django_db
def test_a_missing_conversation_or_deleted_document_shows_the_site_s_not_found_page(
    django_user_model: type[User],
) -> None:
    root = django_user_model.objects.create_superuser("root", password="a-long-password")
    deleted = Document.objects.create(
        title="Old handbook", source_path="old.md", deleted_at=timezone.now()
    )
    client = Client()
    client.force_login(root)

    for address in ["/c/999999/", f"/documents/{deleted.pk}/", "/no-such-page/"]:
        response = client.get(address)
        assert response.status_code == 404, address
        html = response.content.decode()
        assert '<nav class="site-nav"' in html, address
        assert "Not found" in html
        assert "Old handbook" not in html
