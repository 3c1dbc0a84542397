"""HTML parsing: the article's text and headings, without navigation, cookie banner, header
or footer; the page's title."""

from __future__ import annotations

import pytest

from rayrag.data.files.html import parse_html
from rayrag.data.files.parsed import FileRejected
from tests.data.files.makers import BOILERPLATE, make_html, visible_text


def test_main_text_and_headings_without_boilerplate() -> None:
    page = make_html()
    parsed = parse_html(page.encode())
    assert parsed.title == "Ferry Timetable Guide"
    assert "forty minutes" in parsed.text and "force eight" in parsed.text
    for junk in BOILERPLATE:
        assert junk not in parsed.text
    sections = [s.section for s in parsed.layout]
    assert "Ferry Timetable Guide > Winter Service > Storm Days" in sections
    storm = next(s for s in parsed.layout if s.section.endswith("Storm Days"))
    assert "force eight" in parsed.text[storm.start : storm.end]
    # Less text than the page shows: the boilerplate is gone (share measured in DECISIONS.md).
    assert len(parsed.text) < len(visible_text(page))


def test_page_without_main_text() -> None:
    with pytest.raises(FileRejected, match="no main text"):
        parse_html(b"<html><head><title>Empty</title></head><body><div></div></body></html>")
