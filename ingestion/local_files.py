"""Files on the server's own disk, as `manage.py ingest` and the evaluation kit take them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path, PurePosixPath

from django.contrib.auth.models import Group, User
from django.core.files import File

from ingestion.services import UPLOAD_BATCH_FILES, UploadItem, UploadOutcome, documents_upload


class NoSuchPath(Exception):
    """A path given to ingest does not exist."""


def files_under(paths: list[str]) -> list[tuple[Path, str]]:
    """Each file with its source path, relative to what was ingested.

    A relative path is kept as given (`handbook/leave.md`, found under `handbook/`). A path
    outside the working folder (absolute, or climbing with `..`) says nothing to readers but
    where the files lay on the server, so it is named from the folder or file given:
    `/srv/share/handbook` gives `handbook/leave.md`, `/srv/share/travel.pdf` gives `travel.pdf`.
    Hidden files and folders (a leading dot) are left out.
    """
    found: list[tuple[Path, str]] = []
    for given in paths:
        path = Path(given)
        shown = _shown_as(path)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in relative.parts):
                    found.append((child, (shown / relative).as_posix()))
        elif path.is_file():
            found.append((path, shown.as_posix()))
        else:
            raise NoSuchPath(f"No such file or folder: {given}")
    return found


def local_files_upload(
    files: list[tuple[Path, str]],
    *,
    groups: Sequence[Group] = (),
    is_public: bool = False,
    user: User | None = None,
) -> list[UploadOutcome]:
    """Store `files_under`'s files as `documents_upload` stores uploads, a batch of files
    open at a time. A file that cannot be read (gone since it was listed, say) fails alone,
    in its place."""
    outcomes: list[UploadOutcome] = []
    for start in range(0, len(files), UPLOAD_BATCH_FILES):
        with ExitStack() as still_open:
            unreadable: dict[int, UploadOutcome] = {}
            items: list[UploadItem] = []
            for index, (path, source) in enumerate(files[start : start + UPLOAD_BATCH_FILES]):
                try:
                    handle = still_open.enter_context(path.open("rb"))
                except OSError as error:
                    reason = error.strerror or type(error).__name__
                    unreadable[index] = UploadOutcome(
                        name=path.name,
                        version=None,
                        created=False,
                        error=f"The file could not be read ({reason}). Not stored.",
                    )
                    continue
                items.append(
                    UploadItem(
                        name=path.name, file=File(handle, name=path.name), source_path=source
                    )
                )
            stored = iter(documents_upload(items, groups=groups, is_public=is_public, user=user))
            outcomes.extend(
                unreadable[index] if index in unreadable else next(stored)
                for index in range(len(items) + len(unreadable))
            )
    return outcomes


def _shown_as(path: Path) -> PurePosixPath:
    """How a path given to ingest is named in source paths: never where it is on the server."""
    if not path.is_absolute() and ".." not in path.parts:
        return PurePosixPath(os.path.normpath(path).replace(os.sep, "/"))
    return PurePosixPath(path.resolve().name)
