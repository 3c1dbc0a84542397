"""Bench files: registered under `rayrag bench files`; its generated PDFs parse with their
pages and planted sentence, and its HTML figure is computed from the real extraction (the
whole bench runs three ingests: run by hand, figures in docs/DECISIONS.md)."""

from __future__ import annotations

from rayrag.bench import BENCHES, files
from rayrag.data.files.parse import parse_file


def test_registered() -> None:
    assert BENCHES["files"] == "rayrag.bench.files"


def test_generated_pdf_pages_and_planted_sentence() -> None:
    parsed = parse_file("r.pdf", files.bench_pdf(4, seed=0, planted=True))
    assert [s.page for s in parsed.layout] == [1, 2, 3, 4]
    page3 = parsed.layout[2]
    assert files.PLANTED in parsed.text[page3.start : page3.end]
    assert parsed.title == "Harbour Report 0"


def test_html_figures_come_from_the_extraction() -> None:
    figures = files._html_figures()
    assert figures["visible_chars"] > figures["extracted_chars"] > 0
    assert 0 < figures["removed_share_of_visible"] < 1
    assert figures["boilerplate_removed"] == 1.0 and figures["article_kept"] == 1.0
