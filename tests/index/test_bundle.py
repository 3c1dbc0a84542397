"""IndexBundle writes are atomic: a failed or killed write never leaves a half bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from rayrag.errors import BundleError
from rayrag.index import bundle as b


def _writers(marker: str, fail_on: str | None = None):
    def make(name):
        def write(path):
            if name == fail_on:
                raise RuntimeError("disk full")
            path.write_text(marker)

        return write

    return {name: make(name) for name in b.REQUIRED_FILES if name != b.MANIFEST}


def _manifest(marker: str) -> dict:
    return {"format_version": b.FORMAT_VERSION, "bundle_id": marker, "counts": {}}


def test_write_then_replace(tmp_path):
    out = tmp_path / "bundle"
    b.write_bundle(out, _writers("one"), _manifest("one"))
    assert b.IndexBundle.load(out).bundle_id == "one"
    b.write_bundle(out, _writers("two"), _manifest("two"))
    assert b.IndexBundle.load(out).bundle_id == "two"
    assert (out / b.CHUNKS).read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no temp or old dirs


def test_failed_write_keeps_previous_bundle(tmp_path):
    out = tmp_path / "bundle"
    b.write_bundle(out, _writers("one"), _manifest("one"))
    with pytest.raises(RuntimeError):
        b.write_bundle(out, _writers("two", fail_on=b.GRAPH), _manifest("two"))
    assert b.IndexBundle.load(out).bundle_id == "one"
    assert (out / b.VECTORS).read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_killed_write_leaves_previous_intact_and_is_swept(tmp_path):
    out = tmp_path / "bundle"
    b.write_bundle(out, _writers("one"), _manifest("one"))
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from rayrag.index import bundle as b
        def die(path):
            path.write_text("partial")
            os._exit(9)   # like SIGKILL mid-write: no cleanup runs
        writers = {{name: (lambda p: p.write_text("x"))
                    for name in b.REQUIRED_FILES if name != b.MANIFEST}}
        writers[b.GRAPH] = die
        b.write_bundle(Path({str(out)!r}), writers, {{"format_version": 1, "bundle_id": "two"}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == 9
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.tmp-")]
    assert len(leftovers) == 1
    assert b.IndexBundle.load(out).bundle_id == "one"
    b.write_bundle(out, _writers("three"), _manifest("three"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_refuses_to_replace_a_non_bundle(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(BundleError, match="not an index bundle"):
        b.write_bundle(out, _writers("x"), _manifest("x"))
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_load_errors(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        b.IndexBundle.load(tmp_path / "missing")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / b.MANIFEST).write_text("{}")
    with pytest.raises(BundleError, match="missing"):
        b.IndexBundle.load(incomplete)
    out = tmp_path / "bundle"
    b.write_bundle(out, _writers("one"), _manifest("one"))
    (out / b.MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="corrupt bundle manifest"):
        b.IndexBundle.load(out)
    (out / b.MANIFEST).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(BundleError, match="format_version 99"):
        b.IndexBundle.load(out)
