"""The standalone database's connections, handed from one request's thread to the next."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.utils import ConnectionHandler

ALIAS = "default"
# Far more than any request here needs.
LIVE_S = 15


@pytest.fixture
def database(tmp_path: Path, django_db_blocker: Any) -> Iterator[ConnectionHandler]:
    handler = ConnectionHandler(
        {
            ALIAS: {
                "ENGINE": "config.sqlite_backend",
                "NAME": str(tmp_path / "db.sqlite3"),
                "OPTIONS": {"timeout": 30},
            }
        }
    )
    with django_db_blocker.unblock():
        in_thread(handler, lambda c: c.cursor().execute("CREATE TABLE note (text TEXT)"))
        yield handler


def in_thread(handler: ConnectionHandler, work: Callable[[Any], Any]) -> Any:
    """`work` on a thread of its own, as a request runs, its connection closed after it."""
    results: list[Any] = []

    def request() -> None:
        connection = handler[ALIAS]
        try:
            results.append(work(connection))
        finally:
            connection.close()

    thread = threading.Thread(target=request)
    thread.start()
    thread.join(timeout=LIVE_S)
    assert not thread.is_alive(), "the request is stuck"
    assert results, "the request failed"
    return results[0]


def raw_connection(connection: Any) -> Any:
    connection.ensure_connection()
    return connection.connection


def test_the_next_request_reuses_the_connection_the_last_one_gave_back(
    database: ConnectionHandler,
) -> None:
    first = in_thread(database, raw_connection)
    assert in_thread(database, raw_connection) is first


def test_writes_left_in_a_transaction_never_reach_the_next_request(
    database: ConnectionHandler,
) -> None:
    def write_without_commit(connection: Any) -> Any:
        raw = raw_connection(connection)
        raw.execute("BEGIN")
        raw.execute("INSERT INTO note VALUES ('not committed')")
        return raw

    abandoned = in_thread(database, write_without_commit)

    def notes(connection: Any) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM note")
            return cursor.fetchone()[0], connection.connection

    count, used = in_thread(database, notes)
    assert count == 0
    assert used is not abandoned


def test_a_reused_connection_checks_foreign_keys_again(database: ConnectionHandler) -> None:
    def foreign_keys_off(connection: Any) -> Any:
        raw = raw_connection(connection)
        raw.execute("PRAGMA foreign_keys = OFF")
        return raw

    turned_off = in_thread(database, foreign_keys_off)

    def foreign_keys(connection: Any) -> Any:
        raw = raw_connection(connection)
        return raw.execute("PRAGMA foreign_keys").fetchone()[0], raw

    enabled, used = in_thread(database, foreign_keys)
    assert used is turned_off
    assert enabled == 1


def test_a_forked_child_never_uses_its_parents_connections(database: ConnectionHandler) -> None:
    # This thread, as a request, holds one open across the fork; another request's is kept.
    held_open = raw_connection(database[ALIAS])
    kept = in_thread(database, raw_connection)
    assert kept is not held_open
    pid = os.fork()
    if pid == 0:  # the child: whatever it connects with must be its own
        try:
            database[ALIAS].close()  # the connection the fork copied is not kept for reuse
            fresh = in_thread(database, raw_connection)
            again = in_thread(database, raw_connection)
            os._exit(0 if fresh is not kept and fresh is not held_open and again is fresh else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    database[ALIAS].close()
    assert os.waitstatus_to_exitcode(status) == 0
