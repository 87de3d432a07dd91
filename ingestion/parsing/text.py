"""Plain text: telling text from binary data, decoding it whatever its encoding, reading it."""

from __future__ import annotations

from ingestion.parsing.document import FormatParts, ParseLimits, Section

_TEXT_BOMS: tuple[tuple[bytes, str], ...] = (
    # UTF-32 first: its little-endian BOM begins with the UTF-16 one.
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

# How much of the start of a file is looked at to judge what it is.
SNIFF_BYTES = 8192
_BINARY_CONTROL_RATIO = 0.01
_ALLOWED_CONTROL_BYTES = frozenset(b"\t\n\r\x0c\x08\x1b")


def looks_like_text(sample: bytes) -> bool:
    if any(sample.startswith(bom) for bom, _ in _TEXT_BOMS) or _utf16_without_bom(sample):
        return True
    if b"\x00" in sample:
        return False
    controls = sum(1 for byte in sample if byte < 0x20 and byte not in _ALLOWED_CONTROL_BYTES)
    return controls <= len(sample) * _BINARY_CONTROL_RATIO


def _utf16_without_bom(sample: bytes) -> str | None:
    """Recognise BOM-less UTF-16 by its zero high bytes at every other position."""
    pairs = len(sample) // 2
    if pairs < 4:
        return None
    zeros_even = sample[0 : pairs * 2 : 2].count(0)
    zeros_odd = sample[1 : pairs * 2 : 2].count(0)
    if zeros_odd > 0.4 * pairs and zeros_even < 0.05 * pairs:
        return "utf-16-le"
    if zeros_even > 0.4 * pairs and zeros_odd < 0.05 * pairs:
        return "utf-16-be"
    return None


def _mostly_utf8(data: bytes) -> bool:
    """At least as many well-formed multi-byte UTF-8 characters as bytes that are not UTF-8.

    Text in a legacy code page almost never forms a multi-byte UTF-8 character by chance
    (that takes a capital accented letter followed by a symbol), so a file that has them is
    UTF-8 with some damage, and a code page would turn each of its accented letters into two
    wrong ones to account for the few bad bytes.
    """
    # Each byte that is not UTF-8 becomes one lone surrogate, U+DC80 to U+DCFF.
    decoded = data.decode("utf-8", errors="surrogateescape")
    stray = sum(1 for character in decoded if "\udc80" <= character <= "\udcff")
    multibyte = sum(1 for character in decoded if character >= "\x80") - stray
    return multibyte >= stray


def decode_text(data: bytes) -> str:
    """Decode text of any encoding without ever failing; undecodable bytes become U+FFFD.

    Text that is mostly UTF-8 stays UTF-8; a legacy code page is guessed only for bytes that
    are clearly not UTF-8.
    """
    for bom, encoding in _TEXT_BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace")
    if utf16 := _utf16_without_bom(data[:SNIFF_BYTES]):
        return data.decode(utf16, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if _mostly_utf8(data):
        return data.decode("utf-8", errors="replace")
    from charset_normalizer import from_bytes

    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return data.decode("cp1252", errors="replace")
    # When a text fits several code pages equally well (Western text fits cp1250 and cp1252
    # alike), prefer the one most office files use.
    for match in matches:
        if match.encoding == "cp1252" and (match.chaos, match.coherence) == (
            best.chaos,
            best.coherence,
        ):
            return str(match)
    return str(best)


def parse_text(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    text = decode_text(data).lstrip("\ufeff")
    return FormatParts(stem, [Section(text=text, page=None, heading_path=())])
