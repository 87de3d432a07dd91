"""What every kind of source gives the sync: the items it holds now, with as little reading
as their signatures allow."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class SourceUnreachable(Exception):
    """The source cannot be read as a whole: the run fails and nothing is deleted."""


@dataclass(frozen=True)
class KnownItem:
    """What the last runs learnt of an item."""

    key: str
    signature: str
    content_sha256: str
    extra: Mapping[str, Any]


@dataclass
class FoundItem:
    """An item as the source holds it now.

    `data` None (and no error, not gone) means its signature says it did not change and
    nothing was read. An item with an `error` is counted failed and its document kept.
    `keeps_prefix` says that what lies under it could not be listed: nothing there is deleted.
    """

    key: str
    name: str = ""
    source_path: str = ""
    signature: str = ""
    data: bytes | None = None
    group_names: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    gone: bool = False
    keeps_prefix: str | None = None


class SourceReader(Protocol):
    def items(self, known: Mapping[str, KnownItem]) -> Iterator[FoundItem]:
        """Every item the source holds now; raises SourceUnreachable when it cannot be read."""
        ...

    def state(self) -> dict[str, Any]:
        """What the kind keeps on the source between runs."""
        ...
