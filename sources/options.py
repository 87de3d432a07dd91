"""A source's options: typed reads, and secrets that live in files or the environment only.

A secret is given as `NAME_file=/path` or `NAME_env=VARIABLE` and read when a run needs it;
an option whose name says it is a secret (password, token, ...) given in clear is refused, so
no secret is ever stored in the database or shown on a page.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "authorization")
FILE_SUFFIX = "_file"
ENV_SUFFIX = "_env"


class OptionError(ValueError):
    """An option is malformed, or a secret was given in clear."""


def looks_secret(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS) or lowered in ("header", "auth")


def options_parse(pairs: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` strings as a dict; a secret in clear is refused with the way to give it."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        key = key.strip()
        if not equals or not key:
            raise OptionError(f"An option is KEY=VALUE, not “{pair}”.")
        options[key] = value.strip()
    options_check(options)
    return options


def options_check(options: Mapping[str, Any]) -> None:
    for key, value in options.items():
        if key.endswith((FILE_SUFFIX, ENV_SUFFIX)):
            continue
        if looks_secret(key):
            raise OptionError(
                f"“{key}” looks like a secret: give it as {key}_file=/path/to/file or "
                f"{key}_env=VARIABLE, so it is never stored in the database."
            )
        if isinstance(value, str) and ("{" in value):
            _refuse_secret_in_json(key, value)


def _refuse_secret_in_json(key: str, value: str) -> None:
    """A reader's keyword arguments, as JSON, may name secrets only as {"$file"}/{"$env"}."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return
    for name, inner in _walk(parsed):
        if looks_secret(name) and not (isinstance(inner, dict) and _secret_ref(inner)):
            raise OptionError(
                f"“{name}” in {key} looks like a secret: write it as "
                '{"$file": "/path"} or {"$env": "VARIABLE"}.'
            )


def _walk(value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for name, inner in value.items():
            yield str(name), inner
            if not (isinstance(inner, dict) and _secret_ref(inner)):
                yield from _walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk(inner)


def _secret_ref(value: Mapping[str, Any]) -> bool:
    return set(value) in ({"$file"}, {"$env"})


def secret_read(options: Mapping[str, Any], name: str) -> str | None:
    """The secret `name` from its file or environment variable, or None when not given."""
    if options.get(name + FILE_SUFFIX):
        return _from_file(str(options[name + FILE_SUFFIX]), name)
    if options.get(name + ENV_SUFFIX):
        return _from_env(str(options[name + ENV_SUFFIX]), name)
    return None


def _from_file(path: str, name: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise OptionError(f"The {name} file cannot be read: {error.strerror}.") from None


def _from_env(variable: str, name: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise OptionError(f"The {name} environment variable {variable} is not set.")
    return value


def secrets_resolved(value: Any) -> Any:
    """JSON with every {"$file": path} / {"$env": NAME} replaced by what it names."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            return _from_file(str(value["$file"]), "secret")
        if set(value) == {"$env"}:
            return _from_env(str(value["$env"]), "secret")
        return {name: secrets_resolved(inner) for name, inner in value.items()}
    if isinstance(value, list):
        return [secrets_resolved(inner) for inner in value]
    return value


def option_text(options: Mapping[str, Any], name: str, default: str = "") -> str:
    value = options.get(name)
    return default if value is None else str(value)


def option_list(options: Mapping[str, Any], name: str) -> list[str]:
    """A comma-separated option as a list; empty entries dropped."""
    return [part.strip() for part in option_text(options, name).split(",") if part.strip()]


def option_bool(options: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = options.get(name)
    if value is None or value == "":
        return default
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise OptionError(f"{name} is true or false, not “{value}”.")


def option_number(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} is a number, not “{value}”.") from None


def option_json(options: Mapping[str, Any], name: str, default: Any) -> Any:
    value = options.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as error:
        raise OptionError(f"{name} is JSON: {error}.") from None
