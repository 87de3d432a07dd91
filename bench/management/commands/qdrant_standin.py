from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Serve a TEST STAND-IN for a Qdrant server: Qdrant's REST API, executed by "
        "qdrant-client's local mode in one folder, one request at a time. For tests and load "
        "tests where no Qdrant server can run; not for production."
    )
    # The stand-in uses neither the database nor the URLconf.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=6333)
        parser.add_argument("--path", required=True, help="folder that keeps the collections")
        parser.add_argument("--api-key", default=None, help="require this api-key header")

    def handle(self, *args: Any, **options: Any) -> None:
        from bench.qdrant_standin import standin_serve

        path = Path(options["path"])
        if path.exists() and not path.is_dir():
            raise CommandError(f"{path} is not a folder.")
        host, port = options["host"], options["port"]
        self.stdout.write(
            f"Qdrant stand-in (qdrant-client local mode, for tests only) at http://{host}:{port}, "
            f"data in {path}"
        )
        self.stdout.flush()
        # A background job starts with SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: whoever started the stand-in waited out its timeout and killed
        # it (30 s at the end of every test run started that way). Both signals stop it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            standin_serve(host=host, port=port, path=path, api_key=options["api_key"])
        except KeyboardInterrupt:
            pass
        except RuntimeError as error:
            # QdrantLocal's folder lock: another stand-in serves this folder.
            raise CommandError(str(error)) from error
