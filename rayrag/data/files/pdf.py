"""PDF files via pypdf: the text of each page, headings as section paths and the page of
every span.

Headings come from the PDF's outline (bookmarks) when it has one: each entry opens its
section where its title appears on its page (or at the top of the page). Without an outline
a line set in a font `heading_font_ratio` times larger than the body text is a heading, its
level by its size among the heading sizes. A PDF without a text layer (scanned images) is
rejected: OCR is not supported.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

from rayrag.data.files.parsed import (
    FileRejected,
    LayoutBuilder,
    ParsedFile,
    ParseLimits,
    push_heading,
    section_path,
)

_PAGE_BREAK = "\n\n"
_PLACEHOLDERS = frozenset({"untitled", "(anonymous)", "anonymous", "no title"})


def parse_pdf(data: bytes, limits: ParseLimits | None = None) -> ParsedFile:
    """A PDF's bytes -> its text with a span per (section, page); `FileRejected` when it is
    encrypted, truncated, corrupt, too long or has no text layer."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    limits = limits or ParseLimits()
    if b"%%EOF" not in data[-4096:]:
        raise FileRejected("truncated PDF (no end-of-file marker)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise FileRejected("encrypted PDF (a password is needed to read it)")
        n_pages = len(reader.pages)
    except FileRejected:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError, NotImplementedError):
        raise FileRejected("corrupt PDF (cannot be parsed)") from None
    if n_pages == 0:
        raise FileRejected("PDF has no pages")
    if n_pages > limits.max_pages:
        raise FileRejected(f"PDF has {n_pages} pages, more than max_pages={limits.max_pages}")
    outline = _outline(reader)
    pages: list[tuple[str, list[tuple[float, str]]]] = []
    for number, page in enumerate(reader.pages, 1):
        pieces: list[tuple[float, str]] = []
        try:
            text = page.extract_text(visitor_text=_visitor(pieces)) or ""
        except Exception:  # noqa: BLE001 - a broken content stream: name the page only
            raise FileRejected(f"corrupt PDF (page {number} cannot be read)") from None
        pages.append((text.strip(), pieces))
    if not any(text for text, _ in pages):
        raise FileRejected("no text layer; OCR is not supported")
    headings = outline if outline else _font_headings(pages, limits.heading_font_ratio)
    builder = LayoutBuilder()
    stack: list[tuple[int, str]] = []
    for index, (text, _) in enumerate(pages):
        cursor = 0
        for level, name in headings.get(index, []):
            found = text.find(name, cursor) if name else -1
            at = found if found >= 0 else cursor
            builder.add(text[cursor:at], section_path(stack), index + 1)
            push_heading(stack, level, name)
            cursor = at
        tail = text[cursor:] + (_PAGE_BREAK if index + 1 < len(pages) and text else "")
        builder.add(tail, section_path(stack), index + 1)
    clean, layout = builder.build()
    return ParsedFile(_title(reader, headings), clean, layout, "pdf")


def _visitor(pieces: list[tuple[float, str]]) -> Any:
    """pypdf's `visitor_text` callback: record each text run with its rendered font size."""

    def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
        if text and text.strip():
            scale = abs(tm[3] * cm[3]) or 1.0
            pieces.append((round(float(size) * scale, 1), text))

    return visit


def _outline(reader: Any) -> dict[int, list[tuple[int, str]]]:
    """Page index -> [(level, title)] of the outline's entries, in outline order."""
    found: dict[int, list[tuple[int, str]]] = {}

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
                title = str(item.title or "").strip()
            except Exception:  # noqa: BLE001 - a dangling bookmark is skipped, not fatal
                continue
            if page is not None and page >= 0 and title:
                found.setdefault(page, []).append((level, title))

    try:
        walk(reader.outline, 1)
    except Exception:  # noqa: BLE001 - an unreadable outline: fall back to font sizes
        return {}
    return found


def _font_headings(
    pages: list[tuple[str, list[tuple[float, str]]]], ratio: float
) -> dict[int, list[tuple[int, str]]]:
    """Page index -> [(level, heading)] of runs set `ratio` times larger than the body size
    (the size most characters are set in); consecutive large runs of one size join."""
    weight: Counter[float] = Counter()
    for _, pieces in pages:
        for size, text in pieces:
            weight[size] += len(text.strip())
    if not weight:
        return {}
    body = weight.most_common(1)[0][0]
    sizes = sorted({s for s in weight if s >= body * ratio}, reverse=True)
    level_of = {size: i + 1 for i, size in enumerate(sizes)}
    found: dict[int, list[tuple[int, str]]] = {}
    for index, (_, pieces) in enumerate(pages):
        current: list[str] = []
        current_size = 0.0
        for size, text in [*pieces, (0.0, "")]:
            if size in level_of and (not current or size == current_size):
                current.append(text.strip())
                current_size = size
                continue
            if current:
                found.setdefault(index, []).append((level_of[current_size], " ".join(current)))
                current = []
            if size in level_of:
                current, current_size = [text.strip()], size
    return found


def _title(reader: Any, headings: dict[int, list[tuple[int, str]]]) -> str | None:
    """The document information's title, else the first top-level heading."""
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # noqa: BLE001 - a broken info dictionary is no reason to drop the file
        title = None
    # Writers stamp placeholders ("untitled", reportlab's default) when none was set.
    if title and str(title).strip() and str(title).strip().lower() not in _PLACEHOLDERS:
        return str(title).strip()
    for page in sorted(headings):
        for level, name in headings[page]:
            if level == 1:
                return name
    return None
