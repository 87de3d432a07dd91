from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from pptx.util import Inches
from pypdf import PdfReader, PdfWriter

from bench.table_pdfs import (
    KnownTable,
    cell_accuracy,
    known_tables,
    price_list,
    print_html_to_pdf,
    table_page_html,
)
from ingestion.parsing import (
    ParsedDocument,
    ParseError,
    ParseLimits,
    Section,
    detect_type,
    parse_document,
    safe_filename,
)
from ingestion.parsing.text import decode_text
from ingestion.sandbox import SandboxLimits, parse_document_isolated

MB = 1024 * 1024
DEFAULT_LIMITS = ParseLimits()
# A DOS header pointing at a PE header: the start of every Windows .exe and .dll.
WINDOWS_PROGRAM = (
    b"MZ\x90\x00" + bytes(56) + (64).to_bytes(4, "little") + b"PE\x00\x00" + bytes(400)
)
# Parses that once took minutes run here under a wall-clock limit, so a regression fails
# with a reason instead of stalling the suite.
HANG_GUARD = SandboxLimits(timeout_s=60)


def parse_file(path: Path, *, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedDocument:
    return parse_document(path.read_bytes(), path.name, limits=limits)


def section_containing(document: ParsedDocument, passage: str) -> Section:
    matches = [section for section in document.sections if passage in section.text]
    assert matches, f"{passage!r} is in no section"
    return matches[0]


def all_text(document: ParsedDocument) -> str:
    return "\n".join(section.text for section in document.sections)


@pytest.fixture
def pdf_samples(shared_data: Path) -> Path:
    return shared_data / "samples" / "pdf"


@pytest.fixture
def fhs_page_13(pdf_samples: Path) -> PdfWriter:
    writer = PdfWriter()
    writer.add_page(PdfReader(pdf_samples / "fhs-3.0.pdf").pages[12])
    return writer


def write_pdf(writer: PdfWriter, path: Path) -> Path:
    with path.open("wb") as file:
        writer.write(file)
    return path


def write_docx(path: Path) -> Path:
    document = docx.Document()
    document.core_properties.title = "Onboarding handbook"
    document.add_paragraph("Welcome to the team.")
    document.add_heading("Installation", level=1)
    document.add_paragraph("Install the client before your first day.")
    document.add_heading("Virtual environments", level=2)
    document.add_paragraph("Create one virtual environment per project with python -m venv.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Tool"
    table.cell(0, 1).text = "Version"
    table.cell(1, 0).text = "Python"
    table.cell(1, 1).text = "3.11"
    document.add_heading("Support", level=1)
    document.add_paragraph("Write to the help desk.")
    document.save(str(path))
    return path


def write_pptx(path: Path) -> Path:
    presentation = pptx.Presentation()
    for title, body in (
        ("Quarterly results", "Revenue grew by twelve percent."),
        ("Next steps", "Hire two engineers for the platform team."),
    ):
        slide = presentation.slides.add_slide(presentation.slide_layouts[1])
        slide.shapes.title.text = title
        slide.placeholders[1].text = body
    last_slide = presentation.slides[1]
    box = last_slide.shapes.add_textbox(Inches(1), Inches(5), Inches(4), Inches(1))
    box.text_frame.text = "Budget approval is due in March."
    last_slide.notes_slide.notes_text_frame.text = "Mention the hiring freeze."
    presentation.save(str(path))
    return path


def write_xlsx(path: Path) -> Path:
    workbook = openpyxl.Workbook()
    prices = workbook.active
    prices.title = "Prices"
    prices.append(["Product", "Price", "Stock"])
    prices.append(["Widget", 2.5, 10])
    prices.append(["Gadget", 4, None])
    staff = workbook.create_sheet("Staff")
    for number in range(1, 51):
        staff.append([f"Person {number}", "Engineering"])
    workbook.save(path)
    return path


def write_zip(path: Path, members: dict[str, bytes], *, zeros: int = 0) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        if zeros:
            with archive.open("word/media/padding.bin", "w", force_zip64=True) as member:
                for _ in range(zeros // MB):
                    member.write(bytes(MB))
    return path


DOCX_SKELETON = {
    "[Content_Types].xml": b"<?xml version='1.0'?><Types/>",
    "word/document.xml": b"<?xml version='1.0'?><document/>",
}


# --- PDF (pdf.py) ------------------------------------------------------------------------


def test_it_keeps_pdf_page_numbers(pdf_samples: Path) -> None:
    document = parse_file(pdf_samples / "fhs-3.0.pdf")

    section = section_containing(document, "must be placed together in either /bin or /usr/bin")

    assert document.detected_type == "pdf"
    assert section.page == 13


def test_it_turns_the_pdf_outline_into_heading_paths(pdf_samples: Path) -> None:
    document = parse_file(pdf_samples / "debian-faq.en.pdf")

    section = section_containing(document, "Currently there are three versions of Debian")

    assert document.title == "The Debian GNU/Linux FAQ"
    assert section.page == 13
    assert section.heading_path == (
        "Getting and installing Debian GNU/Linux",
        "What is the latest version of Debian?",
    )


def test_it_keeps_the_spaces_between_words_of_tex_made_pdfs(pdf_samples: Path) -> None:
    document = parse_file(pdf_samples / "debian-faq.en.pdf")

    assert "The official document giving installation instructions" in all_text(document)


def test_it_joins_words_hyphenated_across_pdf_lines(pdf_samples: Path) -> None:
    document = parse_file(pdf_samples / "debian-faq.en.pdf")

    assert "pointers to other documentation will be given" in " ".join(all_text(document).split())


def test_a_pdf_without_a_metadata_title_takes_the_largest_text_of_its_first_page(
    shared_data: Path,
) -> None:
    document = parse_file(shared_data / "samples" / "ntsb-pdf" / "20071229X02007.pdf")

    assert document.title == "National Transportation Safety Board Aviation Accident Final Report"


def test_running_headers_leave_the_pages_but_stay_known(shared_data: Path) -> None:
    document = parse_file(shared_data / "samples" / "ntsb-pdf" / "20071229X02007.pdf")

    pages_2_and_3 = [s.text for s in document.sections if s.page in (2, 3)]
    assert not any("NYC08CA055" in text.split("\n", 1)[0] for text in pages_2_and_3)
    assert "Page 2 of 4 NYC08CA055" in document.running_text


def test_running_footers_with_page_numbers_are_recognised_as_one_line(pdf_samples: Path) -> None:
    document = parse_file(pdf_samples / "maint-guide.en.pdf")

    footer = re.compile(r"Maintainers\u2019 Guide \d+ / 57")
    sandboxed = parse_document_isolated(
        (pdf_samples / "maint-guide.en.pdf").read_bytes(), "x.pdf", sandbox=HANG_GUARD
    )
    assert footer.search(document.running_text)
    assert not any(footer.search(section.text) for section in sandboxed.sections)


def test_it_refuses_an_encrypted_pdf(fhs_page_13: PdfWriter, tmp_path: Path) -> None:
    fhs_page_13.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    path = write_pdf(fhs_page_13, tmp_path / "locked.pdf")

    with pytest.raises(
        ParseError, match=r"^The PDF is encrypted; upload a copy without a password"
    ):
        parse_file(path)


def test_it_reads_a_pdf_protected_only_by_an_owner_password(
    fhs_page_13: PdfWriter, tmp_path: Path
) -> None:
    fhs_page_13.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    path = write_pdf(fhs_page_13, tmp_path / "no-printing.pdf")

    document = parse_file(path)

    assert "must be placed together in either /bin or /usr/bin" in all_text(document)


def test_it_refuses_a_pdf_without_a_text_layer_or_words_to_read(tmp_path: Path) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    path = write_pdf(writer, tmp_path / "scan.pdf")

    with pytest.raises(ParseError, match=r"^The PDF has no extractable text: it has no text layer"):
        parse_file(path)


def test_a_scan_is_refused_with_the_reason_when_ocr_cannot_read_its_language(
    tmp_path: Path,
) -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    path = write_pdf(writer, tmp_path / "scan.pdf")

    with pytest.raises(ParseError, match=r"has to be read by OCR, but OCR cannot read .* klingon"):
        parse_file(path, limits=ParseLimits(ocr_languages="klingon"))


@pytest.mark.parametrize(
    "damage", ["truncated", "garbage after header"], ids=["truncated", "garbage"]
)
def test_it_refuses_a_damaged_pdf(pdf_samples: Path, damage: str) -> None:
    original = (pdf_samples / "fhs-3.0.pdf").read_bytes()
    data = (
        original[: len(original) // 3]
        if damage == "truncated"
        else b"%PDF-1.7\n" + os.urandom(4096)
    )

    with pytest.raises(ParseError, match=r"^The PDF is damaged and cannot be read"):
        parse_document(data, "report.pdf")


def test_it_refuses_a_pdf_with_too_many_pages(pdf_samples: Path) -> None:
    with pytest.raises(ParseError, match=r"^The PDF has 50 pages; at most 10 are accepted"):
        parse_file(pdf_samples / "fhs-3.0.pdf", limits=ParseLimits(max_pages=10))


# --- HTML (html.py) ----------------------------------------------------------------------


def test_it_builds_heading_paths_from_html_headings(shared_data: Path) -> None:
    document = parse_file(shared_data / "samples" / "flask-html" / "installation.html")

    section = section_containing(document, "Python comes bundled with the venv module")

    assert document.detected_type == "html"
    assert document.title.startswith("Installation")
    assert section.heading_path == ("Installation", "Virtual environments")
    assert section.page is None


def test_it_leaves_html_navigation_and_permalinks_out(shared_data: Path) -> None:
    document = parse_file(shared_data / "samples" / "flask-html" / "installation.html")

    text = all_text(document)
    assert "Quick search" not in text
    assert "¶" not in text
    assert all("¶" not in heading for s in document.sections for heading in s.heading_path)


def test_it_keeps_html_code_blocks_line_by_line(shared_data: Path) -> None:
    document = parse_file(shared_data / "samples" / "flask-html" / "installation.html")

    section = section_containing(document, "$ mkdir myproject\n$ cd myproject\n")

    assert section.heading_path[-1] == "Create an environment"


def test_it_drops_the_site_name_from_an_html_title(shared_data: Path) -> None:
    document = parse_file(shared_data / "samples" / "flask-html" / "installation.html")

    assert document.title == "Installation"


XHTML_PAGE = b"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"
 "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>CREATE TABLE</title></head>
<body><div class="navheader"><table><tr><th>CREATE TABLE</th></tr><tr>
<td><a href="sql-createsubscription.html">Prev</a></td><th>SQL Commands</th>
<td><a href="sql-createtableas.html" title="CREATE TABLE AS">Next</a></td></tr></table></div>
<div class="refentry"><h2>CREATE TABLE</h2><p>CREATE TABLE &#8212; define a new table</p>
<div class="toc"><dl><dt>Parameters</dt><dt>Compatibility</dt></dl></div>
<h3>Description</h3><p>CREATE TABLE will create a new, initially empty table.</p></div>
<div class="navfooter"><table><tr><td>CREATE SUBSCRIPTION</td>
<td>CREATE TABLE AS</td></tr></table></div></body></html>
"""


def test_it_reads_xhtml_as_xml_without_warnings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        document = parse_document(XHTML_PAGE, "sql-createtable.html")

    assert document.title == "CREATE TABLE"
    assert "will create a new, initially empty table" in all_text(document)


def test_it_leaves_out_the_navigation_bars_and_tables_of_contents_every_page_repeats() -> None:
    text = all_text(parse_document(XHTML_PAGE, "sql-createtable.html"))

    assert "CREATE SUBSCRIPTION" not in text
    assert "CREATE TABLE AS" not in text
    assert "Compatibility" not in text
    assert "Prev" not in text


def test_lists_of_nothing_but_links_are_left_out_of_web_pages() -> None:
    page = (
        b"<html><body><main><h1>volume create</h1><p>Creates a new volume.</p>"
        b"<h2>See also</h2><ul><li><a href='i.html'>volume inspect</a></li>"
        b"<li><a href='r.html'>volume rm</a></li></ul>"
        b"<h2>Steps</h2><ul><li>Run <a href='c.html'>volume create</a> first.</li></ul>"
        b"</main></body></html>"
    )

    text = all_text(parse_document(page, "volume_create.html"))

    assert "volume inspect" not in text
    assert "Run volume create first." in text


def test_a_page_that_is_only_navigation_is_still_read() -> None:
    page = (
        b"<html><head><title>Part I. Tutorial</title></head><body>"
        b'<div class="toc"><ul><li>1. Getting Started</li><li>2. The SQL Language</li></ul>'
        b"</div></body></html>"
    )

    document = parse_document(page, "tutorial.html")

    assert "The SQL Language" in all_text(document)


# --- Markdown (markdown.py) --------------------------------------------------------------


def test_it_builds_heading_paths_from_markdown_headings(shared_data: Path) -> None:
    path = shared_data / "samples" / "docker-md" / "reference" / "commandline" / "config_create.md"

    document = parse_file(path)

    section = section_containing(document, "This is a cluster management command")
    assert document.detected_type == "markdown"
    assert section.heading_path == ("config create", "Description")


def test_it_skips_markdown_front_matter_but_takes_its_title(shared_data: Path) -> None:
    path = shared_data / "samples" / "docker-md" / "reference" / "commandline" / "config_create.md"

    document = parse_file(path)

    assert document.title == "config create"
    assert "keywords:" not in all_text(document)


def test_it_keeps_markdown_code_blocks(shared_data: Path) -> None:
    path = shared_data / "samples" / "docker-md" / "reference" / "commandline" / "config_create.md"

    document = parse_file(path)

    section = section_containing(document, "$ docker config create my_config ./config.json")
    assert section.heading_path == ("config create", "Examples", "Create a config with a file")


def test_it_reads_setext_headings_and_tables_in_markdown() -> None:
    text = (
        "Guide\n=====\n\nIntro.\n\n"
        "Usage\n-----\n\n| Flag | Meaning |\n| --- | --- |\n| -q | quiet |\n"
    )

    document = parse_document(text.encode(), "guide.md")

    section = section_containing(document, "-q | quiet")
    assert section.heading_path == ("Guide", "Usage")
    assert document.title == "Guide"


def test_lists_of_nothing_but_links_are_left_out_of_markdown() -> None:
    data = (
        b"# volume create\n\nCreates a new volume.\n\n## Related commands\n\n"
        b"* [volume inspect](volume_inspect.md)\n* [volume rm](volume_rm.md)\n\n"
        b"## Steps\n\n* Run [volume create](c.md) first.\n"
    )

    document = parse_document(data, "volume_create.md")

    assert "volume inspect" not in all_text(document)
    assert "Run volume create first." in all_text(document)
    assert ("volume create", "Related commands") not in [s.heading_path for s in document.sections]


def test_a_markdown_index_that_is_only_links_is_still_read() -> None:
    document = parse_document(b"* [Install](install.md)\n* [Usage](usage.md)\n", "README.md")

    assert "Install" in all_text(document)


# --- Office formats (office.py) ----------------------------------------------------------


def test_it_builds_heading_paths_from_docx_heading_styles(tmp_path: Path) -> None:
    document = parse_file(write_docx(tmp_path / "handbook.docx"))

    section = section_containing(document, "Create one virtual environment per project")

    assert document.detected_type == "docx"
    assert document.title == "Onboarding handbook"
    assert section.heading_path == ("Installation", "Virtual environments")
    assert section_containing(document, "Write to the help desk").heading_path == ("Support",)
    assert section_containing(document, "Welcome to the team").heading_path == ()


def test_it_reads_docx_tables_as_markdown_tables(tmp_path: Path) -> None:
    document = parse_file(write_docx(tmp_path / "handbook.docx"))

    section = section_containing(document, "| Tool | Version |\n|---|---|\n| Python | 3.11 |")

    assert section.heading_path == ("Installation", "Virtual environments")


def test_it_numbers_pptx_slides_as_pages_under_their_titles(tmp_path: Path) -> None:
    document = parse_file(write_pptx(tmp_path / "results.pptx"))

    first = section_containing(document, "Revenue grew by twelve percent")
    second = section_containing(document, "Budget approval is due in March")

    assert document.detected_type == "pptx"
    assert document.title == "Quarterly results"
    assert (first.page, first.heading_path) == (1, ("Quarterly results",))
    assert (second.page, second.heading_path) == (2, ("Next steps",))
    assert "Mention the hiring freeze" in second.text


def test_it_reads_xlsx_sheets_as_tables_headed_by_their_first_row(tmp_path: Path) -> None:
    document = parse_file(write_xlsx(tmp_path / "inventory.xlsx"))

    prices = section_containing(document, "Widget")

    assert document.detected_type == "xlsx"
    assert prices.heading_path == ("Prices",)
    assert prices.text.splitlines() == [
        "| Product | Price | Stock |",
        "|---|---|---|",
        "| Widget | 2.5 | 10 |",
        "| Gadget | 4 |  |",
    ]


def test_it_caps_the_rows_read_from_a_workbook(tmp_path: Path) -> None:
    document = parse_file(
        write_xlsx(tmp_path / "inventory.xlsx"), limits=ParseLimits(max_sheet_rows=13)
    )

    staff = section_containing(document, "| Person 1 |")

    # Ten rows, and the separator under the first.
    assert len(staff.text.splitlines()) == 11
    assert "Person 11" not in all_text(document)


def test_it_refuses_a_zip_bomb_before_unpacking_it(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.docx", DOCX_SKELETON, zeros=20 * MB)

    with pytest.raises(
        ParseError, match=r"more than 10 MB when unpacked; it was refused as a possible zip bomb"
    ):
        parse_file(path, limits=ParseLimits(max_uncompressed_bytes=10 * MB))


def test_it_refuses_an_archive_that_expands_too_many_times(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.docx", DOCX_SKELETON, zeros=16 * MB)

    with pytest.raises(
        ParseError, match=r"times its packed size; it was refused as a possible zip bomb"
    ):
        parse_file(path)


def test_it_refuses_an_archive_with_too_many_parts(tmp_path: Path) -> None:
    with pytest.raises(
        ParseError, match=r"more than 5 parts; it was refused as a possible zip bomb"
    ):
        parse_file(write_docx(tmp_path / "handbook.docx"), limits=ParseLimits(max_zip_members=5))


def test_it_explains_an_office_file_the_library_cannot_read(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "broken.docx", DOCX_SKELETON)

    with pytest.raises(
        ParseError,
        match=r"^The file could not be read as a Word document \(DOCX\); it may be damaged",
    ):
        parse_file(path)


def test_it_refuses_a_document_without_any_text(tmp_path: Path) -> None:
    path = tmp_path / "empty.docx"
    docx.Document().save(str(path))

    with pytest.raises(ParseError, match=r"^The file has no extractable text"):
        parse_file(path)


# --- Types and plain text (detection.py, text.py) ----------------------------------------


def test_it_refuses_an_empty_file() -> None:
    with pytest.raises(ParseError, match=r"^The file is empty\.$"):
        parse_document(b"", "notes.txt")


@pytest.mark.parametrize(
    ("data", "filename", "message"),
    [
        (
            b"\x89PNG\r\n\x1a\n" + bytes(200),
            "report.pdf",
            "The file's content is not a PDF (it looks like a PNG image).",
        ),
        (
            bytes(range(256)) * 8,
            "report.pdf",
            "The file's content is not a PDF (it looks like binary data).",
        ),
        (
            b"Just some notes.\n",
            "minutes.docx",
            "The file's content is not a Word document (DOCX) (it looks like plain text).",
        ),
        (b"%PDF-1.7\n", "notes.txt", "The file's content is not plain text (it looks like a PDF)."),
        (
            WINDOWS_PROGRAM,
            "invoice.pdf",
            "The file's content is not a PDF (it looks like a Windows program (.exe or .dll)).",
        ),
        (
            WINDOWS_PROGRAM,
            "minutes.docx",
            "The file's content is not a Word document (DOCX) (it looks like a Windows program "
            "(.exe or .dll)).",
        ),
    ],
    ids=["png-as-pdf", "binary-as-pdf", "text-as-docx", "pdf-as-text", "exe-as-pdf", "exe-as-docx"],
)
def test_it_refuses_content_that_does_not_match_the_extension(
    data: bytes, filename: str, message: str
) -> None:
    with pytest.raises(ParseError) as raised:
        parse_document(data, filename)

    assert str(raised.value) == message


def test_it_refuses_an_unsupported_type_by_name() -> None:
    with pytest.raises(
        ParseError, match=r"^This type of file is not supported \(it looks like a legacy Office"
    ):
        detect_type(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "budget.xls")


def test_it_refuses_a_windows_program_whatever_its_name() -> None:
    with pytest.raises(
        ParseError, match=r"^This type of file is not supported \(it looks like a Windows"
    ):
        detect_type(WINDOWS_PROGRAM, "setup")


def test_it_reads_text_that_merely_starts_with_the_letters_mz() -> None:
    document = parse_document(b"MZ-7 maintenance schedule: every second Tuesday.", "mz7.txt")

    assert all_text(document) == "MZ-7 maintenance schedule: every second Tuesday."


def test_it_detects_the_type_by_content_when_the_name_has_no_extension(tmp_path: Path) -> None:
    docx_bytes = write_docx(tmp_path / "handbook.docx").read_bytes()

    assert detect_type(docx_bytes, "handbook") == "docx"
    assert detect_type(b"<!DOCTYPE html><html><body>Hi</body></html>", "page") == "html"
    assert detect_type(b"# Title\n\nSome text.", "README") == "text"
    assert detect_type(b"# Title\n\nSome text.", "README.md") == "markdown"


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16", "utf-16-le", "utf-8-sig"])
def test_it_decodes_text_in_legacy_and_unicode_encodings(encoding: str) -> None:
    text = "Die Größe der Straße überrascht: café, naïve, façade, Ærø. Grüße aus München!"
    if encoding == "cp1252":
        text = "He said \u201cit\u2019s done\u201d \u2014 and paid 5 \u20ac. Na\u00efve caf\u00e9."

    document = parse_document(text.encode(encoding), "notes.txt")

    assert document.detected_type == "text"
    assert document.sections == [Section(text=text, page=None, heading_path=())]
    assert document.title == "notes"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"Caf\xc3\xa9 au lait \xff", "Café au lait \ufffd"),
        (b"Caf\xe9 na\xc3\xafve", "Caf\ufffd naïve"),
        (
            "Die Größe der Straße: café, naïve.".encode().replace("é".encode(), b"\xe9"),
            "Die Größe der Straße: caf\ufffd, naïve.",
        ),
        # Cut inside its last character, as the first bytes of a file are when sniffed.
        ("Grüße aus München, à bientô".encode()[:-1], "Grüße aus München, à bient\ufffd"),
    ],
)
def test_mostly_utf8_text_keeps_its_characters_and_marks_only_the_bad_bytes(
    data: bytes, text: str
) -> None:
    assert decode_text(data) == text

    document = parse_document(data, "notes.txt")
    assert document.sections[0].text == text


def test_legacy_text_with_a_chance_utf8_pair_is_still_read_in_its_code_page() -> None:
    # "É…" in cp1252 is C9 85, a well-formed UTF-8 character; everything else is not UTF-8.
    text = "Menü im CAFÉ… Größe, Straße, Grüße, façade, naïve."

    assert decode_text(text.encode("cp1252")) == text


def test_it_never_fails_on_text_of_an_unknown_encoding() -> None:
    document = parse_document(bytes(range(0x80, 0x100)) * 20, "weird.txt")

    assert document.sections[0].text


# --- File names (filenames.py) -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["report.pdf", "Quarterly results (final).pptx", "Übersicht 2024.xlsx"]
)
def test_it_accepts_plain_file_names(name: str) -> None:
    assert safe_filename(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "The file name is empty."),
        ("../etc/passwd", "The file name must not contain folder separators (/ or \\)."),
        ("C:\\Windows\\win.ini", "The file name must not contain folder separators (/ or \\)."),
        ("..", "The file name must not contain '..'."),
        ("report\x00.pdf", "The file name must not contain control characters."),
        ("report\n.pdf", "The file name must not contain control characters."),
    ],
)
def test_it_refuses_unsafe_file_names(name: str, message: str) -> None:
    with pytest.raises(ParseError) as raised:
        safe_filename(name)

    assert str(raised.value) == message


# --- Input built to be slow --------------------------------------------------------------


def test_it_reads_a_line_with_a_long_run_of_blanks() -> None:
    document = parse_document_isolated(
        b"Budget" + b" " * MB + b"approved\n", "notes.txt", sandbox=HANG_GUARD
    )

    assert document.sections[0].text.startswith("Budget ")
    assert document.sections[0].text.endswith(" approved")


def test_it_reads_a_front_matter_title_that_runs_on_blanks() -> None:
    data = b"---\ntitle: Budget" + b" " * MB + b"plan\n---\n\nThe plan for next year.\n"

    document = parse_document_isolated(data, "plan.md", sandbox=HANG_GUARD)

    assert document.title.startswith("Budget ")
    assert document.title.endswith(" plan")


def test_it_reads_a_long_word_document_of_plain_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "minutes.docx"
    document = docx.Document()
    for number in range(20_000):
        document.add_paragraph(f"Item {number} was discussed.")
    document.save(str(path))

    parsed = parse_document_isolated(path.read_bytes(), path.name, sandbox=HANG_GUARD)

    assert "Item 19999 was discussed." in all_text(parsed)


def mail_message(subject: str, body: str, *, sender: str = "Ada <ada@example.com>") -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = sender
    message["To"] = "Bob <bob@example.com>, carol@example.com"
    message["Subject"] = subject
    message["Date"] = "Tue, 03 Oct 2023 09:15:00 +0200"
    message.set_content(body)
    return bytes(message)


def test_a_message_is_its_subject_sender_recipients_date_and_body() -> None:
    document = parse_document(mail_message("Parking rules", "Visitors park on level -2."), "m.eml")
    assert document.detected_type == "eml"
    assert document.title == "Parking rules"
    assert dict(document.metadata)["To"] == "Bob <bob@example.com>, carol@example.com"
    text = all_text(document)
    assert "From: Ada <ada@example.com>" in text
    assert "Visitors park on level -2." in text
    assert all(section.heading_path[0] == "Parking rules" for section in document.sections)


def test_a_message_without_a_known_extension_is_recognised_by_its_headers() -> None:
    assert detect_type(mail_message("Hello", "Hi."), "message") == "eml"
    assert detect_type(b"From: a note to self\n\nnothing more", "note") == "text"


def test_an_html_only_message_is_read_as_text_and_embedded_pictures_are_not_attachments() -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "Newsletter"
    message["From"] = "news@example.com"
    message.set_content(
        "<html><body><h1>News</h1><p>The canteen opens at <b>8</b>.</p></body></html>",
        subtype="html",
    )
    message.add_related(
        b"\x89PNG\r\n\x1a\n" + bytes(64), maintype="image", subtype="png", cid="<logo>"
    )
    message.add_attachment(
        b"\x7fELF" + bytes(64), maintype="application", subtype="octet-stream", filename="tool"
    )
    message.add_attachment(
        b"Minutes: the budget passed.", maintype="text", subtype="plain", filename="minutes.txt"
    )
    document = parse_document(bytes(message), "news.eml")
    text = all_text(document)
    assert "The canteen opens at 8." in text
    assert "<b>" not in text
    assert [attachment.name for attachment in document.attachments] == ["minutes.txt"]
    assert "tool (not a readable type)" in text


def test_a_mailbox_is_its_messages_each_under_its_subject() -> None:
    mailbox = b"".join(
        b"From ada@example.com Tue Oct  3 09:15:00 2023\n" + mail_message(subject, body) + b"\n"
        for subject, body in [
            ("First", "From now on, meetings start at nine."),
            ("Second", "Lunch is at noon."),
        ]
    )
    document = parse_document(mailbox, "team.mbox")
    assert document.detected_type == "mbox"
    assert detect_type(mailbox, "team") == "mbox"
    headings = {section.heading_path[0] for section in document.sections}
    assert headings == {"First", "Second"}
    # A body line starting with "From " does not start a new message.
    assert "meetings start at nine" in all_text(document)


def test_a_message_travels_through_the_sandbox_with_its_attachments() -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "Minutes"
    message.set_content("See attached.")
    message.add_attachment(
        b"Minutes: the budget passed.", maintype="text", subtype="plain", filename="minutes.txt"
    )
    document = parse_document_isolated(bytes(message), "minutes.eml", sandbox=HANG_GUARD)
    assert document.attachments[0].name == "minutes.txt"
    assert document.attachments[0].data == b"Minutes: the budget passed."
    assert ("Subject", "Minutes") in document.metadata


def test_html_tables_become_markdown_tables_under_their_caption() -> None:
    page = (
        b"<html><body><h1>Prices</h1><table><caption>Price list 2024</caption>"
        b"<tr><th>Item</th><th>Price | EUR</th></tr><tr><td>Widget</td><td>2.50</td></tr>"
        b"<tr><td colspan='2'>Prices exclude VAT</td></tr></table></body></html>"
    )
    document = parse_document(page, "prices.html")
    assert document.sections[0].text.splitlines() == [
        "Price list 2024",
        "| Item | Price \\| EUR |",
        "|---|---|",
        "| Widget | 2.50 |",
        "| Prices exclude VAT | Prices exclude VAT |",
    ]


@pytest.fixture(scope="module")
def printed_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[KnownTable], bytes]:
    """A page of known tables, one running over three pages, printed to PDF by Chromium."""
    tables = known_tables()
    path = tmp_path_factory.mktemp("tables") / "figures.pdf"
    return tables, print_html_to_pdf(table_page_html(tables), path).read_bytes()


def test_pdf_tables_are_read_cell_for_cell_under_their_headers(
    printed_tables: tuple[list[KnownTable], bytes],
) -> None:
    tables, pdf = printed_tables
    document = parse_document(pdf, "figures.pdf")
    assert cell_accuracy(tables, all_text(document)) == {"cells": 349, "correct": 349}
    income = section_containing(document, "| July 1, 2023 |")
    assert "Condensed income statement (USD millions)\n| Quarter ended | Revenue |" in income.text


def test_a_pdf_table_going_on_over_a_page_without_its_header_gets_it_again(
    tmp_path: Path,
) -> None:
    tables = [price_list(60)]
    # Printed without the header row repeated at the top of each page.
    page = table_page_html(tables).replace("</style>", "thead{display:table-row-group}</style>")
    document = parse_file(print_html_to_pdf(page, tmp_path / "prices.pdf"))
    second_page = [section for section in document.sections if section.page == 2]
    assert second_page[0].text.startswith("| Item | Model | Unit price (EUR) |")
    assert cell_accuracy(tables, all_text(document)) == {"cells": 305, "correct": 305}


def test_pdf_tables_can_be_left_as_words(printed_tables: tuple[list[KnownTable], bytes]) -> None:
    _, pdf = printed_tables
    document = parse_document(pdf, "figures.pdf", limits=ParseLimits(pdf_tables=False))
    text = all_text(document)
    assert "|---|" not in text
    assert "July 1, 2023 1,301.8" in text


def test_a_form_of_labelled_fields_is_read_as_its_lines_not_as_a_table() -> None:
    page = (
        b"<html><body><table>"
        b"<tr><td>Aircraft Make:</td><td>Piper</td><td>Registration:</td><td>N4396T</td></tr>"
        b"<tr><td>Model/Series:</td><td>PA-28-140</td><td>Seats:</td><td>4</td></tr>"
        b"</table></body></html>"
    )
    document = parse_document(page, "report.html")
    assert document.sections[0].text.splitlines() == [
        "Aircraft Make: Piper Registration: N4396T",
        "Model/Series: PA-28-140 Seats: 4",
    ]


def test_markdown_keeps_inline_code_code_blocks_lists_and_tables() -> None:
    document = parse_document(
        b"# Deploy\n\nRun `make deploy ENV=prod` (or ``a `tick` ``) after tests.\n\n"
        b"3. Tag\n4. Ship\n\n- one\n- two\n\n"
        b"| Env | Command |\n| --- | --- |\n| prod | `make deploy` |\n\n"
        b"```sh\nmake deploy ENV=prod\n```\n",
        "deploy.md",
    )

    (section,) = document.sections
    assert section.text == (
        "Run `make deploy ENV=prod` (or ``a `tick` ``) after tests.\n\n"
        "3. Tag\n4. Ship\n\n- one\n- two\n\n"
        "| Env | Command |\n| --- | --- |\n| prod | `make deploy` |\n\n"
        "    make deploy ENV=prod"
    )
