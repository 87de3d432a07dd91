"""JSON bodies nested to a chosen depth, for the tests of every endpoint that takes JSON."""

from __future__ import annotations

import json
from typing import Any

from config.json_bodies import JSON_BODY_MAX_DEPTH

TOO_DEEP = f"The JSON body is nested too deeply (more than {JSON_BODY_MAX_DEPTH} levels)."
# What the attack sent: two kilobytes, a thousand arrays deep.
THOUSAND_DEEP = "[" * 1000 + "]" * 1000


def nested(depth: int) -> str:
    """Arrays `depth` deep around one number."""
    return "[" * depth + "1" + "]" * depth


def padded_to(fields: dict[str, Any], depth: int = JSON_BODY_MAX_DEPTH) -> str:
    """`fields` as a JSON object whose extra `padding` field takes it to `depth` levels."""
    return json.dumps({**fields, "padding": None}).replace(
        '"padding": null', f'"padding": {nested(depth - 1)}'
    )
