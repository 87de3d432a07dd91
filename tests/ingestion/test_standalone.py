"""Standalone mode end to end: one server process, SQLite, embedded index, upload over HTTP."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pypdfium2
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "ASSISTANT_MODE", "QDRANT_PATH", "QDRANT_URL")
        }
        self.env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            ASSISTANT_DATA_DIR=str(data_dir),
            ASSISTANT_ADMIN_PASSWORD="a-long-test-password",
            HF_HUB_OFFLINE="1",
        )
        self.log = data_dir.parent / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                httpx.get(f"{self.url}/accounts/login/", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.5)
        raise AssertionError("the server did not start:\n" + self.log.read_text())

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    the_server = Server(tmp_path / "var")
    the_server.start()
    yield the_server
    the_server.stop()


def wait_ready(client: httpx.Client, version_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        version = client.get(f"/api/versions/{version_id}/").json()
        if version["status"] in ("READY", "FAILED", "CANCELLED"):
            return dict(version)
        time.sleep(0.5)
    raise AssertionError("the upload did not finish")


def test_an_upload_over_http_becomes_searchable_in_one_process(
    server: Server, shared_data: Path, tmp_path: Path
) -> None:
    token = server.manage(
        "apitoken", "create", "admin", "--name", "upload test", "--scopes", "read,ingest"
    )
    assert token.returncode == 0, token.stderr
    key = token.stdout.strip()
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    # A connection a client keeps while it does other things (a proxy's, for a minute).
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    idle_since = time.monotonic()
    assert _healthz_on(idle).startswith(b"HTTP/1.1 200")

    sample = shared_data / "samples" / "docker-md" / "reference" / "commandline" / "checkpoint.md"
    response = client.post(
        "/api/documents/",
        files=[("files", ("checkpoint.md", sample.read_bytes(), "text/markdown"))],
        data={"everyone": "true"},
    )
    assert response.status_code in (200, 201), response.text
    (result,) = response.json()["results"]
    version = wait_ready(client, result["version_id"])
    assert version["status"] == "READY"
    assert version["chunks_total"] > 0

    # A command run beside the server hands its files to the server instead of opening the index.
    note = tmp_path / "holiday-policy.txt"
    note.write_text("Employees accrue twenty-six days of paid holiday per calendar year.\n")
    ingested = server.manage("ingest", str(note), "--everyone", "--wait")
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert "server" in ingested.stderr
    assert "READY" in ingested.stdout

    documents = client.get("/api/documents/").json()
    titles = " ".join(str(item) for item in documents["results"])
    assert "checkpoint" in titles.lower()
    assert "holiday" in titles.lower()

    # Mail and scans from the command line: a message with an attachment, and a scanned page.
    assert "OCR: on" in server.log.read_text()
    message = EmailMessage()
    message["From"] = "Ada <ada@example.com>"
    message["Subject"] = "Canteen hours"
    message.set_content("The canteen hours are attached.")
    message.add_attachment(
        b"The canteen opens at half past eleven.",
        maintype="text",
        subtype="plain",
        filename="canteen-hours.txt",
    )
    (tmp_path / "canteen.eml").write_bytes(bytes(message))
    pdf = pypdfium2.PdfDocument(shared_data / "samples" / "pdf" / "fhs-3.0.pdf")
    picture = pdf[12].render(scale=300 / 72, grayscale=True).to_pil()
    pdf.close()
    picture.crop((0, 0, picture.width, picture.height // 3)).save(tmp_path / "root-fs.png")
    ingested = server.manage(
        "ingest",
        str(tmp_path / "canteen.eml"),
        str(tmp_path / "root-fs.png"),
        "--everyone",
        "--wait",
    )
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    assert ingested.stdout.count("READY") == 2, ingested.stdout
    found = client.get("/api/assistant/search", params={"q": "Utility to remove empty directories"})
    assert "root-fs.png" in found.text
    documents = client.get("/api/documents/").json()
    titles = " ".join(str(item) for item in documents["results"])
    assert "Canteen hours" in titles
    assert "canteen-hours" in titles

    # Idle past uvicorn's own default of 5 s, the connection still serves the next request.
    time.sleep(max(0.0, 6 - (time.monotonic() - idle_since)))
    assert _healthz_on(idle).startswith(b"HTTP/1.1 200")
    idle.close()


def _healthz_on(connection: socket.socket) -> bytes:
    """One whole response (head and body) to a request sent on `connection`."""
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return received  # closed by the server
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    while length and len(body) < int(length.group(1)):
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_the_server_refuses_an_index_another_model_wrote(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    index_dir = data_dir / "index"
    index_dir.mkdir(parents=True)
    foreign = '{"dimension": 384, "model": "my-finetune", "weights_sha256": "0badc0de"}\n'
    (index_dir / "encoder.json").write_text(foreign)
    server = Server(data_dir)

    started = subprocess.run(
        [sys.executable, "manage.py", "serve", "--port", str(server.port)],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert started.returncode != 0
    assert "built with another encoder" in started.stderr
    assert "my-finetune" in started.stderr
    assert "Traceback" not in started.stderr
