from __future__ import annotations

import json
import logging

from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from config.logs import JsonFormatter, RequestIdFilter
from config.request_context import RequestContextMiddleware


def test_a_log_line_carries_the_request_id_of_the_response() -> None:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("assistant.test")
    logger.addHandler(handler)

    def view(request: HttpRequest) -> HttpResponse:
        logger.warning("answering %s", request.path)
        return HttpResponse("ok")

    try:
        response = RequestContextMiddleware(view)(RequestFactory().get("/ask/"))
    finally:
        logger.removeHandler(handler)
    entry = json.loads(lines[-1])
    assert entry["level"] == "WARNING"
    assert entry["message"] == "answering /ask/"
    assert entry["request_id"] == response["X-Request-ID"]
    assert len(entry["request_id"]) == 32
