"""Dispatch by sniffed content: the bytes decide the parser, an extension that promises
something else is rejected, unsupported types are named."""

from __future__ import annotations

import pytest

from rayrag.data.files.parse import parse_file, sniff
from rayrag.data.files.parsed import FileRejected
from tests.data.files.makers import make_docx, make_html, make_pdf


def test_sniff_kinds() -> None:
    assert sniff(make_pdf()) == "pdf"
    assert sniff(make_docx()) == "docx"
    assert sniff(make_html().encode()) == "html"
    assert sniff(b"# title\ntext") == "text"
    assert sniff(b"  \n") == "empty"
    assert sniff(bytes(range(256)) * 4) == "binary"


@pytest.mark.parametrize(
    "name, data, reason",
    [
        ("report.pdf", make_docx(), "extension .pdf does not match the content (a Word document)"),
        (
            "page.html",
            bytes(range(256)) * 4,
            "extension .html does not match the content (binary data)",
        ),
        ("notes.docx", make_pdf(), "extension .docx does not match the content (a PDF)"),
        ("slides.pptx", b"PK\x03\x04", "unsupported file type .pptx"),
        ("empty.md", b"", "file is empty"),
    ],
)
def test_rejections(name: str, data: bytes, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        parse_file(name, data)
    assert info.value.reason == reason


def test_dispatch_by_content() -> None:
    assert parse_file("a.pdf", make_pdf()).kind == "pdf"
    assert parse_file("a.htm", make_html().encode()).kind == "html"
    assert parse_file("a.md", b"# T\nx").kind == "markdown"
    assert parse_file("a.txt", b"x").kind == "text"
