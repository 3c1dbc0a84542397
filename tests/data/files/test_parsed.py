"""LayoutBuilder: spans always partition the stripped text; equal neighbours merge."""

from __future__ import annotations

from rayrag.data.files.parsed import LayoutBuilder, push_heading, section_path
from rayrag.types import Span


def test_spans_partition_the_stripped_text() -> None:
    builder = LayoutBuilder()
    builder.add("\n\n  Intro ", None, 1)
    builder.add("more ", None, 1)
    builder.add("Part A text\n", "A", 1)
    builder.add("", "B", 2)  # nothing: no span
    builder.add("Page two.\n\n", "A", 2)
    text, spans = builder.build()
    assert text == "Intro more Part A text\nPage two."
    assert spans == (
        Span(0, 11, None, 1),
        Span(11, 23, "A", 1),
        Span(23, len(text), "A", 2),
    )


def test_heading_stack() -> None:
    stack: list[tuple[int, str]] = []
    push_heading(stack, 1, "Part")
    push_heading(stack, 2, "Section  one")
    push_heading(stack, 3, "Deep")
    push_heading(stack, 2, "Section two")
    assert section_path(stack) == "Part > Section two" and section_path([]) is None
