from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingestion.vector_index.base import IndexLockedError, VectorIndexError

ADMIN_NAME = "admin"


class Command(BaseCommand):
    help = "Run the assistant: the web server and, in standalone mode, ingestion in one process."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("ASSISTANT_HOST", "127.0.0.1"))
        parser.add_argument(
            "--port", type=int, default=int(os.environ.get("ASSISTANT_PORT", "8000"))
        )
        parser.add_argument("--workers", type=int, default=1, help="cluster mode only")

    def handle(self, *args: Any, **options: Any) -> None:
        import uvicorn

        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        login_hint = self._ensure_admin()
        from assistant.answer_recovery import answer_sweeper_start, answers_interrupted_close
        from audit.ledger import anchor_adopt_unanchored_head, settings_record_if_changed

        anchor_adopt_unanchored_head()
        settings_record_if_changed()
        # Standalone: this is the one process that streams, so whatever is in progress died
        # with the last one. Cluster: only answers no live process has checkpointed lately.
        closed = answers_interrupted_close(stale_after_s=0 if settings.STANDALONE else None)
        if closed:
            self.stdout.write(f"Closed {closed} answers interrupted when the server stopped.")
        answer_sweeper_start()
        if settings.STANDALONE:
            if options["workers"] != 1:
                raise CommandError("Standalone mode runs one process; use cluster mode to scale.")
            from ingestion.index_upkeep import index_upkeep_start
            from ingestion.passage_vectors import dense
            from ingestion.runner import runner_start
            from ingestion.sandbox import ocr_status
            from ingestion.vector_index.configured import vector_index

            try:
                vector_index()
            except IndexLockedError as error:
                raise CommandError(f"{error}\nIs the assistant already running?") from error
            except VectorIndexError as error:
                raise CommandError(error.message) from error
            self.stdout.write("Loading the embedding model...")
            dense().encode_query("warm up")
            runner_start()
            index_upkeep_start()
            self.stdout.write(ocr_status())
            from sources.runner import scheduler_start

            # Runs of sources that are due, asked for, or left by a process that died.
            scheduler_start()
        url = f"http://{options['host']}:{options['port']}/"
        self.stdout.write(
            self.style.SUCCESS(f"Knowledge assistant ({settings.ASSISTANT_MODE}) at {url}")
        )
        self.stdout.write(login_hint)
        self.stdout.write(f"Data folder: {settings.DATA_DIR}")
        uvicorn.run(
            "config.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=settings.HTTP_KEEP_ALIVE_S,
            # uvicorn would otherwise rewrite the client address from X-Forwarded-For sent
            # from loopback (or FORWARDED_ALLOW_IPS). REMOTE_ADDR stays the socket peer, and
            # client_address believes the header from TRUSTED_PROXIES only.
            proxy_headers=False,
        )

    def _ensure_admin(self) -> str:
        users = get_user_model().objects
        if users.filter(is_superuser=True).exists():
            return "Log in with your administrator account."
        password = os.environ.get("ASSISTANT_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.create_superuser(ADMIN_NAME, email="", password=password)
        if os.environ.get("ASSISTANT_ADMIN_PASSWORD"):
            return f"Created administrator '{ADMIN_NAME}' (password from ASSISTANT_ADMIN_PASSWORD)."
        return (
            f"Created administrator '{ADMIN_NAME}' with password: {password}\n"
            "(shown once; change it at /admin/password_change/)"
        )
