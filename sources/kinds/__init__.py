"""The kinds of source: each lists what its source holds now, reading as little as it can."""

from __future__ import annotations

from sources.kinds.base import FoundItem, KnownItem, SourceReader, SourceUnreachable
from sources.models import Source, SourceKind
from sources.options import OptionError


def source_reader(source: Source) -> SourceReader:
    """The reader of a source's kind, with its settings checked (OptionError when wrong)."""
    if source.kind == SourceKind.FOLDER:
        from sources.kinds.folder import FolderReader

        return FolderReader(source.location, source.options)
    if source.kind == SourceKind.WEB:
        from sources.kinds.web import WebReader

        return WebReader(source.location, source.options, state=source.state)
    if source.kind == SourceKind.LLAMA_INDEX:
        from sources.kinds.llama import LlamaIndexReader

        return LlamaIndexReader(source.options)
    if source.kind == SourceKind.IMAP:
        from sources.kinds.imap import ImapReader

        return ImapReader(source.location, source.options)
    raise OptionError(f"Unknown kind of source: {source.kind}")


__all__ = [
    "FoundItem",
    "KnownItem",
    "SourceReader",
    "SourceUnreachable",
    "source_reader",
]
