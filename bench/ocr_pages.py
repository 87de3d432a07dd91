"""OCR measured against text layers: pages of real PDFs rendered as scans, read back by OCR.

A page that has a text layer is its own ground truth: rendered to a picture (clean at 300
dpi, or degraded as a poor scan is) and read by the OCR the product uses, its text can be
compared with what the text layer says, character by character.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ingestion.parsing import ParseLimits
from ingestion.parsing.ocr import read_text

_SPACES = re.compile(r"\s+")
# Each way a scan can be made: (name, dpi, its further damage).
JPEG_QUALITY = 40
ROTATION_DEGREES = 1.0


@dataclass(frozen=True)
class Condition:
    name: str
    dpi: int
    degrade: Callable[[Any], Any]


def _as_is(image: Any) -> Any:
    return image


def _rotated_jpeg(image: Any) -> Any:
    """Turned a little, as a sheet lies crooked on the glass, and saved as a lossy JPEG."""
    from PIL import Image

    turned = image.rotate(
        ROTATION_DEGREES, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    out = io.BytesIO()
    turned.save(out, "JPEG", quality=JPEG_QUALITY)
    return Image.open(io.BytesIO(out.getvalue()))


CONDITIONS = (
    Condition("300dpi", 300, _as_is),
    Condition("150dpi", 150, _as_is),
    Condition("degraded_150dpi_rotated_jpeg", 150, _rotated_jpeg),
)


# Dashes and quotes that print alike; list bullets, which a text layer keeps and OCR drops.
_FOLDED = str.maketrans(
    {
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
        "\u2018": "'", "\u2019": "'", "`": "'", "\u201c": '"', "\u201d": '"',
        "\u2022": " ", "\u25aa": " ", "\u25e6": " ", "\u00b7": " ", "\x02": "",
    }
)  # fmt: skip


def normalized(text: str, *, spaces: bool = True) -> str:
    """Text compared as a reader reads it: compatibility forms, dashes and quotes folded,
    bullets dropped, spacing collapsed (or, with `spaces` False, ignored)."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLDED)
    return _SPACES.sub(" " if spaces else "", text).strip()


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, by the bit-parallel algorithm (Myers 1999, Hyyrö 2001)."""
    if not a:
        return len(b)
    if not b:
        return len(a)
    mask = (1 << len(a)) - 1
    high = 1 << (len(a) - 1)
    positions: dict[str, int] = {}
    for index, character in enumerate(a):
        positions[character] = positions.get(character, 0) | (1 << index)
    plus, minus, score = mask, 0, len(a)
    for character in b:
        equal = positions.get(character, 0)
        vertical = equal | minus
        horizontal = ((((equal & plus) + plus) & mask) ^ plus) | equal
        horizontal_plus = (minus | ~(horizontal | plus)) & mask
        horizontal_minus = plus & horizontal
        if horizontal_plus & high:
            score += 1
        elif horizontal_minus & high:
            score -= 1
        horizontal_plus = ((horizontal_plus << 1) | 1) & mask
        horizontal_minus = (horizontal_minus << 1) & mask
        plus = (horizontal_minus | ~(vertical | horizontal_plus)) & mask
        minus = horizontal_plus & vertical
    return score


def character_error_rate(reference: str, read: str, *, spaces: bool = True) -> float:
    truth = normalized(reference, spaces=spaces)
    return edit_distance(truth, normalized(read, spaces=spaces)) / max(1, len(truth))


def word_recall(reference: str, read: str) -> float:
    """The share of the reference's words that OCR read, in any order.

    A form's boxes may be read in another order than its text layer keeps them, which the
    character error rate counts as errors though every word was read right.
    """
    truth = Counter(normalized(reference).split(" "))
    found = Counter(normalized(read).split(" "))
    return sum((truth & found).values()) / max(1, sum(truth.values()))


def page_picture(pdf: Any, index: int, condition: Condition) -> Any:
    page = pdf[index]
    try:
        image = page.render(scale=condition.dpi / 72, grayscale=True).to_pil()
    finally:
        page.close()
    return condition.degrade(image)


def page_text_layer(pdf: Any, index: int) -> str:
    page = pdf[index]
    textpage = page.get_textpage()
    try:
        text: str = textpage.get_text_bounded()
    finally:
        textpage.close()
        page.close()
    return text


def ocr(image: Any, limits: ParseLimits) -> str:
    return read_text(image, limits)
