"""Office Open XML: Word (DOCX), PowerPoint (PPTX) and Excel (XLSX), all ZIP archives inside.

Each parser first refuses a possible zip bomb by the sizes the archive declares.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from typing import Any

from ingestion.parsing.document import FormatParts, ParseError, ParseLimits, Section
from ingestion.parsing.sections import SectionBuilder, collapse_spaces, table_row_text
from ingestion.parsing.tables import is_table, table_text
from ingestion.titles import best_title

# Archives smaller than this cannot hurt however well they compress, and tiny Office
# files routinely reach high ratios.
_RATIO_CHECK_FLOOR_BYTES = 8 * 1024 * 1024
_DOCX_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)


def _human_size(size: float) -> str:
    units = ("bytes", "KB", "MB", "GB")
    unit = 0
    while size >= 1024 and unit < len(units) - 1:
        size /= 1024
        unit += 1
    return f"{size:.0f} {units[unit]}"


def _refuse_zip_bomb(data: bytes, limits: ParseLimits) -> None:
    """Refuse archives by their declared sizes, before anything is decompressed.

    Python's zipfile stops reading a member at its declared size, so declared sizes bound
    what the Office parsers can unpack.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    refusal = "it was refused as a possible zip bomb."
    if len(members) > limits.max_zip_members:
        raise ParseError(f"The file contains more than {limits.max_zip_members} parts; {refusal}")
    unpacked = sum(member.file_size for member in members)
    if unpacked > limits.max_uncompressed_bytes:
        raise ParseError(
            f"The file expands to more than {_human_size(limits.max_uncompressed_bytes)} when "
            f"unpacked; {refusal}"
        )
    packed = max(1, sum(member.compress_size for member in members))
    ratio = unpacked / packed
    if unpacked > _RATIO_CHECK_FLOOR_BYTES and ratio > limits.max_compression_ratio:
        raise ParseError(
            f"The file expands to {_human_size(unpacked)} when unpacked, {ratio:.0f} times its "
            f"packed size; {refusal}"
        )


# --- DOCX --------------------------------------------------------------------------------


def parse_docx(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    _refuse_zip_bomb(data, limits)
    import docx
    from docx.table import Table

    document = docx.Document(io.BytesIO(data))
    style_names, default_style_name = _docx_paragraph_style_names(document)
    builder = SectionBuilder()
    title_paragraph = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            _add_table(builder, [[cell.text for cell in row.cells] for row in item.rows])
            continue
        style_name = style_names.get(item._p.style, default_style_name)
        if heading := _DOCX_HEADING_STYLE.fullmatch(style_name):
            builder.heading(int(heading.group(1)), item.text)
        elif style_name.casefold() == "title" and not title_paragraph:
            title_paragraph = collapse_spaces(item.text)
        else:
            builder.block(item.text)
    builder.flush()
    title = best_title(
        [document.core_properties.title, title_paragraph, builder.first_h1 or ""], stem=stem
    )
    return FormatParts(title, builder.sections)


def _add_table(builder: SectionBuilder, rows: list[list[str]]) -> None:
    """A table as Markdown; a one-row or one-column "table" (layout) as lines of text."""
    if is_table(rows):
        builder.preformatted(table_text(rows))
        return
    builder.end_block(paragraph=True)
    for row in rows:
        builder.block(table_row_text(row), paragraph=False)
    builder.end_block(paragraph=True)


def _docx_paragraph_style_names(document: Any) -> tuple[dict[str | None, str], str]:
    """Map paragraph style ids to names once, and name the default paragraph style.

    `Paragraph.style` looks the default style up by walking every style of the document, for
    each paragraph without a style of its own: minutes for a long document.
    """
    from docx.enum.style import WD_STYLE_TYPE

    names = {
        style.style_id: style.name or ""
        for style in document.styles
        if style.type == WD_STYLE_TYPE.PARAGRAPH and style.style_id is not None
    }
    default = document.styles.default(WD_STYLE_TYPE.PARAGRAPH)
    return names, (default.name or "") if default is not None else ""


# --- PPTX --------------------------------------------------------------------------------


def parse_pptx(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    _refuse_zip_bomb(data, limits)
    import pptx

    presentation = pptx.Presentation(io.BytesIO(data))
    slide_count = len(presentation.slides)
    if slide_count > limits.max_pages:
        raise ParseError(
            f"The presentation has {slide_count} slides; at most {limits.max_pages} are accepted."
        )
    sections: list[Section] = []
    first_slide_title = ""
    for number, slide in enumerate(presentation.slides, start=1):
        builder = SectionBuilder(page=number)
        title_shape = slide.shapes.title
        slide_title = (
            collapse_spaces(title_shape.text_frame.text) if title_shape is not None else ""
        )
        if slide_title:
            builder.heading(1, slide_title)
            first_slide_title = first_slide_title or slide_title
        for shape in _iter_shapes(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            if shape.has_text_frame:
                for paragraph in shape.text_frame.paragraphs:
                    builder.block(paragraph.text, paragraph=False)
                builder.end_block(paragraph=True)
            elif shape.has_table:
                _add_table(builder, [[cell.text for cell in row.cells] for row in shape.table.rows])
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            builder.preformatted(slide.notes_slide.notes_text_frame.text)
        builder.flush()
        if not builder.sections and slide_title:
            # A slide that is only a title still says something worth finding.
            builder.sections.append(
                Section(text=slide_title, page=number, heading_path=(slide_title,))
            )
        sections.extend(builder.sections)
    title = best_title([presentation.core_properties.title, first_slide_title], stem=stem)
    return FormatParts(title, sections)


def _iter_shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    for shape in shapes:
        if hasattr(shape, "shapes"):
            yield from _iter_shapes(shape.shapes)
        else:
            yield shape


# --- XLSX --------------------------------------------------------------------------------


def parse_xlsx(data: bytes, stem: str, limits: ParseLimits) -> FormatParts:
    _refuse_zip_bomb(data, limits)
    import openpyxl

    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sections: list[Section] = []
        rows_left = limits.max_sheet_rows
        for sheet in workbook.worksheets:
            rows: list[list[str]] = []
            for row in sheet.iter_rows(values_only=True):
                if rows_left <= 0:
                    break
                cells = [_cell_text(value) for value in row]
                if any(cells):
                    rows.append(cells)
                    rows_left -= 1
            if rows:
                # A sheet is a table whose first row with values is its header.
                text = (
                    table_text(rows)
                    if is_table(rows)
                    else "\n".join("\t".join(row).strip() for row in rows)
                )
                sections.append(Section(text=text, page=None, heading_path=(sheet.title,)))
        title = best_title([workbook.properties.title or ""], stem=stem)
    finally:
        workbook.close()
    return FormatParts(title, sections)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return collapse_spaces(str(value))
