"""What every file parser returns (`ParsedFile`), the one-line rejection they raise
(`FileRejected`), the limits they obey (`ParseLimits`) and `LayoutBuilder`, which assembles
text and its spans so that the spans always partition the text."""

from __future__ import annotations

from dataclasses import dataclass

from rayrag.errors import DataError
from rayrag.types import Span


class FileRejected(DataError):
    """A file that cannot become a document. The reason is one line that says what is wrong
    and never quotes the file's content (it goes to the quarantine list, logs and MLflow).
    `byte_offset`: where in the file the problem is, when known (for a line number)."""

    def __init__(self, reason: str, byte_offset: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.byte_offset = byte_offset


@dataclass(frozen=True)
class ParseLimits:
    """The parsers' bounds (from `ingest.files`): plain values, so they travel to Ray workers."""

    max_pages: int = 2_000
    max_uncompressed_bytes: int = 200_000_000
    max_compression_ratio: float = 100.0
    heading_font_ratio: float = 1.2


@dataclass(frozen=True)
class ParsedFile:
    """A parsed file: its title (None when it has none), its text, spans partitioning the text
    (heading path and page of each stretch) and the format it was parsed as."""

    title: str | None
    text: str
    layout: tuple[Span, ...]
    kind: str


class LayoutBuilder:
    """Appends pieces of text, each with its section path and page; adjacent pieces with the
    same section and page become one span. `build()` strips the ends of the text and keeps the
    spans a partition of it (no gaps, no overlaps, none empty)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._spans: list[Span] = []
        self._length = 0

    def add(self, text: str, section: str | None = None, page: int | None = None) -> None:
        if not text:
            return
        start, end = self._length, self._length + len(text)
        last = self._spans[-1] if self._spans else None
        if last is not None and (last.section, last.page) == (section, page):
            self._spans[-1] = Span(last.start, end, section, page)
        else:
            self._spans.append(Span(start, end, section, page))
        self._parts.append(text)
        self._length = end

    def build(self) -> tuple[str, tuple[Span, ...]]:
        raw = "".join(self._parts)
        lead = len(raw) - len(raw.lstrip())
        text = raw.strip()
        spans: list[Span] = []
        for span in self._spans:
            start = min(max(span.start - lead, 0), len(text))
            end = min(max(span.end - lead, 0), len(text))
            if end > start:
                spans.append(Span(start, end, span.section, span.page))
        if spans:  # the stripped tail belonged to the last span: close the partition
            spans[0] = Span(0, spans[0].end, spans[0].section, spans[0].page)
            spans[-1] = Span(spans[-1].start, len(text), spans[-1].section, spans[-1].page)
        return text, tuple(spans)


def section_path(stack: list[tuple[int, str]]) -> str | None:
    """The heading path "Part > Section" of a stack of (level, heading) pairs."""
    names = [name for _, name in stack if name]
    return " > ".join(names) if names else None


def push_heading(stack: list[tuple[int, str]], level: int, name: str) -> None:
    """Enter heading `name` at `level`: headings at that level or deeper are closed first."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, " ".join(name.split())))
