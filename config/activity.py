"""How busy this process is serving people, for maintenance that would stall it.

Some upkeep (the embedded index's segment optimizer) holds the interpreter lock for
seconds; it waits for a moment when no request and no answer stream is in flight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class ServingActivity:
    """Counts requests and answer streams in flight, and when the last one ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_ended = time.monotonic()

    def begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def end(self) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._last_ended = time.monotonic()

    @contextmanager
    def serving(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        finally:
            self.end()

    def quiet_for_s(self) -> float:
        """Seconds since the process last served anyone; 0 while it is serving."""
        with self._lock:
            if self._in_flight:
                return 0.0
            return time.monotonic() - self._last_ended

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight


serving_activity = ServingActivity()
