from __future__ import annotations

import pytest
from django.test import Client


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
