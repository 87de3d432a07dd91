from __future__ import annotations

import io
import json
from typing import Any

import pytest

from config.json_bodies import (
    JSON_BODY_MAX_DEPTH,
    JSONBodyRejected,
    json_body_parse,
    json_body_read,
)
from tests.config.nested_json import THOUSAND_DEEP, TOO_DEEP, nested, padded_to


def refusal(raw: bytes) -> str:
    with pytest.raises(JSONBodyRejected) as rejected:
        json_body_parse(raw)
    return rejected.value.message


def test_an_ordinary_body_is_parsed() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    assert json_body_parse(json.dumps(body).encode()) == body


def test_a_body_nested_to_the_limit_is_parsed_and_one_level_more_is_refused() -> None:
    assert json_body_parse(nested(JSON_BODY_MAX_DEPTH).encode()) is not None
    assert json_body_parse(padded_to({"question": "Why?"}).encode())["question"] == "Why?"

    assert refusal(nested(JSON_BODY_MAX_DEPTH + 1).encode()) == TOO_DEEP
    assert refusal(padded_to({}, JSON_BODY_MAX_DEPTH + 1).encode()) == TOO_DEEP


@pytest.mark.parametrize(
    "body",
    [THOUSAND_DEEP, '{"a":' * 1000 + "1" + "}" * 1000, "[" * 100_000],
    ids=["arrays", "objects", "never-closed"],
)
def test_a_deep_body_is_refused_before_the_decoder_can_overflow_its_stack(body: str) -> None:
    assert refusal(body.encode()) == TOO_DEEP


def test_brackets_inside_strings_do_not_count() -> None:
    text = '["' + "[{" * 1000 + '\\"' + "[" * 1000 + '"]'
    assert json_body_parse(text.encode()) == [text[2:-2].replace('\\"', '"')]


def test_a_string_never_closed_is_invalid_json_whatever_follows() -> None:
    message = refusal(b'["' + b"[" * 1000)
    assert message.startswith("The request body is not valid JSON: Unterminated string")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "Expecting value"),
        (b'{"question": }', "Expecting value"),
        (b'{"n": NaN}', "NaN is not a JSON value"),
        ('{"question": "Grüße"}'.encode("latin-1"), "it is not UTF-8"),
    ],
)
def test_a_body_that_is_not_json_is_refused_with_the_reason(raw: bytes, reason: str) -> None:
    message = refusal(raw)
    assert message.startswith("The request body is not valid JSON")
    assert reason in message


def test_a_body_over_the_size_limit_is_refused(settings: Any) -> None:
    settings.JSON_BODY_MAX_BYTES = 100
    assert json_body_parse(b'"' + b"x" * 98 + b'"') == "x" * 98

    assert refusal(b'"' + b"x" * 99 + b'"') == "The JSON body is too large (more than 100 bytes)."


def test_reading_stops_one_byte_past_the_size_limit(settings: Any) -> None:
    settings.JSON_BODY_MAX_BYTES = 1000
    stream = io.BytesIO(b"[" + b"1," * 5_000_000 + b"1]")

    with pytest.raises(JSONBodyRejected, match="too large"):
        json_body_read(stream, if_empty=None)
    assert stream.tell() == 1001


def test_an_empty_body_reads_as_the_callers_default() -> None:
    assert json_body_read(io.BytesIO(b""), if_empty={}) == {}
