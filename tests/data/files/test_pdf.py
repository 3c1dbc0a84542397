"""PDF parsing on real reportlab PDFs: pages and headings (outline or font sizes) become
spans; encrypted, truncated, image-only and over-long PDFs are rejected in one line."""

from __future__ import annotations

import pytest

from rayrag.data.files.parsed import FileRejected, ParseLimits
from rayrag.data.files.pdf import parse_pdf
from tests.data.files.makers import (
    PDF_PAGES,
    PLANTED,
    encrypted_pdf,
    image_only_pdf,
    make_pdf,
    truncated_pdf,
)


def _check_partition(parsed) -> None:
    assert parsed.layout[0].start == 0 and parsed.layout[-1].end == len(parsed.text)
    for a, b in zip(parsed.layout, parsed.layout[1:], strict=False):
        assert a.end == b.start


@pytest.mark.parametrize("outline", [True, False], ids=["outline", "font-sizes"])
def test_pages_and_headings_become_spans(outline: bool) -> None:
    parsed = parse_pdf(make_pdf(outline=outline))
    _check_partition(parsed)
    assert [(s.section, s.page) for s in parsed.layout] == [
        (heading, n) for n, (heading, _) in enumerate(PDF_PAGES, 1)
    ]
    page3 = next(s for s in parsed.layout if s.page == 3)
    assert PLANTED in parsed.text[page3.start : page3.end]
    assert parsed.kind == "pdf" and parsed.title == "Harbour Operations"


def test_heading_inside_a_page_opens_its_section_there() -> None:
    pages = [("Overview", ["First page text."]), ("Details", ["Second page text."])]
    pdf = make_pdf(pages, outline=False, title="Plant Guide")
    parsed = parse_pdf(pdf)
    assert parsed.title == "Plant Guide"
    second = parsed.layout[1]
    assert parsed.text[second.start :].startswith("Details")


@pytest.mark.parametrize(
    "data, reason",
    [
        (encrypted_pdf, "encrypted PDF (a password is needed to read it)"),
        (truncated_pdf, "truncated PDF (no end-of-file marker)"),
        (image_only_pdf, "no text layer; OCR is not supported"),
        (lambda: b"%PDF-1.4\ngarbage that is not a pdf\n%%EOF\n", "corrupt PDF (cannot be parsed)"),
    ],
    ids=["encrypted", "truncated", "image-only", "corrupt"],
)
def test_bad_pdfs_are_rejected_with_a_reason(data, reason: str) -> None:
    with pytest.raises(FileRejected) as info:
        parse_pdf(data())
    assert info.value.reason == reason


def test_too_many_pages() -> None:
    with pytest.raises(FileRejected, match="PDF has 4 pages, more than max_pages=3"):
        parse_pdf(make_pdf(), ParseLimits(max_pages=3))
