"""Any llama-index reader: a class named by its dotted path, made with its keyword arguments.

The documents it yields are synced by their ids: one is changed when the hash of its text and
metadata changes, deleted when it stops appearing. Its text is stored as a text document
(the reader has already extracted it). Secrets among the arguments are written
{"$file": PATH} or {"$env": VARIABLE} and read at run time.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import PurePath
from typing import Any

from django.conf import settings

from sources.kinds.base import FoundItem, KnownItem, SourceUnreachable
from sources.options import OptionError, option_json, option_list, option_text, secrets_resolved

# Access times change whenever a file is read; they say nothing of its content.
HASH_IGNORED_BY_DEFAULT = "last_accessed_date"


class LlamaIndexReader:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.class_path = option_text(options, "reader")
        if not self.class_path or "." not in self.class_path:
            raise OptionError(
                "A llama_index source names its reader class: "
                "--option reader=llama_index.core.SimpleDirectoryReader"
            )
        if not self.class_path.startswith(tuple(settings.SOURCE_LLAMA_READER_MODULES)):
            allowed = ", ".join(settings.SOURCE_LLAMA_READER_MODULES)
            raise OptionError(f"Reader classes come from {allowed}, not {self.class_path}.")
        self.reader_kwargs = option_json(options, "reader_kwargs", {})
        self.load_kwargs = option_json(options, "load_kwargs", {})
        if not isinstance(self.reader_kwargs, dict) or not isinstance(self.load_kwargs, dict):
            raise OptionError("reader_kwargs and load_kwargs are JSON objects.")
        ignored = option_list(options, "hash_ignore_metadata") or [HASH_IGNORED_BY_DEFAULT]
        self.hash_ignored = set(ignored)

    def state(self) -> dict[str, Any]:
        return {}

    def _reader_class(self) -> Any:
        module_name, _, class_name = self.class_path.rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise SourceUnreachable(
                f"The reader {self.class_path} is not installed here: {error}."
            ) from None

    def _documents(self) -> Iterable[Any]:
        try:
            reader = self._reader_class()(**secrets_resolved(self.reader_kwargs))
            return list(reader.load_data(**secrets_resolved(self.load_kwargs)))
        except (SourceUnreachable, OptionError):
            raise
        except Exception as error:  # the reader's own failure, in its own words
            raise SourceUnreachable(
                f"The reader {self.class_path} failed: {error.__class__.__name__}: {error}"
            ) from None

    def items(self, known: Mapping[str, KnownItem]) -> Iterator[FoundItem]:
        for document in self._documents():
            key = str(getattr(document, "id_", "") or getattr(document, "doc_id", ""))
            if not key:
                continue
            text = str(getattr(document, "text", "") or "")
            metadata = dict(getattr(document, "metadata", {}) or {})
            hashed = {k: v for k, v in metadata.items() if k not in self.hash_ignored}
            signature = hashlib.sha256(
                json.dumps({"text": text, "metadata": hashed}, sort_keys=True, default=str).encode()
            ).hexdigest()
            found = FoundItem(
                key=key[:2000],
                name=_text_name(metadata, key),
                source_path=str(metadata.get("file_path") or f"{self.class_path}:{key}"),
                signature=signature,
            )
            previous = known.get(found.key)
            if previous is None or previous.signature != signature:
                found.data = text.encode("utf-8")
            yield found


def _text_name(metadata: Mapping[str, Any], key: str) -> str:
    """A name for the stored text: the document's file name, as Markdown or plain text."""
    original = str(metadata.get("file_name") or metadata.get("title") or key)
    stem = PurePath(original.replace("\\", "/")).stem or "document"
    stem = "".join(c if c.isalnum() or c in "-_ ." else "_" for c in stem)[:150].strip() or "doc"
    markdown = original.lower().endswith((".md", ".markdown"))
    return f"{stem}.md" if markdown else f"{stem}.txt"
