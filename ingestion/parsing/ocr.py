"""Reading text off pictures of pages: scanned PDFs and PNG, JPEG and TIFF images, by Tesseract.

Tesseract runs as its own program (through pytesseract) from the sandboxed child that parses
the file, so it inherits the child's memory and CPU limits. Pictures are checked against the
pixel limit before they are decoded: a small file can claim an enormous image.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

from ingestion.parsing.document import FormatParts, ParseError, ParseLimits, Section
from ingestion.titles import best_title

# Scans are read at this resolution: Tesseract reads type of 10 points best at 300 dpi.
OCR_DPI = 300
# One thread per Tesseract: the workers already parse several files side by side.
_TESSERACT_THREADS = "1"


_progress: list[Callable[[str], object]] = []


def progress_to(sink: Callable[[str], object]) -> None:
    """Where OCR says how far it is: the sandboxed child passes these lines on to the page."""
    _progress[:] = [sink]


def _report(text: str) -> None:
    for sink in _progress:
        sink(text)


def ocr_unavailable_reason(languages: str) -> str:
    """Why OCR cannot read `languages` ("eng+deu") on this machine; empty when it can."""
    if shutil.which("tesseract") is None:
        return (
            "OCR is not available on this server (Tesseract is not installed; the operator "
            "can install the tesseract-ocr package)"
        )
    missing = [
        language for language in languages.split("+") if language not in _installed_languages()
    ]
    if missing:
        packages = ", ".join(f"tesseract-ocr-{language}" for language in missing)
        return (
            f"OCR cannot read the language(s) {', '.join(missing)} on this server (the "
            f"operator can install {packages}, or change OCR_LANGUAGES)"
        )
    return ""


@cache
def _installed_languages() -> frozenset[str]:
    import pytesseract

    try:
        return frozenset(pytesseract.get_languages(config=""))
    except (OSError, RuntimeError, pytesseract.TesseractError):
        return frozenset()


def ocr_version() -> str:
    import pytesseract

    try:
        return str(pytesseract.get_tesseract_version())
    except (OSError, RuntimeError, pytesseract.TesseractError):
        return ""


def refuse_without_ocr(limits: ParseLimits, what: str) -> None:
    reason = ocr_unavailable_reason(limits.ocr_languages)
    if reason:
        raise ParseError(f"{what} has to be read by OCR, but {reason}.")


def read_pages(
    pages: list[int], page_image: Callable[[int], Any], limits: ParseLimits
) -> list[str]:
    """The text of each of these pages (numbered from 0), saying which page it reads."""
    texts = []
    for done, index in enumerate(pages):
        _report(f"Reading page {index + 1} by OCR ({done + 1} of {len(pages)} scanned pages).")
        texts.append(read_text(page_image(index), limits))
    return texts


def read_text(image: Any, limits: ParseLimits) -> str:
    """The text Tesseract reads off one page image."""
    import pytesseract

    os.environ["OMP_THREAD_LIMIT"] = _TESSERACT_THREADS
    try:
        text: str = pytesseract.image_to_string(image, lang=limits.ocr_languages)
    except pytesseract.TesseractError as error:
        raise ParseError(
            f"OCR could not read a page ({error.message.strip() or 'Tesseract failed'})."
        ) from error
    return text


def parse_image(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    """A PNG, JPEG or TIFF image read by OCR; each frame of a multi-page TIFF is a page."""
    refuse_without_ocr(limits, "An image")
    sections: list[Section] = []
    frames = _frames(data, limits)
    pages = next(frames)
    for number, frame in enumerate(frames, start=1):
        # As for a scanned PDF, the documents page shows how far a multi-page TIFF is.
        _report(f"Reading page {number} of {pages} by OCR.")
        text = read_text(frame, limits)
        if text.strip():
            sections.append(Section(text=text, page=number, heading_path=()))
    if not sections:
        raise ParseError("OCR found no text in the image; is it a picture of a page?")
    return FormatParts(best_title([], stem=stem), sections)


def _frames(data: bytes, limits: ParseLimits) -> Iterator[Any]:
    """The number of pages first, then each page's picture."""
    from PIL import Image

    # Pillow's guard is a global; whoever parses in-process gets their own limit back after.
    previous = Image.MAX_IMAGE_PIXELS
    try:
        yield from _guarded_frames(data, limits)
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _guarded_frames(data: bytes, limits: ParseLimits) -> Iterator[Any]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    # Opening reads only the header, so the size can be told before anything is decoded;
    # then Pillow's own guard against decompression bombs stands at the configured limit.
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ParseError("The image is damaged or in a form that cannot be read.") from error
    finally:
        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    frames = getattr(image, "n_frames", 1)
    if frames > limits.max_pages:
        raise ParseError(f"The image has {frames} pages; at most {limits.max_pages} are accepted.")
    yield frames
    for index in range(frames):
        image.seek(index)
        width, height = image.size
        if width * height > limits.max_image_pixels:
            raise ParseError(_too_many_pixels((width, height), limits))
        try:
            # A photo taken with the phone turned is stored sideways with a note to turn it.
            frame = ImageOps.exif_transpose(image.convert("L"))
        except Image.DecompressionBombError as error:
            raise ParseError(_too_many_pixels(None, limits)) from error
        except (OSError, ValueError) as error:
            raise ParseError(
                f"Page {index + 1} of the image is damaged and cannot be read."
            ) from error
        yield frame


def _too_many_pixels(size: tuple[int, int] | None, limits: ParseLimits) -> str:
    limit = (
        f"at most {limits.max_image_pixels / 1e6:g} million are accepted (PARSE_MAX_IMAGE_PIXELS)"
    )
    if size is None:
        return f"The image has too many pixels to read; {limit}."
    width, height = size
    return f"The image is {width} by {height} pixels ({width * height / 1e6:.0f} million); {limit}."
