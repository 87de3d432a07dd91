"""Fuzzing the parsers: whatever the bytes, a file is read or refused with a reason.

Random bytes under every supported name, mutated real documents (flipped, cut, spliced bytes;
for Office files, mutated XML inside an intact archive) and random Markdown and HTML built
from the characters their syntax is made of. Bounded: FUZZ_EXAMPLES examples per test (150
unless set), each within a deadline, so a hang or a blow-up in time fails the test.
"""

from __future__ import annotations

import io
import os
import zipfile
from datetime import timedelta
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter

from ingestion.parsing import ParsedDocument, ParseError, parse_document

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")),
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXTENSIONS = [".pdf", ".docx", ".pptx", ".xlsx", ".html", ".htm", ".md", ".txt", ""]
SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "samples"


def assert_read_or_refused(data: bytes, filename: str) -> None:
    """The property: a document with text, or a ParseError a person can read; nothing else."""
    try:
        document = parse_document(data, filename)
    except ParseError as error:
        message = str(error)
        assert message.strip(), "a refusal must say why"
        assert "Traceback" not in message
        return
    assert isinstance(document, ParsedDocument)
    assert document.title.strip()
    assert document.sections
    for section in document.sections:
        assert section.text.strip()
        assert section.page is None or section.page >= 1
        assert all(isinstance(heading, str) for heading in section.heading_path)


# --- Seeds: small real documents of every type -------------------------------------------


def office_seed(kind: str) -> bytes:
    out = io.BytesIO()
    if kind == "docx":
        document = docx.Document()
        document.add_heading("Travel policy", level=1)
        document.add_paragraph("Book trains in second class for journeys under four hours.")
        table = document.add_table(rows=2, cols=2)
        table.cell(0, 0).text = "Meals"
        table.cell(0, 1).text = "40 euros"
        document.save(out)
    elif kind == "pptx":
        presentation = pptx.Presentation()
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = "Quarterly results"
        slide.placeholders[1].text = "Revenue grew by twelve percent."
        presentation.save(out)
    else:
        workbook = openpyxl.Workbook()
        sheet = workbook.active
        sheet.append(["Product", "Price"])
        sheet.append(["Widget", 2.5])
        workbook.save(out)
    return out.getvalue()


def pdf_seed() -> bytes:
    """One page of a real PDF, with its fonts and compressed streams."""
    writer = PdfWriter()
    writer.add_page(PdfReader(SAMPLES / "pdf" / "fhs-3.0.pdf").pages[12])
    writer.add_outline_item(title="The root filesystem", page_number=0)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def text_seeds() -> dict[str, bytes]:
    return {
        "index.html": (SAMPLES / "flask-html" / "404.html").read_bytes(),
        "container.md": (
            SAMPLES / "docker-md" / "reference" / "commandline" / "container.md"
        ).read_bytes(),
        "COPYRIGHT.txt": (SAMPLES / "docker-md" / "COPYRIGHT").read_bytes(),
    }


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    if not SAMPLES.is_dir():
        pytest.skip("shared sample data is not available")
    return {
        "handbook.pdf": pdf_seed(),
        "policy.docx": office_seed("docx"),
        "results.pptx": office_seed("pptx"),
        "prices.xlsx": office_seed("xlsx"),
        **text_seeds(),
    }


# --- Mutations ---------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few random edits: flipped bytes, a cut, a spliced or repeated chunk."""
    result = bytearray(data)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        position = draw(st.integers(min_value=0, max_value=max(0, len(result) - 1)))
        edit = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "truncate"]))
        if edit == "flip" and result:
            result[position] ^= draw(st.integers(min_value=1, max_value=255))
        elif edit == "cut":
            del result[position : position + draw(st.integers(min_value=1, max_value=64))]
        elif edit == "insert":
            result[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif edit == "repeat":
            chunk = result[position : position + draw(st.integers(min_value=1, max_value=256))]
            result[position:position] = chunk * draw(st.integers(min_value=2, max_value=50))
        else:
            del result[position:]
    return bytes(result)


@st.composite
def office_with_mutated_xml(draw: st.DrawFn, data: bytes) -> bytes:
    """An intact archive whose XML parts were edited, so the XML readers get the damage."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    xml_names = sorted(name for name in members if name.endswith(".xml"))
    for name in draw(st.lists(st.sampled_from(xml_names), min_size=1, max_size=3, unique=True)):
        members[name] = draw(mutated(members[name]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return out.getvalue()


MARKUP_PIECES = [
    "#", "# ", "## ", "*", "_", "**", "`", "```", "[", "]", "(", ")", "!", "|", "|-|", "-",
    "- ", "1. ", "> ", "---", "+++", "title: x", "\n", "\n\n", " ", "    ", "\t", "\r", "\\",
    "<", ">", "</", "<h1>", "</h1>", "<h3>", "<p>", "<pre>", "</pre>", "<table>", "<tr>",
    "<td>", "<main>", "<nav>", "<script>", "</script>", "<title>", "<br>", "<!--", "-->",
    "<!DOCTYPE html>", "&amp;", "&#0;", "&#x110000;", "<![CDATA[", "]]>", "\x00", "\x0c",
    "\u00a0", "\u202e", "\ufeff", "\U0001f517", "¶", "word", "Ärger", "İ", "ß", "....",
]  # fmt: skip


# --- The properties ----------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=4096), extension=st.sampled_from(EXTENSIONS))
def test_random_bytes_are_read_or_refused(data: bytes, extension: str) -> None:
    assert_read_or_refused(data, f"upload{extension}")


@FUZZ
@given(choice=st.data())
def test_mutated_documents_are_read_or_refused(
    seeds: dict[str, bytes], choice: st.DataObject
) -> None:
    name = choice.draw(st.sampled_from(sorted(seeds)))
    assert_read_or_refused(choice.draw(mutated(seeds[name])), name)


@FUZZ
@given(choice=st.data())
def test_office_files_with_mutated_xml_are_read_or_refused(
    seeds: dict[str, bytes], choice: st.DataObject
) -> None:
    name = choice.draw(st.sampled_from(["policy.docx", "results.pptx", "prices.xlsx"]))
    assert_read_or_refused(choice.draw(office_with_mutated_xml(seeds[name])), name)


@FUZZ
@given(
    pieces=st.lists(st.sampled_from(MARKUP_PIECES), max_size=300),
    extension=st.sampled_from([".md", ".html", ".txt", ""]),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "cp1252"]),
)
def test_random_markup_is_read_or_refused(pieces: list[str], extension: str, encoding: str) -> None:
    text = "".join(pieces)
    assert_read_or_refused(text.encode(encoding, errors="replace"), f"notes{extension}")


@settings(FUZZ, max_examples=max(10, FUZZ.max_examples // 5), deadline=timedelta(seconds=10))
@given(
    runs=st.lists(
        st.tuples(st.sampled_from(MARKUP_PIECES), st.integers(min_value=1, max_value=10_000)),
        min_size=1,
        max_size=4,
    ),
    extension=st.sampled_from([".md", ".html", ".txt"]),
)
def test_long_runs_of_markup_are_read_in_time(runs: list[tuple[str, int]], extension: str) -> None:
    """Runs of one syntax character are where a parser's time grows faster than the file."""
    text = "".join(piece * count for piece, count in runs)
    assert_read_or_refused(text.encode("utf-8", errors="replace"), f"notes{extension}")
