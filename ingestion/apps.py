from __future__ import annotations

from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Documents"

    def ready(self) -> None:
        # A document the ledger still cites is never purged, whoever tries.
        from ingestion.ledger_details import connect_signals

        connect_signals()
