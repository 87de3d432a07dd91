"""The probes of a running process: health, readiness and the Prometheus scrape.

`/healthz` says the process answers at all; `/readyz` says whether it can serve now (the
database, the broker in cluster mode, the vector index, the model pool); `/metrics` is
scraped by Prometheus from inside the cluster.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from assistant.answering import model_pool
from config.metrics import REGISTRY
from ingestion.index_upkeep import index_upkeep_state
from ingestion.models import UNFINISHED_STATUSES, DocumentVersion, VersionStatus
from ingestion.vector_index.configured import vector_index

if TYPE_CHECKING:
    from inference.llm import EndpointPool

# A readiness probe that hangs is worse than one that fails: every check gets this long.
DEFAULT_READINESS_TIMEOUT_S = 2.0


class _ScrapeTimeCollector(Collector):
    """Values read when Prometheus scrapes: they describe shared state, not this process."""

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "assistant_ingestion_queue_depth",
            "Document versions waiting for or inside ingestion, by status.",
            labels=["status"],
        )
        counts = dict.fromkeys(UNFINISHED_STATUSES, 0)
        for status in DocumentVersion.objects.filter(status__in=UNFINISHED_STATUSES).values_list(
            "status", flat=True
        ):
            counts[VersionStatus(status)] += 1
        for status, count in counts.items():
            queue.add_metric([status.value], count)
        yield queue

        endpoints = GaugeMetricFamily(
            "assistant_vllm_endpoint_healthy",
            "1 when the model endpoint passed its last health check or request, else 0.",
            labels=["endpoint"],
        )
        pool = _model_pool()
        for endpoint in pool.status() if pool is not None else []:
            endpoints.add_metric(
                [_without_credentials(endpoint["url"])], 1 if endpoint["healthy"] else 0
            )
        yield endpoints


_SCRAPE_TIME = _ScrapeTimeCollector()
REGISTRY.register(_SCRAPE_TIME)


def metrics_exposition() -> bytes:
    """The Prometheus text of this process, or of all its siblings in multiprocess mode."""
    # Several ASGI workers each count their own answers; prometheus_client sums them from
    # the files under PROMETHEUS_MULTIPROC_DIR when the server is started with it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_SCRAPE_TIME)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    ms: float


def readiness_checks() -> list[CheckResult]:
    """Every dependency this process needs to serve, checked now, each with its outcome."""
    checks: list[tuple[str, Callable[[float], str]]] = [("database", _check_database)]
    if not settings.STANDALONE:
        checks.append(("redis", _check_redis))
    checks.append(("vector_index", _check_vector_index))
    if settings.VLLM_URLS:
        checks.append(("vllm", _check_model_pool))
    timeout_s = float(getattr(settings, "READINESS_TIMEOUT_S", DEFAULT_READINESS_TIMEOUT_S))
    return [_run_check(name, check, timeout_s) for name, check in checks]


def _run_check(name: str, check: Callable[[float], str], timeout_s: float) -> CheckResult:
    started = time.perf_counter()
    try:
        detail, ok = check(timeout_s), True
    except Exception as error:  # a probe reports every failure; it never raises
        detail, ok = _redacted(f"{type(error).__name__}: {error}"), False
    return CheckResult(
        name=name, ok=ok, detail=detail, ms=round((time.perf_counter() - started) * 1000, 1)
    )


def _check_database(timeout_s: float) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor} answered"


def _check_redis(timeout_s: float) -> str:
    import redis

    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        client.ping()
    finally:
        client.close()
    return "broker answered ping"


def _check_vector_index(timeout_s: float) -> str:
    index = vector_index()
    detail = f"{index.count()} passages"
    upkeep = index.upkeep()
    if upkeep is not None and upkeep.optimize_due:
        # Still ready: those passages are searched by brute force until then.
        when = "being built now" if upkeep.optimizing else "built at the next quiet moment"
        detail += f"; {upkeep.unindexed_points} wait for their search graph ({when})"
    return detail


def _check_model_pool(timeout_s: float) -> str:
    pool = _model_pool()
    assert pool is not None, "VLLM_URLS is set, so there is a pool"
    # The view runs in a worker thread without an event loop of its own.
    health = asyncio.run(asyncio.wait_for(pool.health_check(), timeout_s))
    up = [url for url, healthy in health.items() if healthy]
    down = [_without_credentials(url) for url, healthy in health.items() if not healthy]
    summary = f"{len(up)} of {len(health)} endpoints up"
    if not up:
        raise ConnectionError(f"{summary}; down: {', '.join(down)}")
    return f"{summary}; down: {', '.join(down)}" if down else summary


def _model_pool() -> EndpointPool | None:
    return model_pool()


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _redacted(text: str) -> str:
    """Error messages may quote a connection string; no configured secret leaves the process."""
    secrets = [
        settings.DATABASES["default"].get("PASSWORD") or "",
        urlsplit(settings.CELERY_BROKER_URL).password or "",
        settings.QDRANT_API_KEY,
        settings.VLLM_API_KEY,
        getattr(settings, "METRICS_TOKEN", ""),
    ]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@require_GET
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@require_GET
@never_cache
def readyz(request: HttpRequest) -> JsonResponse:
    results = readiness_checks()
    ready = all(result.ok for result in results)
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "checks": [asdict(result) for result in results],
    }
    if ready and (upkeep := index_upkeep_state()) is not None:
        body["index_upkeep"] = asdict(upkeep)
    return JsonResponse(
        body,
        status=200 if ready else 503,
    )


@require_GET
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    if not _may_scrape(request):
        return HttpResponse("Forbidden.\n", status=403, content_type="text/plain")
    return HttpResponse(metrics_exposition(), content_type=CONTENT_TYPE_LATEST)


def _may_scrape(request: HttpRequest) -> bool:
    token = str(getattr(settings, "METRICS_TOKEN", ""))
    if token:
        scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(offered.encode(), token.encode()):
            return True
    # A request relayed by a proxy on the same host arrives from loopback too; only a
    # direct local caller counts as local.
    if "X-Forwarded-For" in request.headers or "Forwarded" in request.headers:
        return False
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def probe_host_middleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Serve the probe paths whatever Host header they come with.

    Kubernetes probes, container health checks and Prometheus address a pod by its IP, which
    is not among ALLOWED_HOSTS, so Django would answer 400 and the pod would never be ready.
    These three paths build no URL from the host and show nothing host-specific, so for them
    alone the host is taken as the first allowed one; every other path is checked as usual.

    Synchronous on purpose, and first in MIDDLEWARE: Django runs each `MiddlewareMixin` of an
    async chain through `sync_to_async` once or twice per request (a dozen thread hops, each
    waiting for the interpreter lock under load); a synchronous first middleware makes the
    whole chain below run in the request's one worker thread.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        if request.path in PROBE_PATHS and settings.ALLOWED_HOSTS:
            host = settings.ALLOWED_HOSTS[0].lstrip(".")
            request.META["HTTP_HOST"] = "localhost" if host == "*" else host
        return get_response(request)

    return middleware
