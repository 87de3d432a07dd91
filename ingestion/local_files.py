"""Files on the server's own disk, as `manage.py ingest` and the evaluation kit take them."""

from __future__ import annotations

import os
from pathlib import Path


class NoSuchPath(Exception):
    """A path given to ingest does not exist."""


def files_under(paths: list[str]) -> list[tuple[Path, str]]:
    """Each file with its source path: as given, or as found under a given folder.

    Hidden files and folders (a leading dot) are left out.
    """
    found: list[tuple[Path, str]] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                relative = child.relative_to(path)
                if child.is_file() and not any(part.startswith(".") for part in relative.parts):
                    found.append((child, os.path.join(given, str(relative))))
        elif path.is_file():
            found.append((path, given))
        else:
            raise NoSuchPath(f"No such file or folder: {given}")
    return found
