"""Listing a root: local folders through pyarrow, hidden folders skipped, rule files kept,
URIs other than s3:// refused in one line."""

from __future__ import annotations

import pytest

from rayrag.data.files.listing import is_uri, list_files, open_root
from rayrag.errors import DataError


def test_lists_files_with_sizes_skipping_hidden(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "x.md").write_text("hello")
    (tmp_path / "a" / ".rayrag.json").write_text("{}")
    (tmp_path / ".git" / "y.md").write_text("no")
    (tmp_path / ".hidden.md").write_text("no")
    fs, base = open_root(tmp_path)
    listed = list_files(fs, base)
    assert [(f.rel, f.size) for f in listed] == [("a/.rayrag.json", 2), ("a/x.md", 5)]
    assert listed[1].updated_at.endswith("Z")


def test_bad_roots_are_one_line() -> None:
    assert is_uri("s3://b/p") and not is_uri("folder")
    with pytest.raises(DataError, match="unsupported corpus URI scheme 'ftp'"):
        open_root("ftp://host/x")
    with pytest.raises(DataError, match="needs a bucket"):
        open_root("s3:///x")


def test_missing_folder(tmp_path) -> None:
    fs, base = open_root(tmp_path / "nope")
    with pytest.raises(DataError, match="corpus folder not found"):
        list_files(fs, base)
