"""Probes and metrics as an orchestrator and Prometheus see them, over the real stack."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import include, path

from config.metrics import record_answer, record_passages_indexed, record_retrieval

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

urlpatterns = [path("", include("assistant.probes_urls"))]


def closed_port() -> int:
    # A port that was free a moment ago: connecting to it is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_healthz_says_ok_without_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_the_database_and_index_answer(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    checks = {check["name"]: check for check in response.json()["checks"]}
    assert set(checks) == {"database", "vector_index"}
    assert all(check["ok"] for check in checks.values())
    assert checks["vector_index"]["detail"] == "0 passages"
    assert all(check["ms"] >= 0 for check in checks.values())


def test_readyz_names_the_model_pool_when_no_endpoint_answers(client: Client) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with override_settings(VLLM_URLS=[url], VLLM_API_KEY="sk-never-shown"):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    failing = [check for check in body["checks"] if not check["ok"]]
    assert [check["name"] for check in failing] == ["vllm"]
    assert "0 of 1 endpoints up" in failing[0]["detail"]
    assert url in failing[0]["detail"]
    assert "sk-never-shown" not in response.content.decode()


def test_metrics_show_recorded_answers_to_a_local_scraper(client: Client) -> None:
    record_answer("answered", "extractive", total_ms=1200.0, first_token_ms=300.0, tokens=42)
    record_retrieval(12.5)
    record_passages_indexed(7)
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert 'assistant_answers_total{mode="extractive",status="answered"}' in text
    for name in (
        "assistant_answer_seconds_bucket",
        "assistant_answer_first_token_seconds_bucket",
        "assistant_answer_tokens_total",
        "assistant_retrieval_seconds_bucket",
        "assistant_passages_indexed_total",
        'assistant_ingestion_queue_depth{status="QUEUED"} 0.0',
        "assistant_vllm_endpoint_healthy",
    ):
        assert name in text, name


def test_metrics_show_each_model_endpoint_health(client: Client) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with override_settings(VLLM_URLS=[url]):
        client.get("/readyz")
        text = client.get("/metrics").content.decode()
    assert f'assistant_vllm_endpoint_healthy{{endpoint="{url}"}} 0.0' in text


def test_metrics_refuse_a_remote_scraper_without_the_token(client: Client) -> None:
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    relayed = client.get("/metrics", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert relayed.status_code == 403


@override_settings(METRICS_TOKEN="scrape-secret")
def test_metrics_admit_a_remote_scraper_with_the_token(client: Client) -> None:
    wrong = client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 403
    right = client.get(
        "/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION="Bearer scrape-secret"
    )
    assert right.status_code == 200
    assert b"# HELP assistant_answers_total" in right.content


def test_readyz_in_cluster_mode_names_an_unreachable_broker_without_its_password(
    client: Client,
) -> None:
    broker = f"redis://:broker-password@127.0.0.1:{closed_port()}/0"
    with override_settings(STANDALONE=False, CELERY_BROKER_URL=broker):
        response = client.get("/readyz")
    assert response.status_code == 503
    checks = {check["name"]: check for check in response.json()["checks"]}
    assert not checks["redis"]["ok"]
    assert checks["database"]["ok"]
    assert "broker-password" not in response.content.decode()


def test_probes_by_pod_address_are_answered_while_other_paths_check_the_host(
    client: Client, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["assistant.example.internal"]
    # Kubernetes and Prometheus send the pod's IP as the host.
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/metrics", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/accounts/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400
