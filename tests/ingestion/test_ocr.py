"""Scans and images read by OCR (Tesseract), inside the parser sandbox, failing alone."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pypdfium2
import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from PIL import Image
from pypdf import PdfReader, PdfWriter

from ingestion.models import DocumentVersion, VersionStatus
from ingestion.parsing import ParseError, ParseLimits, parse_document
from ingestion.runner import run_pending_once
from ingestion.sandbox import SandboxLimits, parse_document_isolated
from ingestion.services import document_upload_bytes

GUARD = SandboxLimits(timeout_s=120)


@pytest.fixture(scope="module")
def text_page(shared_data: Path) -> bytes:
    """A page of the FHS with its text layer: "The Root Filesystem", a table of commands."""
    writer = PdfWriter()
    writer.add_page(PdfReader(shared_data / "samples" / "pdf" / "fhs-3.0.pdf").pages[12])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@pytest.fixture(scope="module")
def scanned_top(text_page: bytes) -> Image.Image:
    """The top of that page as a scanner would see it: a grayscale picture at 300 dpi."""
    pdf = pypdfium2.PdfDocument(text_page)
    image = pdf[0].render(scale=300 / 72, grayscale=True).to_pil()
    pdf.close()
    return image.crop((0, 0, image.width, image.height // 3))


def image_bytes(image: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def test_a_png_scan_is_read_by_ocr_in_the_sandbox(scanned_top: Image.Image) -> None:
    document = parse_document_isolated(
        image_bytes(scanned_top, "PNG"), "root-fs.png", sandbox=GUARD
    )
    assert document.detected_type == "image"
    assert document.sections[0].page == 1
    assert "Utility to remove empty directories" in document.sections[0].text


def test_a_multi_page_tiff_says_which_page_of_how_many_it_reads(
    scanned_top: Image.Image,
) -> None:
    half = scanned_top.height // 2
    pages = [
        scanned_top.crop((0, 0, scanned_top.width, half)),
        scanned_top.crop((0, half, scanned_top.width, scanned_top.height)),
    ]
    tiff = io.BytesIO()
    pages[0].save(tiff, "TIFF", save_all=True, append_images=pages[1:])
    said: list[str] = []
    document = parse_document_isolated(
        tiff.getvalue(), "memo.tiff", sandbox=GUARD, progress=said.append
    )
    # The documents page shows "page N of M" as for a scanned PDF, up to the last page read.
    assert said[-1] == "Reading page 2 of 2 by OCR."
    assert set(said) <= {"Reading page 1 of 2 by OCR.", "Reading page 2 of 2 by OCR."}
    assert [section.page for section in document.sections] == [1, 2]


def test_only_the_pages_of_a_pdf_without_a_text_layer_are_read_by_ocr(
    text_page: bytes, scanned_top: Image.Image
) -> None:
    scan = io.BytesIO()
    scanned_top.save(scan, "PDF", resolution=300)
    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(text_page)))
    writer.append(PdfReader(scan))
    mixed = io.BytesIO()
    writer.write(mixed)
    said: list[str] = []
    document = parse_document_isolated(
        mixed.getvalue(), "mixed.pdf", sandbox=GUARD, progress=said.append
    )
    # The documents page hears which page is being read.
    assert said == ["Reading page 2 by OCR (1 of 1 scanned pages)."]
    first = "\n".join(section.text for section in document.sections if section.page == 1)
    second = "\n".join(section.text for section in document.sections if section.page == 2)
    # The text layer as it is (OCR would not read the `sed' quote this way)...
    assert "sed The `sed' stream editor" in first
    # ...and the scanned page read by OCR.
    assert "Utility to remove empty directories" in second


def test_an_image_over_the_pixel_limit_is_refused_with_its_size(
    scanned_top: Image.Image,
) -> None:
    with pytest.raises(
        ParseError, match=r"^The image is 2550 by 1100 pixels \(3 million\); at most 1 million"
    ):
        parse_document(
            image_bytes(scanned_top, "JPEG"),
            "scan.jpg",
            limits=ParseLimits(max_image_pixels=1_000_000),
        )


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge picture: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            png_claiming(100_000, 100_000),
            r"The image is 100000 by 100000 pixels \(10000 million\); at most 60 million",
        ),
        (b"\x89PNG\r\n\x1a\n" + bytes(300), "The image is damaged"),
    ],
    ids=["bomb", "damaged"],
)
def test_bad_images_fail_alone_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=f"^{reason}"):
        parse_document_isolated(data, "scan.png", sandbox=GUARD)


@pytest.mark.django_db
@override_settings(OCR_LANGUAGES="klingon")
def test_the_documents_page_says_why_a_scan_was_refused_without_ocr(
    scanned_top: Image.Image,
) -> None:
    outcome = document_upload_bytes(
        name="scan.png", data=image_bytes(scanned_top, "PNG"), is_public=True
    )
    assert outcome.version is not None
    run_pending_once()
    version = DocumentVersion.objects.get(id=outcome.version.id)
    assert version.status == VersionStatus.FAILED
    client = Client()
    client.force_login(User.objects.create_superuser("root"))
    page = client.get(reverse("ingestion:document-list")).content.decode()
    assert "An image has to be read by OCR, but OCR cannot read the language(s) klingon" in page
