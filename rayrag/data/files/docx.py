"""Word (.docx) files via python-docx: paragraphs in document order, "Heading N" styles as
section paths, tables as text rows (cells joined with " | ").

A .docx is a zip archive, so before python-docx opens it every member is checked: its
declared size, the total declared size, its compression ratio, and then the bytes it really
inflates to (a member may lie about its size) — a zip bomb is rejected before it is parsed.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from rayrag.data.files.parsed import (
    FileRejected,
    LayoutBuilder,
    ParsedFile,
    ParseLimits,
    push_heading,
    section_path,
)

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_RATIO_FLOOR = 1 << 20  # members under 1 MiB cannot be a bomb, however well they compress
_BLOCK = 1 << 16


def check_zip(data: bytes, limits: ParseLimits) -> None:
    """Reject an archive that is corrupt or inflates beyond the limits (declared or real)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise FileRejected("corrupt DOCX (not a readable zip archive)") from None
    cap = limits.max_uncompressed_bytes
    declared = 0
    for info in members:
        declared += info.file_size
        ratio = info.file_size / max(info.compress_size, 1)
        if declared > cap:
            raise FileRejected(f"zip bomb: members declare more than max_uncompressed_bytes={cap}")
        if info.file_size >= _RATIO_FLOOR and ratio > limits.max_compression_ratio:
            raise FileRejected(
                f"zip bomb: a member is compressed {ratio:.0f}:1, more than "
                f"max_compression_ratio={limits.max_compression_ratio:g}"
            )
    total = 0
    try:
        for info in members:
            seen = 0
            with archive.open(info) as member:
                while block := member.read(_BLOCK):
                    seen += len(block)
                    total += len(block)
                    if seen > info.file_size or total > cap:
                        raise FileRejected("zip bomb: a member inflates beyond its declared size")
    except FileRejected:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError):
        raise FileRejected("corrupt DOCX (a zip member cannot be read)") from None


def parse_docx(data: bytes, limits: ParseLimits | None = None) -> ParsedFile:
    """A .docx's bytes -> its text with a section per heading; tables as " | " rows."""
    import docx

    limits = limits or ParseLimits()
    check_zip(data, limits)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
    except Exception:  # noqa: BLE001 - python-docx/lxml errors may quote the XML
        raise FileRejected("corrupt DOCX (the document cannot be parsed)") from None
    builder = LayoutBuilder()
    stack: list[tuple[int, str]] = []
    title: str | None = None
    for block in blocks:
        if hasattr(block, "rows"):
            text = _table_text(block)
        else:
            text = block.text.strip()
            style = _style_name(block)
            match = _HEADING_STYLE.match(style)
            if style.lower() == "title" and text and title is None:
                title = text
            elif match and text:
                push_heading(stack, int(match.group(1)), text)
        if text:
            builder.add(text + "\n\n", section_path(stack))
    clean, layout = builder.build()
    if not clean:
        raise FileRejected("no text in the document")
    core = document.core_properties.title
    return ParsedFile((core or "").strip() or title, clean, layout, "docx")


def _style_name(paragraph: Any) -> str:
    try:
        return str(paragraph.style.name or "") if paragraph.style is not None else ""
    except (KeyError, ValueError, AttributeError):
        return ""


def _table_text(table: Any) -> str:
    rows = []
    for row in table.rows:
        cells = [" ".join(cell.text.split()) for cell in row.cells]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
