"""Parsing in a child process under memory and time limits: a hostile file fails alone.

The hostile files are made here: a DOCX whose XML needs more memory than allowed, a PDF whose
content stream inflates to hundreds of MB, a Markdown file that makes the parser crawl, and a
text file larger than the memory limit. Through the real services, and once through a real
Celery worker process.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docx
import psutil
import psycopg
import pytest
import redis
from django.contrib.auth.models import User

from assistant.retrieval import passages_for_user
from ingestion import sandbox
from ingestion.models import DocumentVersion, VersionStatus
from ingestion.parsing import ParsedDocument, ParseError, parse_document
from ingestion.runner import run_pending_once
from ingestion.sandbox import (
    SandboxLimits,
    limits_from_settings,
    parse_document_isolated,
    parse_documents_isolated,
)
from ingestion.services import document_upload_bytes

MB = 1024 * 1024
LOW_MEMORY = SandboxLimits(memory_mb=256)
GOOD_MARKDOWN = b"# Parking\n\nVisitors park on level minus two of the north garage.\n"


def docx_with_huge_body(paragraphs: int) -> bytes:
    """A DOCX of a few MB whose 20 MB of varied XML packs too loosely to look like a bomb."""
    blank = io.BytesIO()
    docx.Document().save(blank)
    words = ["budget", "review", "quarter", "north", "garage", "policy", "travel", "meeting"]
    rng = random.Random(6)
    body = "".join(
        f"<w:p><w:r><w:t>{' '.join(rng.choices(words, k=8))} {rng.random()}</w:t></w:r></w:p>"
        for _ in range(paragraphs)
    )
    out = io.BytesIO()
    with (
        zipfile.ZipFile(blank) as template,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for member in template.infolist():
            content = template.read(member)
            if member.filename == "word/document.xml":
                content = content.replace(b"<w:body>", b"<w:body>" + body.encode(), 1)
            archive.writestr(member.filename, content)
    return out.getvalue()


def pdf_with_inflating_page(megabytes: int) -> bytes:
    """A small PDF whose one page's content stream inflates to `megabytes` MB."""
    compressor = zlib.compressobj(9)
    block = b"BT /F1 12 Tf 72 712 Td (Hello) Tj ET\n".ljust(MB)
    stream = b"".join(compressor.compress(block) for _ in range(megabytes)) + compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%b\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, content)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def crawling_markdown() -> bytes:
    """1 MB of opening brackets: each may start a link, and the parser tries them all."""
    return b"[" * MB


def parser_children() -> list[psutil.Process]:
    """The children of this process's parser server: the parses under way."""
    servers = [
        process
        for process in psutil.Process().children()
        if "ingestion.sandbox" in process.cmdline()
    ]
    return [child for server in servers for child in server.children()]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- The sandbox -------------------------------------------------------------------------


def test_it_returns_what_parsing_in_the_process_returns(shared_data: Path) -> None:
    for path in (
        shared_data / "samples" / "pdf" / "fhs-3.0.pdf",
        shared_data / "samples" / "docker-md" / "reference" / "commandline" / "config.md",
    ):
        data = path.read_bytes()

        assert parse_document_isolated(data, path.name) == parse_document(data, path.name)


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (b"", "notes.txt", "The file is empty."),
        (
            b"MZ\x90\x00" + bytes(56) + (64).to_bytes(4, "little") + b"PE\x00\x00" + bytes(200),
            "report.pdf",
            "The file's content is not a PDF (it looks like a Windows program (.exe or .dll)).",
        ),
    ],
    ids=["empty", "exe-renamed-pdf"],
)
def test_it_passes_the_parsers_refusal_on_as_it_is(
    data: bytes, filename: str, message: str
) -> None:
    with pytest.raises(ParseError) as raised:
        parse_document_isolated(data, filename)

    assert str(raised.value) == message


def test_a_docx_whose_xml_needs_more_memory_than_allowed_fails_with_the_limit() -> None:
    with pytest.raises(ParseError, match=r"^Reading the file used more than 256 MB of memory"):
        parse_document_isolated(docx_with_huge_body(200_000), "minutes.docx", sandbox=LOW_MEMORY)


def test_a_text_file_larger_than_the_memory_limit_fails_with_the_limit() -> None:
    with pytest.raises(ParseError, match=r"^Reading the file used more than 256 MB of memory"):
        parse_document_isolated(b"word " * (20 * MB), "log.txt", sandbox=LOW_MEMORY)


def test_a_pdf_that_inflates_beyond_the_memory_limit_fails_and_names_the_limit() -> None:
    bomb = pdf_with_inflating_page(300)
    assert len(bomb) < MB

    with pytest.raises(ParseError) as raised:
        parse_document_isolated(bomb, "bomb.pdf", sandbox=LOW_MEMORY)

    assert "need more than 256 MB of memory" in str(raised.value)
    # With room enough the same file reads: the limit, not damage, stopped it.
    roomy = parse_document_isolated(bomb, "bomb.pdf", sandbox=SandboxLimits(memory_mb=2048))
    assert roomy.sections[0].text == "Hello"


def test_a_file_that_takes_too_long_is_stopped_at_the_timeout() -> None:
    with pytest.raises(ParseError, match=r"^Reading the file took longer than 1 s, so it was"):
        parse_document_isolated(crawling_markdown(), "notes.md", sandbox=SandboxLimits(timeout_s=1))

    assert parser_children() == []


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (signal.SIGKILL, "was stopped by the system, most likely for lack of memory"),
        (signal.SIGSEGV, "The file reader crashed (SIGSEGV) while reading the file"),
    ],
    ids=["killed", "crashed"],
)
def test_a_parser_that_dies_fails_its_file_and_not_the_caller(
    sent: signal.Signals, message: str
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        parsing = pool.submit(parse_document_isolated, crawling_markdown(), "notes.md")
        wait_until(parser_children, 60, "the parser to start")
        for child in parser_children():
            child.send_signal(sent)

        with pytest.raises(ParseError, match=re.escape(message)):
            parsing.result(timeout=60)

    assert parse_document_isolated(GOOD_MARKDOWN, "parking.md").title == "Parking"


def test_small_text_files_share_a_child_and_read_as_each_alone(shared_data: Path) -> None:
    pdf = shared_data / "samples" / "pdf" / "fhs-3.0.pdf"
    files = [
        (GOOD_MARKDOWN, "parking.md"),
        (b"Lunch is served from noon to two.\n", "canteen.txt"),
        (b"", "empty.md"),
        # A PDF by its content: refused as Markdown, as it is when it is read alone.
        (pdf.read_bytes()[:4096], "minutes.md"),
        (pdf.read_bytes(), pdf.name),
        (b"## Badges\n\nLost badges are replaced at the front desk.\n", "badges.md"),
    ]
    expected: list[object] = []
    for data, name in files:
        try:
            expected.append(parse_document(data, name))
        except ParseError as error:
            expected.append(str(error))
    exchanges_before = sandbox._server._requests

    outcomes = parse_documents_isolated(files)

    assert [
        str(outcome) if isinstance(outcome, ParseError) else outcome for outcome in outcomes
    ] == expected
    # The five small files (the one that only claims to be Markdown is refused by its content
    # before any parser reads it) shared one child; the PDF had a child of its own.
    assert sandbox._server._requests - exchanges_before == 2


def test_a_file_that_stalls_a_shared_child_fails_alone_and_the_others_are_read() -> None:
    files = [(GOOD_MARKDOWN, "parking.md"), (crawling_markdown(), "notes.md")]

    parking, notes = parse_documents_isolated(files, sandbox=SandboxLimits(timeout_s=1))

    assert isinstance(parking, ParsedDocument)
    assert parking.title == "Parking"
    assert isinstance(notes, ParseError)
    assert str(notes).startswith("Reading the file took longer than 1 s")
    assert parser_children() == []


def test_limits_are_read_from_the_settings(settings: Any) -> None:
    settings.PARSE_MAX_PAGES = 7
    settings.PARSE_MAX_ZIP_MEMBERS = 11
    settings.PARSE_MAX_UNCOMPRESSED_BYTES = 13 * MB
    settings.PARSE_MAX_COMPRESSION_RATIO = 17.0
    settings.PARSE_MAX_SHEET_ROWS = 19
    settings.PARSE_MEMORY_MB = 384
    settings.PARSE_TIMEOUT_S = 2.5

    limits, sandbox = limits_from_settings()

    assert (limits.max_pages, limits.max_zip_members, limits.max_sheet_rows) == (7, 11, 19)
    assert (limits.max_uncompressed_bytes, limits.max_compression_ratio) == (13 * MB, 17.0)
    assert sandbox == SandboxLimits(memory_mb=384, timeout_s=2.5)


def test_a_memory_limit_too_low_to_start_a_parser_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 256 MB"):
        SandboxLimits(memory_mb=100)


# --- Through the services ----------------------------------------------------------------


@pytest.mark.django_db
def test_each_hostile_file_fails_alone_and_the_rest_is_indexed(settings: Any) -> None:
    settings.PARSE_MEMORY_MB = 256
    settings.PARSE_TIMEOUT_S = 2
    hostile = {
        "minutes.docx": (docx_with_huge_body(200_000), "used more than 256 MB of memory"),
        "bomb.pdf": (pdf_with_inflating_page(300), "need more than 256 MB of memory"),
        "notes.md": (crawling_markdown(), "took longer than 2 s"),
    }
    outcomes = {
        name: document_upload_bytes(name=name, data=data, is_public=True)
        for name, (data, _) in hostile.items()
    }
    good = document_upload_bytes(name="parking.md", data=GOOD_MARKDOWN, is_public=True)

    run_pending_once()

    for name, (_, reason) in hostile.items():
        version = DocumentVersion.objects.get(id=outcomes[name].version.id)  # type: ignore[union-attr]
        assert version.status == VersionStatus.FAILED, name
        assert reason in version.status_message, (name, version.status_message)
    assert DocumentVersion.objects.get(id=good.version.id).status == VersionStatus.READY  # type: ignore[union-attr]
    hits = passages_for_user(user=User.objects.create_user("reader"), query="visitor parking")
    assert [hit.source for hit in hits] == ["parking.md"]


# --- Through a Celery worker -------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_DB = 11


@pytest.fixture
def worker_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    database = f"assistant_uploads_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ASSISTANT_MODE": "cluster",
        "ASSISTANT_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "HF_HUB_OFFLINE": "1",
        "PARSE_MEMORY_MB": "256",
        "PARSE_TIMEOUT_S": "2",
    }
    with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    redis.Redis(db=REDIS_DB).flushdb()
    try:
        migrated = manage(env, "migrate", "--noinput")
        assert migrated.returncode == 0, migrated.stderr
        yield env
    finally:
        redis.Redis(db=REDIS_DB).flushdb()
        with psycopg.connect(PG_ADMIN, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.cluster
def test_a_celery_worker_outlives_hostile_files(worker_env: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "upload"
    folder.mkdir()
    (folder / "minutes.docx").write_bytes(docx_with_huge_body(200_000))
    (folder / "bomb.pdf").write_bytes(pdf_with_inflating_page(300))
    (folder / "notes.md").write_bytes(crawling_markdown())
    (folder / "parking.md").write_bytes(GOOD_MARKDOWN)
    log = (tmp_path / "worker.log").open("wb")
    # The prefork pool, as deployed: parsing starts its children from a pool process.
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "config", "worker", "--concurrency", "1"),
            *("--loglevel", "INFO", "--without-gossip", "--without-mingle"),
        ],
        cwd=ROOT,
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ingested = manage(worker_env, "ingest", str(folder), "--everyone", "--wait")
        assert "1 ready, 3 failed." in ingested.stdout, ingested.stdout + ingested.stderr
        pool_before = {child.pid for child in psutil.Process(worker.pid).children()}

        later = tmp_path / "later.md"
        later.write_bytes(b"# Canteen\n\nThe canteen opens at half past eleven.\n")
        again = manage(worker_env, "ingest", str(later), "--everyone", "--wait")
        assert again.returncode == 0, again.stdout + again.stderr

        assert worker.poll() is None
        assert pool_before <= {child.pid for child in psutil.Process(worker.pid).children()}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    with psycopg.connect(worker_env["DATABASE_URL"]) as connection:
        rows = connection.execute(
            "SELECT original_name, status, status_message FROM ingestion_documentversion"
        ).fetchall()
    statuses = {name: (status, message) for name, status, message in rows}
    assert statuses["parking.md"][0] == "READY"
    assert statuses["later.md"][0] == "READY"
    assert statuses["minutes.docx"][0] == "FAILED"
    assert "used more than 256 MB of memory" in statuses["minutes.docx"][1]
    assert statuses["bomb.pdf"][0] == "FAILED"
    assert "need more than 256 MB of memory" in statuses["bomb.pdf"][1]
    assert statuses["notes.md"][0] == "FAILED"
    assert "took longer than 2 s" in statuses["notes.md"][1]


def test_parsers_run_without_the_secrets_in_the_environment(monkeypatch: Any) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://assistant:hunter2@db/assistant")
    parse_document_isolated(GOOD_MARKDOWN, "parking.md")

    servers = [
        process
        for process in psutil.Process().children()
        if "ingestion.sandbox" in process.cmdline()
    ]
    assert servers
    for server in servers:
        names = set(server.environ())
        assert names <= {"PATH", "LANG", "TMPDIR", "TZ", "PYTHONPATH"} | {
            name for name in names if name.startswith("LC_")
        }


# Run in a fresh interpreter: the timer's signal goes to the whole process, and in the test
# process it may land in a thread of a native library that earlier tests started.
INTERRUPTED_PARSE = """
import signal
import django
django.setup()
from celery.exceptions import SoftTimeLimitExceeded
from ingestion.sandbox import parse_document_isolated

def soft_time_limit(signum, frame):
    raise SoftTimeLimitExceeded()

signal.signal(signal.SIGALRM, soft_time_limit)
signal.setitimer(signal.ITIMER_REAL, 1.0)
try:
    parse_document_isolated(b"[" * (1024 * 1024), "notes.md")
    print("not interrupted")
except SoftTimeLimitExceeded:
    print("interrupted")
finally:
    signal.setitimer(signal.ITIMER_REAL, 0)
document = parse_document_isolated(%r, "parking.md")
print(document.title)
print(document.sections[0].text)
"""


def test_a_parse_interrupted_by_a_task_time_limit_does_not_answer_for_the_next_file() -> None:
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_PARSE % GOOD_MARKDOWN],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    interrupted, title, text = done.stdout.splitlines()[-3:]
    assert interrupted == "interrupted"
    assert title == "Parking"
    assert "north garage" in text
