"""A document's title that means something to a reader.

Metadata titles in companies are often junk: accession or case numbers, "Microsoft Word -
draft3.docx", "untitled", the scanner's name. Every passage carries its document's title
into search and into citations, so a junk title is noise everywhere. Each parser offers its
candidates best first (metadata, the largest text on the first page, the first heading, the
file name) and the first one that is not junk wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePath

MAX_TITLE_CHARS = 200

_OFFICE_PREFIX = re.compile(
    r"^\s*(?:microsoft\s+(?:word|powerpoint|excel|office\s+word)|word|powerpoint|excel)\s*[-\u2013\u2014:]\s*",
    re.IGNORECASE,
)
_FILE_EXTENSION = re.compile(
    r"\.(?:docx?|xlsx?|pptx?|pdf|rtf|odt|ods|odp|txt|md|html?|indd|qxd|pages|key|numbers|tiff?|"
    r"jpe?g|png|ps|eps|wpd)$",
    re.IGNORECASE,
)
_GENERIC = re.compile(
    r"^(?:untitled(?: document| presentation| spreadsheet)?|no title|new document|document|"
    r"doc|title|presentation|"
    r"powerpoint presentation|slide|word document|draft|template|report|file|page|image|img|"
    r"scan|scanned|scanned document|scanned image|pdf|anonymous|\(anonymous\)|dsc|dscn|"
    r"print|printout|copy|final|final version|memo|unknown|index|readme|default|home|main|"
    r"contents|toc)"
    r"(?:[\s_\-.]*(?:copy|final|v?\d+))*$",
    re.IGNORECASE,
)
# Names multifunction printers and scanning apps put in the metadata of what they scan.
_SCANNER = re.compile(
    r"^(?:hp\s*scan|canon|xerox|ricoh|konica|kyocera|sharp\s+mx|brother|epson|lexmark|"
    r"scanned (?:by|with|from)|camscanner|adobe acrobat scan|scansnap|naps2|image\d*)\b",
    re.IGNORECASE,
)
_HASH_LIKE = re.compile(r"^[0-9a-f][0-9a-f\-_]{11,}$", re.IGNORECASE)
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[^\W\d_]{3,}")
_DIGIT = re.compile(r"\d")
# "Page — Site (version)": the site's name after the last separator repeats on every page.
_SITE_SEPARATORS = (" \u2014 ", " \u2013 ", " | ", " \u00b7 ", " :: ", " - ")


def _says_nothing(text: str) -> bool:
    if not text:
        return True
    if _FILE_EXTENSION.search(text) or _OFFICE_PREFIX.match(text):
        return True
    return bool(_GENERIC.fullmatch(text) or _SCANNER.match(text) or _HASH_LIKE.fullmatch(text))


def title_is_junk(title: str) -> bool:
    """True when the text says nothing about what the document is."""
    text = " ".join(title.split())
    if _says_nothing(text):
        return True
    letters = len(_LETTER.findall(text))
    digits = len(_DIGIT.findall(text))
    # Accession, case and ticket numbers: mostly digits with a letter or two.
    return letters < 3 or digits > letters


def _rescued(title: str) -> str:
    """What is left of "Microsoft Word - Annual report 2023.docx" once the noise is cut."""
    text = _OFFICE_PREFIX.sub("", " ".join(title.split()))
    return _FILE_EXTENSION.sub("", text).replace("_", " ").strip()


def document_title_from_name(name: str) -> str:
    """A new document's title until its parser finds a better one: the file's name."""
    return PurePath(name).stem.replace("_", " ").strip() or name


def title_from_file_name(stem: str) -> str:
    """A file name as a title: separators become spaces ("travel_policy-2024" stays readable)."""
    return " ".join(re.sub(r"[_]+", " ", stem).split())


def without_site_name(page_title: str, heading: str) -> str:
    """ "Uploading Files — Flask Documentation (2.2.x)" becomes "Uploading Files".

    Only when the page's own first heading is what comes before the separator: otherwise
    the separator may be part of the title itself.
    """
    page_title = " ".join(page_title.split())
    heading = " ".join(heading.split())
    if heading and page_title.casefold().startswith(heading.casefold()):
        rest = page_title[len(heading) :]
        if any(rest.startswith(separator) for separator in _SITE_SEPARATORS):
            return page_title[: len(heading)]
    return page_title


def best_title(candidates: Iterable[str], *, stem: str) -> str:
    """The first candidate that is not junk; else the file name; else whatever there is."""
    seen: list[str] = []
    for candidate in candidates:
        text = " ".join((candidate or "").split())[:MAX_TITLE_CHARS]
        if not text:
            continue
        seen.append(text)
        if not title_is_junk(text):
            return text
        rescued = _rescued(text)
        if rescued and not title_is_junk(rescued):
            return rescued
    from_name = title_from_file_name(stem)
    if from_name and not title_is_junk(from_name):
        return from_name
    return seen[0] if seen else from_name or stem


def file_label(file_name: str, title: str) -> str:
    """The file's name as a reader would say it, when it is not junk and not the title already.

    "q2-2023_amazon_10q.pdf" says whose filing it is even when the title says nothing.
    """
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.strip(".") else file_name
    label = " ".join(re.sub(r"[_\-.]+", " ", stem).split())
    # A ticker or a company's name beside a date still says whose file it is; a case number
    # with a letter in it does not.
    if _says_nothing(label) or not _WORD.search(label):
        return ""
    words = set(re.findall(r"\w+", label.casefold()))
    if words <= set(re.findall(r"\w+", title.casefold())):
        return ""
    return label


def file_name_words(file_name: str) -> str:
    """A file's name for lexical search: as it is, and split into its words."""
    stem = file_name.rsplit(".", 1)[0] if "." in file_name.strip(".") else file_name
    words = " ".join(re.sub(r"[_\-.]+", " ", stem).split())
    return stem if words == stem else f"{stem} {words}"
