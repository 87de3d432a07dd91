"""Mail: an RFC 5322 message (.eml) or a mailbox of them (.mbox).

A message is its header lines (who wrote it to whom, when, about what) and its body: the
plain-text part, or the HTML part made text when there is none. Its attachments are handed
back as files of their own, to become documents linked to the message; only those of a type
this system reads are kept, and pictures placed inside the HTML (signatures, logos) are not
attachments.
"""

from __future__ import annotations

import email
import email.policy
import itertools
import re
from email.errors import MessageError
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime

from ingestion.parsing.detection import detect_type
from ingestion.parsing.document import Attachment, FormatParts, ParseError, ParseLimits, Section
from ingestion.parsing.filenames import safe_filename
from ingestion.parsing.html import parse_html
from ingestion.parsing.sections import collapse_spaces
from ingestion.parsing.text import decode_text
from ingestion.titles import best_title

# A message with more attachments than this is more likely a mail bomb than correspondence.
MAX_ATTACHMENTS = 100
# An attached picture smaller than this is an icon or a logo, not a scan of a page.
_MIN_SCAN_BYTES = 10_000
# "From sender asctime-date": stricter than "From " alone, so that a body line that starts with
# "From " and was not quoted as ">From " does not cut a message in two.
_MBOX_SEPARATOR = re.compile(
    rb"^From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [^\r\n]*\d\d:\d\d[^\r\n]*\r?\n", re.MULTILINE
)
# The header lines every passage of a message starts its first section with.
_SHOWN_HEADERS = (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Date", "date"))


def parse_eml(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    message = _message_from_bytes(data)
    subject = _header(message, "subject")
    sections, attachments = _message_parts(message, limits, leftover=MAX_ATTACHMENTS)
    if not sections:
        raise ParseError("The message has no text and no readable attachment.")
    return FormatParts(
        best_title([subject], stem=stem),
        sections,
        attachments=tuple(attachments),
        metadata=_metadata(message),
    )


def parse_mbox(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    """Each message of the mailbox is a section (or several) under its subject."""
    sections: list[Section] = []
    attachments: list[Attachment] = []
    messages = _mbox_messages(data)
    if len(messages) > limits.max_pages:
        raise ParseError(
            f"The mailbox holds {len(messages)} messages; at most {limits.max_pages} are accepted."
        )
    for raw in messages:
        message = _message_from_bytes(raw)
        message_sections, message_attachments = _message_parts(
            message, limits, leftover=MAX_ATTACHMENTS - len(attachments)
        )
        sections.extend(message_sections)
        attachments.extend(message_attachments)
    first_subject = next(
        (section.heading_path[0] for section in sections if section.heading_path), ""
    )
    metadata = (("Messages", str(len(messages))),)
    return FormatParts(
        best_title([stem, first_subject], stem=stem),
        sections,
        attachments=tuple(attachments),
        metadata=metadata,
    )


def _mbox_messages(data: bytes) -> list[bytes]:
    starts = [match.start() for match in _MBOX_SEPARATOR.finditer(data)]
    if not starts:
        return [data]
    bounds = [*starts, len(data)]
    messages = []
    for start, end in itertools.pairwise(bounds):
        body_start = data.index(b"\n", start) + 1
        # mboxrd quotes body lines that start with "From " as ">From ".
        raw = re.sub(rb"(?m)^>(>*From )", rb"\1", data[body_start:end])
        if raw.strip():
            messages.append(raw)
    return messages


def _message_from_bytes(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _header(message: Message, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError, MessageError):
        # A header the policy cannot parse is left out rather than failing the message.
        return ""
    return collapse_spaces(str(value)) if value is not None else ""


def _addresses(message: Message, name: str) -> str:
    raw = _header(message, name)
    if not raw:
        return ""
    people = []
    for display, address in getaddresses([raw]):
        if display and address:
            people.append(f"{display} <{address}>")
        elif address or display:
            people.append(address or display)
    return ", ".join(people)


def _date(message: Message) -> str:
    raw = _header(message, "date")
    try:
        return parsedate_to_datetime(raw).isoformat() if raw else ""
    except (TypeError, ValueError, IndexError):
        return raw


def _metadata(message: Message) -> tuple[tuple[str, str], ...]:
    pairs = [
        ("From", _addresses(message, "from")),
        ("To", _addresses(message, "to")),
        ("Cc", _addresses(message, "cc")),
        ("Date", _date(message)),
        ("Subject", _header(message, "subject")),
        ("Message-ID", _header(message, "message-id")),
    ]
    return tuple((label, value) for label, value in pairs if value)


def _message_parts(
    message: EmailMessage, limits: ParseLimits, *, leftover: int
) -> tuple[list[Section], list[Attachment]]:
    subject = _header(message, "subject") or "(no subject)"
    header_lines = []
    for label, name in _SHOWN_HEADERS:
        value = _date(message) if name == "date" else _addresses(message, name)
        if value:
            header_lines.append(f"{label}: {value}")
    header_lines.append(f"Subject: {subject}")
    attachments, unread = _attachments(message, leftover)
    attached_names = [attachment.name for attachment in attachments] + unread
    if attached_names:
        header_lines.append("Attachments: " + ", ".join(attached_names))
    heading = (subject,)
    sections = [Section(text="\n".join(header_lines), page=None, heading_path=heading)]
    body_sections = _body_sections(message, limits)
    sections.extend(
        Section(text=section.text, page=None, heading_path=heading + section.heading_path)
        for section in body_sections
    )
    return sections, attachments


def _body_sections(message: EmailMessage, limits: ParseLimits) -> list[Section]:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return []
    content = _part_bytes(body)
    if not content:
        return []
    if body.get_content_type() == "text/html":
        return list(parse_html(content, "", limits).sections)
    text = _part_text(body, content)
    return [Section(text=text, page=None, heading_path=())] if text.strip() else []


def _part_bytes(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _part_text(part: Message, content: bytes) -> str:
    charset = part.get_content_charset()
    if charset:
        try:
            return content.decode(charset, errors="replace")
        except LookupError:
            pass
    return decode_text(content)


def _attachments(message: EmailMessage, leftover: int) -> tuple[list[Attachment], list[str]]:
    """The attached files of a type this system reads, and the names of the others."""
    kept: list[Attachment] = []
    unread: list[str] = []
    for part in message.iter_attachments():
        if _is_embedded_picture(part):
            continue
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload()
            inner_message = inner[0] if isinstance(inner, list) and inner else None
            if not isinstance(inner_message, Message):
                continue
            data = inner_message.as_bytes(policy=email.policy.default)
            name = (_header(inner_message, "subject") or "message")[:100] + ".eml"
        else:
            data = _part_bytes(part)
            name = part.get_filename() or ""
        try:
            name = safe_filename(name or "attachment")
        except ParseError:
            name = "attachment"
        if not data:
            continue
        try:
            kind = detect_type(data, name)
        except ParseError:
            unread.append(f"{name} (not a readable type)")
            continue
        if kind == "image" and len(data) < _MIN_SCAN_BYTES:
            continue
        if len(kept) >= leftover:
            unread.append(f"{name} (too many attachments)")
            continue
        kept.append(Attachment(name=name, data=data))
    return kept, unread


def _is_embedded_picture(part: Message) -> bool:
    """A picture the HTML body shows by its Content-ID, such as a logo in a signature."""
    return part.get_content_maintype() == "image" and (
        part.get("content-id") is not None and part.get_content_disposition() != "attachment"
    )
