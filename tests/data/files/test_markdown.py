"""Markdown: `#` headings (not inside code fences) become "Part > Section" paths; text files
are one span; bad UTF-8 names its byte offset."""

from __future__ import annotations

import pytest

from rayrag.data.files.markdown import parse_markdown, parse_text
from rayrag.data.files.parsed import FileRejected

DOC = b"""# Guide
Intro.
## Install
Steps.
```
# not a heading
```
### Linux
Apt.
## Use
Run it.
"""


def test_nested_headings_become_paths() -> None:
    parsed = parse_markdown(DOC)
    assert parsed.title == "Guide" and parsed.text == DOC.decode().strip()
    assert [s.section for s in parsed.layout] == [
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Use",
    ]
    install = parsed.layout[1]
    assert "# not a heading" in parsed.text[install.start : install.end]
    assert parsed.layout[-1].end == len(parsed.text)


def test_text_is_one_span_and_bad_bytes_are_located() -> None:
    parsed = parse_text(b"  plain words\n")
    assert parsed.text == "plain words" and parsed.layout == ()
    with pytest.raises(FileRejected) as info:
        parse_text(b"ok\n\xff")
    assert info.value.reason == "file is not valid UTF-8" and info.value.byte_offset == 3
