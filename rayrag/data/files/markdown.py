"""Markdown and plain text: `#` headings (outside fenced code) become section paths
("Part > Section"); a .txt file is one span. The text is the file's own text, stripped, so a
folder of .md/.txt gives the same documents it always did."""

from __future__ import annotations

import re

from rayrag.data.files.parsed import (
    FileRejected,
    LayoutBuilder,
    ParsedFile,
    push_heading,
    section_path,
)

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def decode_text(data: bytes) -> str:
    """UTF-8 text of a file, or `FileRejected` at the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected("file is not valid UTF-8", byte_offset=exc.start) from None


def markdown_title(text: str) -> str | None:
    """The first level-1 `# Heading` of the text, as the folder reader always named a .md."""
    for line in text.splitlines():
        if line.startswith("# ") and line[2:].strip():
            return line[2:].strip()
    return None


def parse_markdown_text(text: str, kind: str = "markdown") -> ParsedFile:
    """Markdown text -> spans per heading: each heading line opens its section."""
    builder = LayoutBuilder()
    stack: list[tuple[int, str]] = []
    in_fence = False
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\r\n")
        if _FENCE.match(stripped):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(stripped)
        if match:
            push_heading(stack, len(match.group(1)), match.group(2))
        builder.add(line, section_path(stack))
    clean, layout = builder.build()
    if not clean:
        raise FileRejected("file is empty")
    return ParsedFile(markdown_title(clean), clean, layout, kind)


def parse_markdown(data: bytes) -> ParsedFile:
    """A .md file's bytes -> its text with a section per heading."""
    return parse_markdown_text(decode_text(data))


def parse_text(data: bytes) -> ParsedFile:
    """A .txt file's bytes -> its stripped text as one span (titled by a `# ` line if any)."""
    text = decode_text(data).strip()
    if not text:
        raise FileRejected("file is empty")
    return ParsedFile(markdown_title(text), text, (), "text")
