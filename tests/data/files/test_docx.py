"""DOCX parsing on real python-docx files: headings to section paths, tables as " | " rows in
document order; zip bombs (declared, by ratio, or lying about their size) rejected first."""

from __future__ import annotations

import io
import zipfile

import pytest

from rayrag.data.files.docx import check_zip, parse_docx
from rayrag.data.files.parsed import FileRejected, ParseLimits
from tests.data.files.makers import make_docx, zip_bomb_docx


def test_headings_and_table_in_document_order() -> None:
    parsed = parse_docx(make_docx())
    assert parsed.title == "Pump Maintenance"
    sections = {s.section: parsed.text[s.start : s.end] for s in parsed.layout}
    checks = sections["Safety > Checks"]
    assert "Seal | 6 months | Fitter" in checks
    assert checks.index("cavitation") < checks.index("Part | Interval | Owner")
    assert "plant register" in sections["Records"] and "Isolate" in sections["Safety"]
    assert parsed.layout[-1].end == len(parsed.text)


def test_zip_bomb_is_rejected_by_its_ratio() -> None:
    with pytest.raises(FileRejected, match=r"zip bomb: a member is compressed \d+:1"):
        parse_docx(zip_bomb_docx())


def test_zip_bomb_is_rejected_by_declared_size() -> None:
    limits = ParseLimits(max_uncompressed_bytes=1_000_000, max_compression_ratio=10_000)
    with pytest.raises(FileRejected, match="declare more than max_uncompressed_bytes=1000000"):
        parse_docx(zip_bomb_docx(2_000_000), limits)


def test_member_lying_about_its_size_is_caught_while_reading() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("word/document.xml", b"x" * 5000)
    data = bytearray(out.getvalue())
    # Shrink the declared size in the central directory (and the local header) to 10 bytes.
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = data.index(signature)
        data[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    with pytest.raises(FileRejected, match="zip bomb|corrupt DOCX"):
        check_zip(bytes(data), ParseLimits())


def test_not_a_zip() -> None:
    with pytest.raises(FileRejected, match="corrupt DOCX"):
        parse_docx(b"PK\x03\x04 but nothing else")
