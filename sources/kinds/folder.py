"""A folder on the server (in practice a mounted SMB or NFS share), read recursively.

A file whose size and modification time did not change is not read again: a re-sync of a
large share costs one stat per file. Readers come from the source's groups, or from a
mapping of subfolders to groups (`folder_groups`), or from each file's POSIX group.
"""

from __future__ import annotations

import grp
import os
from collections.abc import Iterator, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from django.conf import settings

from sources.kinds.base import FoundItem, KnownItem, SourceUnreachable
from sources.options import OptionError, option_bool, option_list, option_text


def folder_groups_parse(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """`HR:hr;Finance/Reports:finance,auditors` as (subfolder, groups), longest first."""
    mapping: list[tuple[str, tuple[str, ...]]] = []
    for entry in text.split(";"):
        if not entry.strip():
            continue
        folder, colon, names = entry.rpartition(":")
        groups = tuple(name.strip() for name in names.split(",") if name.strip())
        folder = folder.strip().strip("/")
        if not colon or not folder or not groups:
            raise OptionError(
                f"folder_groups entries are SUBFOLDER:group,group separated by “;”, not “{entry}”."
            )
        mapping.append((folder, groups))
    return sorted(mapping, key=lambda pair: -len(pair[0]))


class FolderReader:
    def __init__(self, location: str, options: Mapping[str, Any]) -> None:
        if not location:
            raise OptionError("A folder source needs its path (--path).")
        self.root = Path(location)
        self.include = option_list(options, "include")
        self.exclude = option_list(options, "exclude")
        self.mapping = folder_groups_parse(option_text(options, "folder_groups"))
        self.posix_group = option_bool(options, "posix_group")
        self.hidden = option_bool(options, "hidden")
        self._group_names: dict[int, str] = {}

    def state(self) -> dict[str, Any]:
        return {}

    def items(self, known: Mapping[str, KnownItem]) -> Iterator[FoundItem]:
        if not self.root.is_dir():
            raise SourceUnreachable(
                f"The folder {self.root} does not exist or is not mounted; nothing was changed."
            )
        try:
            with os.scandir(self.root):
                pass
        except OSError as error:
            raise SourceUnreachable(
                f"The folder {self.root} cannot be read: {error.strerror}."
            ) from None
        yield from self._walk(self.root, "", known)

    def _walk(
        self, folder: Path, prefix: str, known: Mapping[str, KnownItem]
    ) -> Iterator[FoundItem]:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            # Its files are neither read nor deleted: an unreadable folder is not an empty one.
            yield FoundItem(
                key=prefix,
                error=f"The folder {folder} cannot be read: {error.strerror}.",
                keeps_prefix=prefix,
            )
            return
        for entry in entries:
            if entry.name.startswith(".") and not self.hidden:
                continue
            key = prefix + entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(Path(entry.path), key + "/", known)
                    continue
                if not entry.is_file() or not self._wanted(key):
                    continue
                stat = entry.stat()
            except OSError as error:
                yield FoundItem(key=key, error=f"Cannot read {key}: {error.strerror}.")
                continue
            yield self._found(entry, key, stat, known.get(key))

    def _wanted(self, key: str) -> bool:
        name = key.rsplit("/", 1)[-1]
        if self.include and not any(
            fnmatchcase(key, pattern) or fnmatchcase(name, pattern) for pattern in self.include
        ):
            return False
        return not any(
            fnmatchcase(key, pattern) or fnmatchcase(name, pattern) for pattern in self.exclude
        )

    def _found(
        self, entry: os.DirEntry[str], key: str, stat: os.stat_result, known: KnownItem | None
    ) -> FoundItem:
        signature = f"{stat.st_size}:{stat.st_mtime_ns}"
        found = FoundItem(
            key=key,
            name=entry.name,
            source_path=entry.path,
            signature=signature,
            group_names=self._readers(key, stat),
        )
        if known is not None and known.signature == signature:
            return found
        if stat.st_size > settings.UPLOAD_MAX_BYTES:
            found.error = f"{key} is larger than the upload limit."
            return found
        try:
            with open(entry.path, "rb") as handle:
                found.data = handle.read()
        except OSError as error:
            found.error = f"Cannot read {key}: {error.strerror}."
        return found

    def _readers(self, key: str, stat: os.stat_result) -> tuple[str, ...]:
        names: list[str] = []
        for folder, groups in self.mapping:
            if key.startswith(folder + "/"):
                names.extend(groups)
                break
        if self.posix_group:
            names.append(self._posix_group_name(stat.st_gid))
        return tuple(dict.fromkeys(names))

    def _posix_group_name(self, gid: int) -> str:
        if gid not in self._group_names:
            try:
                self._group_names[gid] = grp.getgrgid(gid).gr_name
            except KeyError:
                self._group_names[gid] = str(gid)
        return self._group_names[gid]
