"""A mailbox over IMAP (a shared support or policy mailbox): each message, and each of its
attachments, is a document.

A message is known by its folder, the folder's UIDVALIDITY and its UID, which IMAP never
reuses for other content: a message seen before is not fetched again. An expunged message
(and its attachments) is deleted. The message itself is stored as text (headers and body);
attachments go through the usual parsers under their own names.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import imaplib
import re
from collections.abc import Iterator, Mapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup
from django.conf import settings

from ingestion.parsing.detection import TYPE_NAMES
from sources.kinds.base import FoundItem, KnownItem, SourceUnreachable
from sources.options import OptionError, option_bool, option_text, secret_read

FETCH_BATCH = 50
# The parsers read a message with its attachments themselves.
EML_PARSED = "eml" in TYPE_NAMES


class ImapReader:
    def __init__(self, location: str, options: Mapping[str, Any]) -> None:
        url = urlsplit(location.strip())
        if url.scheme not in ("imap", "imaps") or not url.hostname:
            raise OptionError(
                "A mailbox source needs its URL: --url imaps://host[:port]/FOLDER "
                "(imap:// for plain or STARTTLS)."
            )
        self.secure = url.scheme == "imaps"
        self.host = url.hostname
        self.port = url.port or (993 if self.secure else 143)
        self.folder = unquote(url.path.strip("/")) or option_text(options, "folder", "INBOX")
        self.user = option_text(options, "user") or unquote(url.username or "")
        if not self.user:
            raise OptionError("A mailbox source needs its user: --option user=NAME.")
        if not (options.get("password_file") or options.get("password_env")):
            raise OptionError(
                "A mailbox source reads its password from password_file=PATH or password_env=VAR."
            )
        self.starttls = option_bool(options, "starttls", False)
        self.attachments = option_bool(options, "attachments", True)
        self.options = options

    def state(self) -> dict[str, Any]:
        return {}

    def _connect(self) -> imaplib.IMAP4:
        password = secret_read(self.options, "password") or ""
        timeout = settings.SOURCE_WEB_TIMEOUT_S
        try:
            if self.secure:
                client: imaplib.IMAP4 = imaplib.IMAP4_SSL(self.host, self.port, timeout=timeout)
            else:
                client = imaplib.IMAP4(self.host, self.port, timeout=timeout)
                if self.starttls:
                    client.starttls()
        except (OSError, imaplib.IMAP4.error) as error:
            raise SourceUnreachable(
                f"The mail server {self.host}:{self.port} cannot be reached: {error}"
            ) from None
        try:
            client.login(self.user, password)
        except imaplib.IMAP4.error:
            raise SourceUnreachable(f"The mail server refused the login of {self.user}.") from None
        return client

    def items(self, known: Mapping[str, KnownItem]) -> Iterator[FoundItem]:
        client = self._connect()
        try:
            status, _ = client.select(_quoted(self.folder), readonly=True)
            if status != "OK":
                raise SourceUnreachable(f"The folder {self.folder} cannot be opened.")
            validity = (client.response("UIDVALIDITY")[1] or [b"0"])[0]
            prefix = (
                f"{self.folder}/{validity.decode() if isinstance(validity, bytes) else validity}/"
            )
            status, data = client.uid("SEARCH", "ALL")
            if status != "OK":
                raise SourceUnreachable(f"The folder {self.folder} cannot be searched.")
            uids = data[0].split() if data and data[0] else []
            parts_of: dict[str, list[str]] = {}
            for key in known:
                message_key, slash, _ = key.partition("#")
                if slash:
                    parts_of.setdefault(message_key, []).append(key)
            new_uids = []
            for uid in uids:
                key = prefix + uid.decode()
                if key in known:
                    yield FoundItem(key=key, signature=known[key].signature)
                    for part in parts_of.get(key, []):
                        yield FoundItem(key=part, signature=known[part].signature)
                else:
                    new_uids.append(uid)
            for start in range(0, len(new_uids), FETCH_BATCH):
                yield from self._fetch(client, prefix, new_uids[start : start + FETCH_BATCH])
        except (TimeoutError, OSError, imaplib.IMAP4.error) as error:
            raise SourceUnreachable(f"The mail server stopped answering: {error}") from None
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                client.logout()

    def _fetch(self, client: imaplib.IMAP4, prefix: str, uids: list[bytes]) -> Iterator[FoundItem]:
        status, data = client.uid("FETCH", b",".join(uids).decode(), "(UID BODY.PEEK[])")
        if status != "OK":
            for uid in uids:
                yield FoundItem(key=prefix + uid.decode(), error="The message cannot be fetched.")
            return
        for entry in data:
            if not isinstance(entry, tuple):
                continue
            match = re.search(rb"UID (\d+)", entry[0])
            if match is None:
                continue
            yield from self._message_items(prefix + match.group(1).decode(), entry[1])

    def _message_items(self, key: str, raw: bytes) -> Iterator[FoundItem]:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        subject = str(message.get("Subject", "")).strip() or "(no subject)"
        source_path = f"imap://{self.host}/{key}"
        if EML_PARSED:
            name = _file_name(subject) + ".eml"
            yield FoundItem(key=key, name=name, source_path=source_path, signature=key, data=raw)
            return
        yield FoundItem(
            key=key,
            name=_file_name(subject) + ".txt",
            source_path=source_path,
            signature=key,
            data=_message_text(message, subject).encode("utf-8"),
        )
        if not self.attachments:
            return
        for number, part in enumerate(message.iter_attachments(), start=1):
            filename = part.get_filename() or f"attachment-{number}"
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            yield FoundItem(
                key=f"{key}#{number}",
                name=_file_name(filename),
                source_path=f"{source_path}#{filename}",
                signature=key,
                data=payload,
            )


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _file_name(text: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_. " else "_" for c in text).strip(" .")
    return cleaned[:150] or "message"


def _message_text(message: EmailMessage, subject: str) -> str:
    """The message as a person reads it: who, when, what, then the body."""
    headers = [f"Subject: {subject}"]
    for name in ("From", "To", "Cc", "Date"):
        if message.get(name):
            headers.append(f"{name}: {message.get(name)}")
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        content = body.get_content()
        text = (
            BeautifulSoup(content, "html.parser").get_text("\n")
            if body.get_content_type() == "text/html"
            else str(content)
        )
    return "\n".join(headers) + "\n\n" + text.strip() + "\n"
