"""TEST STAND-IN for a Qdrant server: Qdrant's REST API over qdrant-client's local mode.

This is not Qdrant. It exists because no Qdrant server can run on the machines where the
cluster-mode tests and the load test run, while the embedded engines lock their folder to
one process, so several web and Celery worker processes could not share an index.

It serves the part of Qdrant's REST API that this application's qdrant-client calls
(collections, aliases, payload indexes, points: upsert, delete, set payload, scroll,
count, retrieve, query with prefetch and fusion), with Qdrant's paths and its
`{"result": ..., "status": "ok", "time": ...}` envelope. Request bodies are parsed with
qdrant-client's own pydantic models (unknown fields are refused, as Qdrant does) and
executed by qdrant-client's local engine (QdrantLocal), one request at a time, because
local mode is not safe for a read and a write at once.

What it does not do, and a real Qdrant server does: shards and replicas (`shard_number`,
`replication_factor` and `write_consistency_factor` are recorded and reported back, not
applied), distributed consensus and consistency, HNSW indexes (local mode searches
exhaustively), payload indexes, snapshots, gRPC, and concurrency.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from qdrant_client import models
from qdrant_client.local.qdrant_local import QdrantLocal

logger = logging.getLogger(__name__)

STANDIN_TITLE = "qdrant - vector search engine (test stand-in on qdrant-client local mode)"
# Layout fields Qdrant applies across a cluster; the stand-in keeps and reports them.
LAYOUT_FIELDS = ("shard_number", "replication_factor", "write_consistency_factor")
MAX_BODY_BYTES = 64 * 1024 * 1024


class StandinError(Exception):
    """A request the stand-in answers with an error status, as Qdrant would."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, str]
    body: bytes

    def parsed(self, model: Any) -> Any:
        """The body as one of qdrant-client's REST models (a class or a Union of them)."""
        try:
            return _adapter(model).validate_json(self.body or b"{}")
        except ValidationError as error:
            raise StandinError(
                HTTPStatus.BAD_REQUEST, f"Format error in JSON body: {error}"
            ) from error


@functools.cache
def _adapter(model: Any) -> TypeAdapter[Any]:
    return TypeAdapter(model)


Handler = Callable[["QdrantStandin", Request, dict[str, str]], Any]


@dataclass
class QdrantStandin:
    """The engine behind the HTTP server: routes a request to QdrantLocal under one lock."""

    path: Path
    api_key: str | None = None
    created: list[dict[str, Any]] = field(default_factory=list)
    request_counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        # Handler threads take turns under `_lock`, so SQLite may be used from any of them.
        self._local = QdrantLocal(location=str(self.path), force_disable_check_same_thread=True)
        self._lock = threading.Lock()
        self._layouts: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        with self._lock:
            self._local.close()

    def handle(self, request: Request) -> tuple[HTTPStatus, Any]:
        """Answer one request: (status, JSON body)."""
        started = time.perf_counter()
        for method, pattern, handler, name in ROUTES:
            match = pattern.fullmatch(request.path)
            if match is None or method != request.method:
                continue
            if name in RAW_ROUTES:
                # Health and version answer at once, not behind a long write.
                return HTTPStatus.OK, handler(self, request, match.groupdict())
            with self._lock:
                self.request_counts[name] = self.request_counts.get(name, 0) + 1
                try:
                    result = handler(self, request, match.groupdict())
                except StandinError as error:
                    return error.status, _envelope_error(error.message, started)
                except (ValueError, KeyError) as error:
                    return _status_of(error), _envelope_error(str(error), started)
            return HTTPStatus.OK, {
                "result": to_jsonable_python(result),
                "status": "ok",
                "time": time.perf_counter() - started,
            }
        return HTTPStatus.NOT_FOUND, _envelope_error(
            f"The stand-in does not serve {request.method} {request.path}", started
        )

    def authorised(self, headers: dict[str, str]) -> bool:
        if not self.api_key:
            return True
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        return self.api_key in (headers.get("api-key"), bearer)

    # ---- service ------------------------------------------------------------------

    def root(self, request: Request, args: dict[str, str]) -> dict[str, Any]:
        # The client compares this version with its own; the engine is that same client.
        return {"title": STANDIN_TITLE, "version": version("qdrant-client"), "commit": None}

    def health(self, request: Request, args: dict[str, str]) -> str:
        return "healthz check passed"

    def stats(self, request: Request, args: dict[str, str]) -> dict[str, Any]:
        """What the stand-in was asked: create-collection bodies and requests per route."""
        with self._lock:
            return {
                "collections_created": list(self.created),
                "requests": dict(self.request_counts),
            }

    # ---- collections --------------------------------------------------------------

    def collections(self, request: Request, args: dict[str, str]) -> Any:
        return self._local.get_collections()

    def collection_exists(self, request: Request, args: dict[str, str]) -> Any:
        return models.CollectionExistence(exists=self._local.collection_exists(args["name"]))

    def collection_get(self, request: Request, args: dict[str, str]) -> Any:
        name = args["name"]
        info = self._local.get_collection(name)
        layout = self._layouts.get(self._local.aliases.get(name, name), {})
        params = info.config.params.model_copy(update=layout)
        return info.model_copy(update={"config": info.config.model_copy(update={"params": params})})

    def collection_create(self, request: Request, args: dict[str, str]) -> bool:
        name = args["name"]
        body: models.CreateCollection = request.parsed(models.CreateCollection)
        if name in self._local.collections or name in self._local.aliases:
            raise StandinError(HTTPStatus.CONFLICT, f"Collection `{name}` already exists!")
        self._local.create_collection(
            name,
            vectors_config=body.vectors,
            sparse_vectors_config=body.sparse_vectors,
            metadata=body.metadata,
        )
        self.created.append({"collection": name, "body": json.loads(request.body or b"{}")})
        self._layouts[name] = {
            key: getattr(body, key) for key in LAYOUT_FIELDS if getattr(body, key) is not None
        }
        return True

    def collection_update(self, request: Request, args: dict[str, str]) -> bool:
        body: models.UpdateCollection = request.parsed(models.UpdateCollection)
        return self._local.update_collection(args["name"], metadata=body.metadata)

    def collection_delete(self, request: Request, args: dict[str, str]) -> bool:
        self._layouts.pop(args["name"], None)
        return self._local.delete_collection(args["name"])

    def aliases(self, request: Request, args: dict[str, str]) -> Any:
        return self._local.get_aliases()

    def collection_aliases(self, request: Request, args: dict[str, str]) -> Any:
        return self._local.get_collection_aliases(args["name"])

    def aliases_update(self, request: Request, args: dict[str, str]) -> bool:
        body: models.ChangeAliasesOperation = request.parsed(models.ChangeAliasesOperation)
        # QdrantLocal applies the whole list or nothing, as the server does in one lock.
        return self._local.update_collection_aliases(body.actions)

    def payload_index_create(self, request: Request, args: dict[str, str]) -> Any:
        body: models.CreateFieldIndex = request.parsed(models.CreateFieldIndex)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            return self._local.create_payload_index(
                args["name"], field_name=body.field_name, field_schema=body.field_schema
            )

    # ---- points -------------------------------------------------------------------

    def points_upsert(self, request: Request, args: dict[str, str]) -> Any:
        body = request.parsed(models.PointInsertOperations)
        points = body.points if isinstance(body, models.PointsList) else body.batch
        return self._local.upsert(args["name"], points=points, update_filter=body.update_filter)

    def points_delete(self, request: Request, args: dict[str, str]) -> Any:
        selector = request.parsed(models.PointsSelector)
        return self._local.delete(args["name"], points_selector=selector)

    def payload_set(self, request: Request, args: dict[str, str]) -> Any:
        body: models.SetPayload = request.parsed(models.SetPayload)
        return self._local.set_payload(
            args["name"], payload=body.payload, points=_selector(body), key=body.key
        )

    def payload_overwrite(self, request: Request, args: dict[str, str]) -> Any:
        body: models.SetPayload = request.parsed(models.SetPayload)
        return self._local.overwrite_payload(
            args["name"], payload=body.payload, points=_selector(body)
        )

    def points_scroll(self, request: Request, args: dict[str, str]) -> Any:
        body: models.ScrollRequest = request.parsed(models.ScrollRequest)
        records, next_offset = self._local.scroll(
            args["name"],
            scroll_filter=body.filter,
            limit=body.limit or 10,
            order_by=body.order_by,
            offset=body.offset,
            with_payload=body.with_payload if body.with_payload is not None else True,
            with_vectors=body.with_vector or False,
        )
        return models.ScrollResult(points=records, next_page_offset=next_offset)

    def points_count(self, request: Request, args: dict[str, str]) -> Any:
        body: models.CountRequest = request.parsed(models.CountRequest)
        return self._local.count(args["name"], count_filter=body.filter, exact=True)

    def points_retrieve(self, request: Request, args: dict[str, str]) -> Any:
        body: models.PointRequest = request.parsed(models.PointRequest)
        return self._local.retrieve(
            args["name"],
            ids=body.ids,
            with_payload=body.with_payload if body.with_payload is not None else True,
            with_vectors=body.with_vector or False,
        )

    def point_get(self, request: Request, args: dict[str, str]) -> Any:
        raw = args["id"]
        point_id: models.ExtendedPointId = int(raw) if raw.isdigit() else raw
        records = self._local.retrieve(args["name"], ids=[point_id], with_vectors=True)
        if not records:
            raise StandinError(HTTPStatus.NOT_FOUND, f"No point with id {raw} found")
        return records[0]

    def points_query(self, request: Request, args: dict[str, str]) -> Any:
        body: models.QueryRequest = request.parsed(models.QueryRequest)
        return self._local.query_points(
            args["name"],
            query=_as_query(body.query),
            using=body.using,
            prefetch=body.prefetch,
            query_filter=body.filter,
            search_params=body.params,
            limit=body.limit or 10,
            offset=body.offset,
            # The server's REST default is no payload; local mode's is the payload.
            with_payload=body.with_payload if body.with_payload is not None else False,
            with_vectors=body.with_vector or False,
            score_threshold=body.score_threshold,
            lookup_from=body.lookup_from,
        )


_QUERY_MODELS = tuple(model for model in typing.get_args(models.Query) if isinstance(model, type))


def _as_query(query: models.QueryInterface | None) -> models.Query | None:
    """Qdrant takes a bare vector or point id as a nearest-neighbour query; so does this."""
    if query is None or isinstance(query, _QUERY_MODELS):
        return query  # type: ignore[return-value]
    return models.NearestQuery(nearest=query)  # type: ignore[arg-type]


def _selector(body: models.SetPayload) -> models.PointsSelector:
    if body.points is not None:
        return models.PointIdsList(points=body.points)
    if body.filter is not None:
        return models.FilterSelector(filter=body.filter)
    raise StandinError(
        HTTPStatus.BAD_REQUEST, "Either list of point ids or filter must be provided"
    )


def _status_of(error: Exception) -> HTTPStatus:
    """Qdrant's status for what QdrantLocal reports as ValueError."""
    message = str(error)
    if "already exists" in message:
        return HTTPStatus.CONFLICT
    if "not found" in message or "does not exist" in message:
        return HTTPStatus.NOT_FOUND
    return HTTPStatus.BAD_REQUEST


def _envelope_error(message: str, started: float) -> dict[str, Any]:
    return {"result": None, "status": {"error": message}, "time": time.perf_counter() - started}


_NAME = r"(?P<name>[^/]+)"


def _readable(pattern: str) -> str:
    """A route as Qdrant's documentation writes it: /collections/{name}/points."""
    return re.sub(r"\(\?P<(\w+)>\[\^/\]\+\)", r"{\1}", pattern)


ROUTES: list[tuple[str, re.Pattern[str], Handler, str]] = [
    (method, re.compile(pattern), handler, f"{method} {_readable(pattern)}")
    for method, pattern, handler in [
        ("GET", r"/", QdrantStandin.root),
        ("GET", r"/(?:healthz|livez|readyz)", QdrantStandin.health),
        ("GET", r"/standin/stats", QdrantStandin.stats),
        ("GET", r"/collections", QdrantStandin.collections),
        ("GET", r"/aliases", QdrantStandin.aliases),
        ("POST", r"/collections/aliases", QdrantStandin.aliases_update),
        ("GET", rf"/collections/{_NAME}", QdrantStandin.collection_get),
        ("PUT", rf"/collections/{_NAME}", QdrantStandin.collection_create),
        ("PATCH", rf"/collections/{_NAME}", QdrantStandin.collection_update),
        ("DELETE", rf"/collections/{_NAME}", QdrantStandin.collection_delete),
        ("GET", rf"/collections/{_NAME}/exists", QdrantStandin.collection_exists),
        ("GET", rf"/collections/{_NAME}/aliases", QdrantStandin.collection_aliases),
        ("PUT", rf"/collections/{_NAME}/index", QdrantStandin.payload_index_create),
        ("PUT", rf"/collections/{_NAME}/points", QdrantStandin.points_upsert),
        ("POST", rf"/collections/{_NAME}/points", QdrantStandin.points_retrieve),
        ("GET", rf"/collections/{_NAME}/points/(?P<id>[^/]+)", QdrantStandin.point_get),
        ("POST", rf"/collections/{_NAME}/points/delete", QdrantStandin.points_delete),
        ("POST", rf"/collections/{_NAME}/points/payload", QdrantStandin.payload_set),
        ("PUT", rf"/collections/{_NAME}/points/payload", QdrantStandin.payload_overwrite),
        ("POST", rf"/collections/{_NAME}/points/scroll", QdrantStandin.points_scroll),
        ("POST", rf"/collections/{_NAME}/points/count", QdrantStandin.points_count),
        ("POST", rf"/collections/{_NAME}/points/query", QdrantStandin.points_query),
    ]
]
# Answered as they are, without the result envelope (as Qdrant does for these).
RAW_ROUTES = {"GET /", "GET /(?:healthz|livez|readyz)", "GET /standin/stats"}


class _RequestHandler(BaseHTTPRequestHandler):
    # Keep-alive, as qdrant-client's HTTP client expects of a server.
    protocol_version = "HTTP/1.1"
    server: StandinHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"status": {"error": "too large"}})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        engine = self.server.engine
        if not engine.authorised({key.lower(): value for key, value in self.headers.items()}):
            self._reply(HTTPStatus.UNAUTHORIZED, {"status": {"error": "Invalid api-key"}})
            return
        url = urlsplit(self.path)
        params = {key: values[-1] for key, values in parse_qs(url.query).items()}
        status, payload = engine.handle(Request(self.command, url.path or "/", params, body))
        self._reply(status, payload)

    def _reply(self, status: HTTPStatus, payload: Any) -> None:
        if isinstance(payload, str):
            data, content_type = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StandinHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Many worker processes connect at once; the default backlog of 5 would refuse some.
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], engine: QdrantStandin) -> None:
        super().__init__(address, _RequestHandler)
        self.engine = engine


def standin_serve(*, host: str, port: int, path: Path, api_key: str | None = None) -> None:
    """Serve until interrupted; the folder keeps the collections across restarts."""
    engine = QdrantStandin(path=path, api_key=api_key)
    server = StandinHTTPServer((host, port), engine)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine.close()
