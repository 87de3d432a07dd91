"""Parse untrusted files in a child process that may use only so much memory and time.

A hostile or broken file can make a parser allocate without end, loop for hours or crash in
native code. Parsing it in a child process confines the damage: the child runs under an
address-space limit (RLIMIT_AS) and a CPU-time limit (RLIMIT_CPU), it is killed when the
wall-clock time is up, and whatever happens the file fails alone with a reason a person can
read, while the worker that asked lives on.

The children are forked by a small parser server: a fresh interpreter (`python -m
ingestion.sandbox`), started once per process and kept, that has imported the parsers but
never torch or Django, and runs a single thread, so forking it is safe. Forking the worker
itself could deadlock on the locks of its model threads, and starting a fresh interpreter per
file would import the parsers again for every file. A plain subprocess also works from inside
Celery's prefork pool, whose processes `multiprocessing` refuses to let have children.

A child answers in JSON, not pickle: a child that a file managed to subvert cannot make the
worker run code by answering.

Each file gets a child of its own, with one exception that matters for speed: a fork and its
exit cost several milliseconds of CPU, many times what parsing a short text or Markdown file
does. Those two kinds are read by Python code only (no C parser), so a file can make its reader
slow or hungry but cannot take it over and reach another file; small files of these kinds that
the same people may read therefore share a child (`parse_documents_isolated`). Whatever goes
wrong in a shared child, each of its files is parsed again alone, so a bad file still fails
alone and with its own reason.

This module imports no Django at the top, so that the server and its children stay small.
"""

from __future__ import annotations

import base64
import gc
import importlib
import json
import logging
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from ingestion.parsing import (
    Attachment,
    ParsedDocument,
    ParseError,
    ParseLimits,
    Section,
    detect_type,
    parse_document,
    type_by_extension,
)
from ingestion.parsing.ocr import ocr_unavailable_reason, ocr_version, progress_to

MB = 1024 * 1024

# Imported once by the parser server, so that each child starts with the parsers loaded.
_PRELOADED_MODULES = (
    "bs4",
    "lxml.etree",
    "lxml.html",
    "charset_normalizer",
    "markdown_it",
    "pypdfium2",
    "pdfplumber",
    "pytesseract",
    "PIL.Image",
    "docx",
    "pptx",
    "openpyxl",
    "email.parser",
    "email.policy",
)

# How a child reports that it ran out of memory: a MemoryError may leave too little room to
# send anything, an exit code needs none.
_EXIT_OUT_OF_MEMORY = 75
# A peak address space this close to the limit means an allocation failed against it.
_MEMORY_LIMIT_REACHED = 0.97
# Beyond the wall-clock timeout, so that a child whose server is gone still ends.
_CPU_GRACE_S = 5
# Beyond the parse timeout, how long to wait for the server itself before replacing it.
_SERVER_GRACE_S = 30
_READ_BLOCK = 1024 * 1024
# How the parser server marks a child's progress line, sent before its answer.
_PROGRESS = "progress"
_PROGRESS_MAX_CHARS = 200
_ENVIRONMENT_KEPT = frozenset({"PATH", "LANG", "TMPDIR", "TZ"})
# Kinds whose parsers are Python code only (see the module's docstring), and how much one
# shared child reads: small enough that parsing again alone after a failure costs little.
_SHAREABLE_TYPES = frozenset({"text", "markdown"})
SHARED_CHILD_FILES = 32
SHARED_CHILD_BYTES = 256 * 1024

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxLimits:
    """What one parse may use: address space in MB, and wall-clock seconds."""

    memory_mb: int = 2048
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        # A child starts at about 200 MB of address space with the parsers loaded.
        if self.memory_mb < 256:
            raise ValueError("the parse memory limit must be at least 256 MB")
        if self.timeout_s <= 0:
            raise ValueError("the parse timeout must be more than 0 seconds")


_DEFAULT_PARSE_LIMITS = ParseLimits()
_DEFAULT_SANDBOX_LIMITS = SandboxLimits()


def parse_document_isolated(
    data: bytes,
    filename: str,
    *,
    limits: ParseLimits = _DEFAULT_PARSE_LIMITS,
    sandbox: SandboxLimits = _DEFAULT_SANDBOX_LIMITS,
    progress: Callable[[str], object] | None = None,
) -> ParsedDocument:
    """`parse_document` in a child process under `sandbox`'s limits.

    Every failure, including the child exceeding a limit or crashing, raises ParseError with
    a message for the uploader; nothing the file does can end the calling process. Slow
    parsers (OCR) say how far they are; `progress` hears each such line as it comes.
    """
    request = {"filename": filename, **_limits_request(limits, sandbox)}
    status, exitcode, answer = _server.exchange(request, data, sandbox.timeout_s, progress)
    if status == "timeout" or exitcode == -signal.SIGXCPU:
        raise ParseError(_timeout_message(sandbox))
    if exitcode != 0 or answer is None:
        raise ParseError(_death_message(exitcode, sandbox))
    return _document_from_answer(answer)


def shareable(filename: str, size_bytes: int) -> bool:
    """Whether a file may share its parser child with others (by its name and size)."""
    return size_bytes <= SHARED_CHILD_BYTES and type_by_extension(filename) in _SHAREABLE_TYPES


def parse_documents_isolated(
    files: Sequence[tuple[bytes, str]],
    *,
    limits: ParseLimits = _DEFAULT_PARSE_LIMITS,
    sandbox: SandboxLimits = _DEFAULT_SANDBOX_LIMITS,
) -> list[ParsedDocument | ParseError]:
    """For each (data, filename), what `parse_document_isolated` returns or raises, in order.

    Small text and Markdown files share children, as many as `SHARED_CHILD_FILES` and
    `SHARED_CHILD_BYTES` allow; the caller passes only files that the same people may read.
    """
    outcomes: list[ParsedDocument | ParseError | None] = [None] * len(files)
    sharing: list[int] = []
    sharing_bytes = 0

    def parse_shared() -> None:
        nonlocal sharing_bytes
        shared = _parse_shared([files[index] for index in sharing], limits, sandbox)
        for index, outcome in zip(sharing, shared, strict=True):
            outcomes[index] = outcome
        sharing.clear()
        sharing_bytes = 0

    for index, (data, filename) in enumerate(files):
        if not shareable(filename, len(data)):
            continue
        if len(sharing) == SHARED_CHILD_FILES or sharing_bytes + len(data) > SHARED_CHILD_BYTES:
            parse_shared()
        sharing.append(index)
        sharing_bytes += len(data)
    if sharing:
        parse_shared()
    # The files that were not shared, or that their shared child left to a child of their own.
    return [
        outcome if outcome is not None else _parse_alone(*files[index], limits, sandbox)
        for index, outcome in enumerate(outcomes)
    ]


def _parse_alone(
    data: bytes, filename: str, limits: ParseLimits, sandbox: SandboxLimits
) -> ParsedDocument | ParseError:
    try:
        return parse_document_isolated(data, filename, limits=limits, sandbox=sandbox)
    except ParseError as error:
        return error


def _parse_shared(
    files: Sequence[tuple[bytes, str]], limits: ParseLimits, sandbox: SandboxLimits
) -> list[ParsedDocument | ParseError | None]:
    """Parse `files` in one child; None for each file to parse again alone.

    A child that broke a limit, crashed or answered nonsense leaves every one of its files to
    a child of its own: which file did it is not known, and only that one may fail.
    """
    if len(files) == 1:
        return [None]
    request = {
        "files": [[filename, len(data)] for data, filename in files],
        **_limits_request(limits, sandbox),
    }
    status, exitcode, answer = _server.exchange(
        request, b"".join(data for data, _ in files), sandbox.timeout_s
    )
    if status != "exited" or exitcode != 0 or answer is None:
        return [None] * len(files)
    try:
        answers = json.loads(answer)["shared"]
        if len(answers) != len(files):
            return [None] * len(files)
        return [None if "alone" in one else _outcome_from_answer(one) for one in answers]
    except (ValueError, KeyError, TypeError, ParseError):
        return [None] * len(files)


def _limits_request(limits: ParseLimits, sandbox: SandboxLimits) -> dict[str, Any]:
    """What a request tells the parser server about the limits its child runs under."""
    return {
        "limits": asdict(limits),
        "memory_bytes": sandbox.memory_mb * MB,
        "cpu_seconds": int(sandbox.timeout_s) + _CPU_GRACE_S,
        "timeout_s": sandbox.timeout_s,
    }


def sandbox_warm_up() -> None:
    """Start the parser server now rather than with the first file, and wait until it serves."""
    parse_document_isolated(b"The parser server is ready.", "warm-up.txt")


def limits_from_settings() -> tuple[ParseLimits, SandboxLimits]:
    """The configured limits (PARSE_* settings), read when asked so that tests may change them."""
    from django.conf import settings

    limits = ParseLimits(
        max_pages=settings.PARSE_MAX_PAGES,
        max_uncompressed_bytes=settings.PARSE_MAX_UNCOMPRESSED_BYTES,
        max_compression_ratio=settings.PARSE_MAX_COMPRESSION_RATIO,
        max_zip_members=settings.PARSE_MAX_ZIP_MEMBERS,
        max_sheet_rows=settings.PARSE_MAX_SHEET_ROWS,
        max_image_pixels=settings.PARSE_MAX_IMAGE_PIXELS,
        ocr_languages=settings.OCR_LANGUAGES,
        pdf_tables=settings.PARSE_PDF_TABLES,
    )
    sandbox = SandboxLimits(memory_mb=settings.PARSE_MEMORY_MB, timeout_s=settings.PARSE_TIMEOUT_S)
    return limits, sandbox


def ocr_status() -> str:
    """One line for the server's start: whether scans and images can be read here."""
    limits, _ = limits_from_settings()
    reason = ocr_unavailable_reason(limits.ocr_languages)
    if reason:
        return f"OCR: off. {reason}; scanned PDFs and images will be refused with that reason."
    return f"OCR: on (Tesseract {ocr_version()}, languages {limits.ocr_languages})."


def _timeout_message(sandbox: SandboxLimits) -> str:
    return (
        f"Reading the file took longer than {sandbox.timeout_s:g} s, so it was stopped; the "
        "file may be damaged or built to be slow. Try splitting it into smaller files."
    )


def _death_message(exitcode: int | None, sandbox: SandboxLimits) -> str:
    if exitcode == _EXIT_OUT_OF_MEMORY:
        return (
            f"Reading the file used more than {sandbox.memory_mb} MB of memory, so it was "
            "stopped; the file may be damaged or built to exhaust memory. Try splitting it "
            "into smaller files."
        )
    if exitcode == -signal.SIGKILL:
        # Nobody here sends it before the timeout: the system's out-of-memory killer does.
        return (
            "Reading the file was stopped by the system, most likely for lack of memory; try "
            "splitting it into smaller files."
        )
    if exitcode is not None and exitcode < 0:
        # Native parsers abort or crash when an allocation fails against the limit, so a
        # crash cannot tell damage from hunger.
        return (
            f"The file reader crashed ({signal.Signals(-exitcode).name}) while reading the "
            f"file; the file may be damaged, or need more than {sandbox.memory_mb} MB of memory "
            "to read. Try saving it again or exporting it to PDF."
        )
    return (
        "The file reader stopped unexpectedly; the file may be damaged. Try saving it again "
        "or exporting it to PDF."
    )


def _document_from_answer(answer: bytes) -> ParsedDocument:
    try:
        outcome = _outcome_from_answer(json.loads(answer))
    except ValueError as error:
        raise ParseError(_death_message(None, _DEFAULT_SANDBOX_LIMITS)) from error
    if isinstance(outcome, ParseError):
        raise outcome
    return outcome


def _outcome_from_answer(decoded: dict[str, Any]) -> ParsedDocument | ParseError:
    """One file's answer from a child: its parsed document, or the parser's refusal."""
    try:
        if "refused" in decoded:
            return ParseError(str(decoded["refused"]))
        parsed = decoded["parsed"]
        sections = [
            Section(
                text=str(text),
                page=None if page is None else int(page),
                heading_path=tuple(str(heading) for heading in headings),
            )
            for text, page, headings in parsed["sections"]
        ]
        return ParsedDocument(
            title=str(parsed["title"]),
            sections=sections,
            detected_type=str(parsed["detected_type"]),
            running_text=str(parsed.get("running_text", "")),
            metadata=tuple((str(label), str(value)) for label, value in parsed["metadata"]),
            attachments=tuple(
                Attachment(name=str(name), data=base64.b64decode(data, validate=True))
                for name, data in parsed["attachments"]
            ),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise ParseError(_death_message(None, _DEFAULT_SANDBOX_LIMITS)) from error


class _ParserServer:
    """This process's side of its parser server: one server, one parse at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._requests = 0

    def exchange(
        self,
        request: dict[str, Any],
        data: bytes,
        timeout_s: float,
        progress: Callable[[str], object] | None = None,
    ) -> tuple[str, int | None, bytes | None]:
        """Send one file; return the server's (status, child exit code, child's answer).

        Before its answer the server may send the child's progress lines, for `progress`.
        """
        with self._lock:
            connection = self._connect()
            self._requests += 1
            request_id = self._requests
            try:
                connection.send({**request, "id": request_id})
                connection.send_bytes(data)
                deadline = time.monotonic() + timeout_s + _SERVER_GRACE_S
                while True:
                    if not connection.poll(max(0.0, deadline - time.monotonic())):
                        raise TimeoutError("the parser server did not answer")
                    message = connection.recv()
                    if message[0] != _PROGRESS:
                        break
                    if progress is not None and message[1] == request_id:
                        progress(str(message[2])[:_PROGRESS_MAX_CHARS])
                answered_id, status, exitcode, answer = message
                if answered_id != request_id:
                    raise EOFError(f"answer {answered_id} came for request {request_id}")
            except (OSError, EOFError) as error:
                # The server itself died (or hangs); the next file gets a new one.
                logger.error(
                    "the parser server was lost (%s); the next file starts a new one", error
                )
                self._stop()
                return "lost", None, None
            except BaseException:
                # Interrupted mid-exchange (a task's time limit, a signal): the server's next
                # answer would be this file's and taken for the next one's, so it goes.
                self._stop()
                raise
            return status, exitcode, answer

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's server and lock are the parent's, not ours."""
        self._lock = threading.Lock()
        self._process = None
        self._connection = None

    def _connect(self) -> Connection:
        if self._connection is not None and self._process is not None:
            if self._process.poll() is None:
                return self._connection
            self._stop()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "ingestion.sandbox", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_server_environment(),
            )
            self._connection = Connection(os.dup(ours.fileno()))
        return self._connection

    def _stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None


def _server_environment() -> dict[str, str]:
    """Only what an interpreter needs: database passwords and keys stay out of reach of parsers."""
    project = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(
        path for path in (project, os.environ.get("PYTHONPATH", "")) if path
    )
    kept = {
        name: value
        for name, value in os.environ.items()
        if name in _ENVIRONMENT_KEPT or name.startswith("LC_")
    }
    return {**kept, "PYTHONPATH": python_path}


_server = _ParserServer()
os.register_at_fork(after_in_child=_server.forget_after_fork)


# --- The parser server (python -m ingestion.sandbox FD) ----------------------------------


def _serve(fd: int) -> None:
    # Interrupting the process that started this server ends it by closing the connection.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in _PRELOADED_MODULES:
        importlib.import_module(module)
    # A child's garbage collector would otherwise walk, and so copy, every page of the
    # parsers' objects it inherited.
    gc.freeze()
    connection = Connection(fd)
    while True:
        try:
            request = connection.recv()
            data = connection.recv_bytes()
            connection.send((request["id"], *_parse_in_child(request, data, connection)))
        except (EOFError, OSError):
            # The process this server works for has gone.
            return


def _parse_in_child(
    request: dict[str, Any], data: bytes, connection: Connection
) -> tuple[str, int, bytes | None]:
    connection_fd = connection.fileno()
    read_end, write_end = os.pipe()
    progress_read, progress_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        # The child answers on its own pipes only: it must not be able to speak for the server.
        os.close(connection_fd)
        os.close(read_end)
        os.close(progress_read)
        _child_main(write_end, request, data, progress_write)
    os.close(write_end)
    os.close(progress_write)

    def forward(lines: bytes) -> None:
        # Only the last whole line matters: it says how far the child is now.
        last = lines.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        text = last.decode("utf-8", errors="replace")[:_PROGRESS_MAX_CHARS]
        if text:
            connection.send((_PROGRESS, request["id"], text))

    try:
        deadline = time.monotonic() + request["timeout_s"]
        answer = _read_until_closed(
            read_end, deadline, hangup_fd=connection_fd, progress_fd=progress_read, forward=forward
        )
    finally:
        os.close(read_end)
        os.close(progress_read)
    if answer is None:
        os.kill(pid, signal.SIGKILL)
    _, wait_status = os.waitpid(pid, 0)
    exitcode = os.waitstatus_to_exitcode(wait_status)
    if answer is None:
        return "timeout", exitcode, None
    return "exited", exitcode, answer


def _read_until_closed(
    fd: int,
    deadline: float,
    *,
    hangup_fd: int,
    progress_fd: int,
    forward: Callable[[bytes], None],
) -> bytes | None:
    """All the child writes, or None if it has not finished by the deadline.

    The client sends nothing while it waits, so `hangup_fd` turning readable means it has
    gone; then there is nobody to wait for. What the child writes on `progress_fd` is handed
    to `forward` as it comes.
    """
    blocks: list[bytes] = []
    watched = [fd, hangup_fd, progress_fd]
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select(watched, [], [], remaining)
        if not readable or hangup_fd in readable:
            return None
        if progress_fd in readable:
            lines = os.read(progress_fd, _READ_BLOCK)
            if lines:
                forward(lines)
            else:
                watched.remove(progress_fd)
            if fd not in readable:
                continue
        block = os.read(fd, _READ_BLOCK)
        if not block:
            # The child has answered and gone; a line it wrote just before its answer may not
            # have been read yet, and it is the one that says how far the child got.
            if progress_fd in watched:
                _forward_unread(progress_fd, forward)
            return b"".join(blocks)
        blocks.append(block)


def _forward_unread(progress_fd: int, forward: Callable[[bytes], None]) -> None:
    """Hand on what is left in the progress pipe of a child that has exited."""
    unread = []
    while select.select([progress_fd], [], [], 0)[0]:
        lines = os.read(progress_fd, _READ_BLOCK)
        if not lines:
            break
        unread.append(lines)
    if unread:
        forward(b"".join(unread))


def _child_main(
    write_end: int, request: dict[str, Any], data: bytes, progress_write: int
) -> NoReturn:
    exitcode = 0
    try:
        progress_to(lambda text: os.write(progress_write, text.encode()[:500] + b"\n"))
        memory_bytes = request["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        cpu_seconds = request["cpu_seconds"]
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        # A crashing parser must not leave a core file of a confidential document behind.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        answer = _child_answer(request, data, memory_bytes)
        if answer is None:
            exitcode = _EXIT_OUT_OF_MEMORY
        else:
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(answer)
    except MemoryError:
        exitcode = _EXIT_OUT_OF_MEMORY
    except BaseException:
        import traceback

        traceback.print_exc()
        exitcode = 1
    finally:
        os._exit(exitcode)


def _child_answer(request: dict[str, Any], data: bytes, memory_bytes: int) -> bytes | None:
    """The JSON answer for the parent, or None when the parse ran out of memory."""
    limits = ParseLimits(**request["limits"])
    if "files" in request:
        return _shared_child_answer(request["files"], data, limits, memory_bytes)
    try:
        document = parse_document(data, request["filename"], limits=limits)
    except ParseError as error:
        if _reached_memory_limit(memory_bytes):
            return None
        return json.dumps({"refused": str(error)}).encode()
    return json.dumps({"parsed": _document_json(document)}).encode()


def _shared_child_answer(
    files: list[tuple[str, int]], data: bytes, limits: ParseLimits, memory_bytes: int
) -> bytes | None:
    """A shared child's answer: for each file, its document, its refusal, or "alone" when its
    content turns out to be a kind that only a child of its own may read."""
    answers: list[dict[str, Any]] = []
    offset = 0
    for filename, size in files:
        content = data[offset : offset + size]
        offset += size
        try:
            if detect_type(content, filename) not in _SHAREABLE_TYPES:
                answers.append({"alone": True})
                continue
            document = parse_document(content, filename, limits=limits)
        except ParseError as error:
            if _reached_memory_limit(memory_bytes):
                return None
            answers.append({"refused": str(error)})
            continue
        answers.append({"parsed": _document_json(document)})
    return json.dumps({"shared": answers}).encode()


def _document_json(document: ParsedDocument) -> dict[str, Any]:
    return {
        "title": document.title,
        "detected_type": document.detected_type,
        "running_text": document.running_text,
        "sections": [
            [section.text, section.page, list(section.heading_path)]
            for section in document.sections
        ],
        "metadata": [list(pair) for pair in document.metadata],
        # JSON carries no bytes; base64 keeps an attachment exact.
        "attachments": [
            [attachment.name, base64.b64encode(attachment.data).decode("ascii")]
            for attachment in document.attachments
        ],
    }


def _reached_memory_limit(memory_bytes: int) -> bool:
    """Whether this process's address space has touched the limit.

    Parsers written in C report a failed allocation as damage (lxml says "unknown error"); a
    peak at the limit shows what really happened.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmPeak:"):
                    peak_bytes = int(line.split()[1]) * 1024
                    return peak_bytes >= memory_bytes * _MEMORY_LIMIT_REACHED
    except OSError:
        pass
    return False


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
