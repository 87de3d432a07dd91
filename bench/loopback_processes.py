"""Child processes serving HTTP on loopback (`manage.py serve`, `r1_simulator`,
`qdrant_standin`), for the benchmarks, the loopback cluster and the tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from django.conf import settings
from django.core.management.base import CommandError

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def standin_command(*, port: int, folder: Path) -> list[str]:
    """The command that serves the Qdrant stand-in on `port`, its collections in `folder`."""
    return [
        sys.executable,
        "manage.py",
        "qdrant_standin",
        "--port",
        str(port),
        "--path",
        str(folder),
    ]


@dataclass
class Process:
    """A child process serving HTTP on loopback, with its output in a log file."""

    name: str
    url: str
    popen: subprocess.Popen[bytes]
    log: Path

    def wait_until_answering(self, probe: str) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise CommandError(f"The {self.name} exited:\n{self.log_tail()}")
            try:
                httpx.get(f"{self.url}{probe}", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.3)
        raise CommandError(f"The {self.name} did not start:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@contextmanager
def started(name: str, arguments: list[str], env: dict[str, str], log: Path) -> Iterator[Process]:
    port = free_port()
    with log.open("wb") as output:
        popen = subprocess.Popen(
            [sys.executable, "manage.py", *arguments, "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    process = Process(name, f"http://127.0.0.1:{port}", popen, log)
    try:
        yield process
    finally:
        process.stop()
