"""JSON request bodies, held to a size and a nesting limit before any decoder sees them.

Python's json decoder recurses once for each nested array or object, so a body of two
kilobytes nested a thousand deep ends in RecursionError, a server error, instead of a refusal.
Every entry point that takes JSON reads it here: the REST API through `LimitedJSONParser`
(REST_FRAMEWORK's parser), the OpenAI-compatible endpoint and the portal's script posts
through `json_body_read`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Protocol

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer

# The deepest request the product takes nests five levels (a chat message's content parts);
# this leaves any client ample room and the decoder's stack none to exhaust.
JSON_BODY_MAX_DEPTH = 64

# What the depth scan must tell apart: a whole string (brackets inside it do not count), a
# bracket, or a quote that opens a string never closed.
_JSON_TOKEN = re.compile(
    r'(?P<string>"[^"\\]*(?:\\.[^"\\]*)*")|(?P<open>[\[{])|(?P<close>[\]}])|(?P<unclosed>")',
    re.DOTALL,
)


class JSONBodyRejected(Exception):
    """A body refused unread or undecodable; `message` is fit to show the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


def _nesting_check(text: str) -> None:
    """Refuse a body nested deeper than the limit without decoding it."""
    depth = 0
    for token in _JSON_TOKEN.finditer(text):
        kind = token.lastgroup
        if kind == "open":
            depth += 1
            if depth > JSON_BODY_MAX_DEPTH:
                raise JSONBodyRejected(
                    f"The JSON body is nested too deeply (more than {JSON_BODY_MAX_DEPTH} levels)."
                )
        elif kind == "close":
            depth -= 1
        elif kind == "unclosed":
            # Everything after it is inside a string: the decoder stops there with its reason.
            return


def _constant_refused(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def json_body_parse(raw: bytes) -> Any:
    """The JSON value of a request body (UTF-8, strict), or JSONBodyRejected saying why not."""
    limit: int = settings.JSON_BODY_MAX_BYTES
    if len(raw) > limit:
        raise JSONBodyRejected(f"The JSON body is too large (more than {limit} bytes).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JSONBodyRejected("The request body is not valid JSON: it is not UTF-8.") from error
    _nesting_check(text)
    try:
        return json.loads(text, parse_constant=_constant_refused)
    except ValueError as error:
        raise JSONBodyRejected(f"The request body is not valid JSON: {error}.") from error


def json_body_read(body: _Readable, *, if_empty: Any) -> Any:
    """Read and parse a request body; a body over the limit is refused without being held whole."""
    raw = body.read(settings.JSON_BODY_MAX_BYTES + 1)
    return json_body_parse(raw) if raw else if_empty


class LimitedJSONParser(BaseParser):
    """DRF's JSON parser held to the same limits: a refusal is a 400 with the reason in `detail`.

    Not a JSONParser subclass on purpose: DRF hands those `request.body`, which Django refuses
    with an HTML page above DATA_UPLOAD_MAX_MEMORY_SIZE; this one reads the stream itself.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(
        self,
        stream: _Readable,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return json_body_parse(stream.read(settings.JSON_BODY_MAX_BYTES + 1))
        except JSONBodyRejected as rejected:
            raise ParseError(rejected.message) from rejected
