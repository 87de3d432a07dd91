"""Django's SQLite backend, with closed connections kept for the next thread that needs one.

The standalone server answers each request on a thread of its own, and Django opens a
connection per thread, so every request opened the database file anew. The first statement
on a new connection reads the schema: about 0.6 ms of each request, a fifth of an ask
request's Python up to its response headers, while a burst of questions waits for one
interpreter. A connection given back outside any transaction is kept instead, and handed to
the next thread that connects; one closed inside a transaction, or past the number kept, is
closed. In-memory databases are left as Django has them.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from django.db.backends.sqlite3 import base
from django.utils.functional import cached_property

# Idle connections kept per database file; a burst past this opens (and closes) its own.
IDLE_CONNECTIONS_KEPT = 16

_idle: dict[str, list[sqlite3.Connection]] = {}
_idle_lock = threading.Lock()

# The type stubs leave out the private hook overridden here (`_close`).
_DjangoDatabaseWrapper: Any = base.DatabaseWrapper


class DatabaseWrapper(_DjangoDatabaseWrapper):
    @cached_property
    def _idle_connections(self) -> list[sqlite3.Connection] | None:
        """This file's kept connections (None for an in-memory database)."""
        if self.is_in_memory_db():
            return None
        key = repr((self.settings_dict["NAME"], sorted(self.settings_dict["OPTIONS"].items())))
        with _idle_lock:
            return _idle.setdefault(key, [])

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        kept = self._idle_connections
        if kept is not None:
            with _idle_lock:
                connection = kept.pop() if kept else None
            if connection is not None:
                # The one setting Django's own code turns off and on again (schema changes).
                connection.execute("PRAGMA foreign_keys = ON")
                return connection
        return super().get_new_connection(conn_params)

    def _close(self) -> None:
        connection, kept = self.connection, self._idle_connections
        if connection is not None and kept is not None and not connection.in_transaction:
            with _idle_lock:
                if len(kept) < IDLE_CONNECTIONS_KEPT:
                    kept.append(connection)
                    return
        super()._close()
