"""Django's SQLite backend, with closed connections kept for the next thread that needs one.

The standalone server answers each request on a thread of its own, and Django opens a
connection per thread, so every request opened the database file anew. The first statement
on a new connection reads the schema: about 0.6 ms of each request, a fifth of an ask
request's Python up to its response headers, while a burst of questions waits for one
interpreter. A connection given back outside any transaction is kept instead, and handed to
the next thread that connects; one closed inside a transaction, or past the number kept, is
closed. In-memory databases are left as Django has them.

A connection is only ever kept and reused in the process that opened it: SQLite's locks go
wrong, and databases get corrupted, when a forked child uses its parent's connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Any

from django.db.backends.sqlite3 import base
from django.utils.functional import cached_property

# Idle connections kept per database file; a burst past this opens (and closes) its own.
IDLE_CONNECTIONS_KEPT = 16

_idle: dict[str, list[sqlite3.Connection]] = {}
_idle_lock = threading.Lock()


def _idle_forget_in_child() -> None:
    """In a forked child the parent's connections are not ours to use (nor its lock)."""
    global _idle_lock
    _idle_lock = threading.Lock()
    for kept in _idle.values():  # emptied in place: wrappers copied by the fork hold them
        kept.clear()


os.register_at_fork(after_in_child=_idle_forget_in_child)

# The type stubs leave out the private hook overridden here (`_close`).
_DjangoDatabaseWrapper: Any = base.DatabaseWrapper


class DatabaseWrapper(_DjangoDatabaseWrapper):
    # The process the connection in hand was opened in (a wrapper is copied by a fork).
    _opened_in_pid: int | None = None

    @cached_property
    def _idle_connections(self) -> list[sqlite3.Connection] | None:
        """This file's kept connections (None for an in-memory database)."""
        if self.is_in_memory_db():
            return None
        key = repr((self.settings_dict["NAME"], sorted(self.settings_dict["OPTIONS"].items())))
        with _idle_lock:
            return _idle.setdefault(key, [])

    def get_new_connection(self, conn_params: dict[str, Any]) -> sqlite3.Connection:
        self._opened_in_pid = os.getpid()
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
        if (
            connection is not None
            and kept is not None
            and not connection.in_transaction
            and self._opened_in_pid == os.getpid()
        ):
            with _idle_lock:
                if len(kept) < IDLE_CONNECTIONS_KEPT:
                    kept.append(connection)
                    return
        super()._close()
