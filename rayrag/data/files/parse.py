"""Which parser reads a file: by its sniffed content, checked against its extension.

The bytes decide (a PDF starts with `%PDF-`, a DOCX is a zip holding `word/document.xml`,
HTML is text with an `<html>`/`<body>`-like tag early on, text is UTF-8 without NUL bytes);
an extension that promises something else (a .pdf that is a zip, an .html that is binary)
is rejected, as is a known but unsupported type (.pptx, images, ...).

    >>> parse_file("guide.pdf", data, ParseLimits()).layout[0].page
    1
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import PurePosixPath

from rayrag.data.files.docx import parse_docx
from rayrag.data.files.html import parse_html
from rayrag.data.files.markdown import parse_markdown, parse_text
from rayrag.data.files.parsed import FileRejected, ParsedFile, ParseLimits
from rayrag.data.files.pdf import parse_pdf

# Extension -> the content kinds it may hold.
SUPPORTED = {
    ".pdf": {"pdf"},
    ".docx": {"docx"},
    ".html": {"html", "text"},
    ".htm": {"html", "text"},
    ".md": {"text", "html"},
    ".markdown": {"text", "html"},
    ".txt": {"text", "html"},
}
# Document and image types people drop into folders that rayrag does not read: quarantined
# with a reason, so nobody wonders where they went (other files, e.g. .json, are ignored).
UNSUPPORTED = frozenset(
    ".doc .docm .dot .rtf .odt .ods .odp .pptx .ppt .xlsx .xls .epub .pages .key .numbers "
    ".png .jpg .jpeg .gif .tif .tiff .bmp .webp .heic .svg .zip .gz .tar .7z .rar".split()
)
_HTML_TAG = re.compile(rb"<\s*(!doctype\s+html|html|head|body|article|main|div|p)[\s>]", re.I)


def suffix(name: str) -> str:
    return PurePosixPath(name).suffix.lower()


def sniff(data: bytes) -> str:
    """The content kind of `data`: pdf, docx, zip, html, text, binary or empty."""
    if not data.strip():
        return "empty"
    if data[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError):
            return "zip"
        return "docx" if "word/document.xml" in names else "zip"
    head = data[:4096]
    if b"\x00" in head:
        return "binary"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the 4 KiB window is still text.
        if exc.start < len(head) - 3:
            return "binary" if _mostly_binary(head) else "text"
    return "html" if _HTML_TAG.search(head) else "text"


def _mostly_binary(head: bytes) -> bool:
    controls = sum(1 for b in head if b < 9 or 13 < b < 32)
    return controls > len(head) // 20


def parse_file(name: str, data: bytes, limits: ParseLimits | None = None) -> ParsedFile:
    """Parse one file by its content; `FileRejected` (one line, no content) when it cannot
    be a document."""
    limits = limits or ParseLimits()
    ext = suffix(name)
    if ext in UNSUPPORTED:
        raise FileRejected(f"unsupported file type {ext}")
    expected = SUPPORTED.get(ext)
    if expected is None:
        raise FileRejected(f"unsupported file type {ext or '(no extension)'}")
    kind = sniff(data)
    if kind == "empty":
        raise FileRejected("file is empty")
    if kind not in expected:
        # Text that is not UTF-8 in a text file is named as such (the reader's old reason).
        if "text" in expected and kind == "binary" and ext in (".md", ".markdown", ".txt"):
            parse_text(data)  # raises "file is not valid UTF-8" with its offset
        raise FileRejected(f"extension {ext} does not match the content ({_NAMES[kind]})")
    if kind == "pdf":
        return parse_pdf(data, limits)
    if kind == "docx":
        return parse_docx(data, limits)
    if ext in (".html", ".htm"):
        return parse_html(data)
    if ext == ".txt":
        return parse_text(data)
    return parse_markdown(data)


_NAMES = {
    "pdf": "a PDF",
    "docx": "a Word document",
    "zip": "a zip archive",
    "html": "HTML",
    "text": "text",
    "binary": "binary data",
}
