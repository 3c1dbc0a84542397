"""atomic: a failed write leaves the previous file intact and no temp file behind."""

from __future__ import annotations

import pytest

from rayrag.atomic import atomic_path, atomic_text


def test_text_write_replaces(tmp_path):
    target = tmp_path / "sub" / "file.json"
    with atomic_text(target) as handle:
        handle.write("one")
    with atomic_text(target) as handle:
        handle.write("two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["file.json"]


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "index.faiss"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.faiss"]


def test_swap_dir_into_place_replaces_and_leaves_no_copies(tmp_path):
    from rayrag.atomic import swap_dir_into_place

    out, tmp = tmp_path / "out", tmp_path / ".out.tmp"
    for directory, text in ((out, "old"), (tmp, "new")):
        directory.mkdir()
        (directory / "file.txt").write_text(text)
    swap_dir_into_place(tmp, out)
    assert (out / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # old copy deleted, tmp consumed
