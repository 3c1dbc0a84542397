"""Tests for rayrag.data.readers: corpus/QA validation, quarantine, digests, atomic writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rayrag.data.readers import (
    QuarantinedRow,
    document_digest,
    read_corpus,
    read_qa,
    write_json_atomic,
    write_jsonl_atomic,
)
from rayrag.errors import DataError
from rayrag.types import Document

SECRET = "SECRET-TEXT-4711"  # planted in bad rows: no reason may ever echo it
GOOD = json.dumps({"id": "a", "text": "Alpha text."}).encode()


def _jsonl(tmp_path: Path, *lines: bytes, name: str = "corpus.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _row(**fields: object) -> bytes:
    return json.dumps(fields).encode()


# ---------------------------------------------------------------- valid input


def test_valid_rows_get_defaults_and_keep_fields(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path,
        GOOD,
        _row(
            id="b",
            title="Bee",
            text="Beta.",
            acl=["hr", "legal"],
            metadata={"k": 1, "f": None},
            updated_at="2024-01-02T03:04:05Z",
        ),
    )
    result = read_corpus(path)
    assert result.quarantined == []
    a, b = result.documents
    assert a == Document(id="a", text="Alpha text.")
    assert a.acl == ("public",) and a.metadata == {} and a.title is None
    assert (b.title, b.acl, b.metadata, b.updated_at) == (
        "Bee",
        ("hr", "legal"),
        {"k": 1, "f": None},
        "2024-01-02T03:04:05Z",
    )


def test_blank_lines_and_crlf_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\r\n   \n" + GOOD + b"\r\n\n" + _row(id="b", text="B") + b"\r\n")
    result = read_corpus(path)
    assert [d.id for d in result.documents] == ["a", "b"]
    assert result.quarantined == []


def test_source_digest_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, GOOD)
    digest = read_corpus(path).source_digest
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes() + b"\n" + _row(id="b", text="B"))
    assert read_corpus(path).source_digest != digest


# ---------------------------------------------------------------- bad rows

BAD_ROWS = [
    ("malformed", b'{"id": "x", "text": "' + SECRET.encode(), None, "malformed JSON"),
    ("not_object", json.dumps([SECRET]).encode(), None, "not a JSON object (got array)"),
    ("missing_text", _row(id="x", title=SECRET), "x", "missing 'text'"),
    ("empty_text", _row(id="x", text="   "), "x", "'text' is empty"),
    ("non_string_text", _row(id="x", text=5), "x", "'text' must be a string, got number"),
    ("missing_id", _row(text=SECRET), None, "missing 'id'"),
    ("non_string_id", _row(id=7, text=SECRET), None, "'id' must be a string, got number"),
    ("empty_id", _row(id=" ", text=SECRET), None, "'id' is empty"),
    (
        "non_utf8",
        b'{"id": "x", "text": "' + SECRET.encode() + b' \xff\xfe"}',
        None,
        "not valid UTF-8",
    ),
    ("acl_string", _row(id="x", text=SECRET, acl="public"), "x", "'acl' must be a non-empty list"),
    ("acl_empty", _row(id="x", text=SECRET, acl=[]), "x", "'acl' must be a non-empty list"),
    (
        "acl_non_string",
        _row(id="x", text=SECRET, acl=["hr", 3]),
        "x",
        "'acl' must be a non-empty list",
    ),
    ("metadata_list", _row(id="x", text=SECRET, metadata=[1]), "x", "'metadata' must be an object"),
    (
        "metadata_nested",
        _row(id="x", text=SECRET, metadata={"d": {"n": 1}}),
        "x",
        "'metadata' values must be scalars, key 'd' holds object",
    ),
    ("title_number", _row(id="x", text=SECRET, title=3), "x", "'title' must be a string"),
    ("updated_at_bad", _row(id="x", text=SECRET, updated_at="yesterday"), "x", "not an ISO-8601"),
    ("too_long", _row(id="x", text=SECRET * 10), "x", "more than max_doc_chars=100"),
    ("duplicate", _row(id="a", text=SECRET), "a", "duplicate id (first seen at line 1)"),
]


@pytest.mark.parametrize(
    ("line", "doc_id", "reason"), [c[1:] for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS]
)
def test_bad_row_is_quarantined_with_line_and_reason(
    tmp_path: Path, line: bytes, doc_id: str | None, reason: str
) -> None:
    # Line 1 good, line 2 blank (skipped but counted), line 3 bad, line 4 good.
    path = _jsonl(tmp_path, GOOD, b"", line, _row(id="z", text="Zed."))
    result = read_corpus(path, max_doc_chars=100)
    assert [d.id for d in result.documents] == ["a", "z"]
    (bad,) = result.quarantined
    assert (bad.source, bad.line, bad.doc_id) == (str(path), 3, doc_id)
    assert reason in bad.reason
    assert SECRET not in bad.reason and "\n" not in bad.reason


@pytest.mark.parametrize(
    ("line", "reason"), [(c[1], c[3]) for c in BAD_ROWS], ids=[c[0] for c in BAD_ROWS]
)
def test_strict_raises_at_the_first_bad_row(tmp_path: Path, line: bytes, reason: str) -> None:
    path = _jsonl(tmp_path, GOOD, b"", line, _row(id="z", text="Zed."))
    with pytest.raises(DataError) as caught:
        read_corpus(path, strict=True, max_doc_chars=100)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert reason in message and SECRET not in message


def test_quarantined_row_to_dict() -> None:
    row = QuarantinedRow(source="c.jsonl", line=4, doc_id=None, reason="missing 'id'")
    assert row.to_dict() == {
        "source": "c.jsonl",
        "line": 4,
        "doc_id": None,
        "reason": "missing 'id'",
    }


# ---------------------------------------------------------------- whole-file errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="corpus not found"):
        read_corpus(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"], ids=["zero_bytes", "whitespace"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"corpus file is empty: {path}"):
        read_corpus(path)


def test_zero_valid_documents_names_the_count(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, b"not json", _row(id="x"))
    with pytest.raises(DataError, match="2 rows quarantined") as caught:
        read_corpus(path)
    assert "line 1" in str(caught.value)


def test_single_markdown_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "note.md"
    path.write_text("# Title\nbody")
    with pytest.raises(DataError, match="folder"):
        read_corpus(path)


# ---------------------------------------------------------------- folder corpus


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.md").write_text("Intro line\n# Beta Heading\nBody of beta.\n")
    (root / "sub" / "a.txt").write_text("Plain text alpha.\n")
    (root / "c.json").write_text("{}")
    (root / ".git" / "x.md").write_text("# ignored\n")
    return root


def test_folder_corpus_ids_titles_and_order(tmp_path: Path) -> None:
    result = read_corpus(_folder(tmp_path))
    assert [d.id for d in result.documents] == ["b.md", "sub/a.txt"]
    beta, alpha = result.documents
    assert beta.title == "Beta Heading" and alpha.title == "a"
    assert beta.text.startswith("Intro line") and beta.acl == ("public",)
    assert alpha.metadata == {"format": "txt"} and alpha.updated_at.endswith("Z")


def test_folder_digest_stable_and_rename_sensitive(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    first = read_corpus(root).source_digest
    assert read_corpus(root).source_digest == first
    (root / "sub" / "a.txt").rename(root / "sub" / "renamed.txt")
    assert read_corpus(root).source_digest != first


def test_folder_bad_files_are_quarantined(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "bad.md").write_bytes(b"# fine\nline two\n" + SECRET.encode() + b" \xff\n")
    (root / "empty.txt").write_text("  \n")
    result = read_corpus(root)
    reasons = {(q.doc_id, q.line, q.reason) for q in result.quarantined}
    assert reasons == {("bad.md", 3, "file is not valid UTF-8"), ("empty.txt", 1, "file is empty")}
    with pytest.raises(DataError, match=r"bad\.md:3: file is not valid UTF-8"):
        read_corpus(root, strict=True)


def test_folder_without_text_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DataError, match="no .md or .txt files"):
        read_corpus(tmp_path)


# ---------------------------------------------------------------- QA


def _qa(**fields: object) -> bytes:
    row = {"id": "q1", "question": "Who?", "answers": ["A"], "supporting_ids": ["d1"]}
    row.update(fields)
    return json.dumps(row).encode()


def test_read_qa_valid(tmp_path: Path) -> None:
    path = _jsonl(
        tmp_path, _qa(metadata={"hops": 2}), b"", _qa(id="q2", supporting_ids=[]), name="qa.jsonl"
    )
    first, second = read_qa(path)
    assert (first.id, first.answers, first.supporting_ids, first.metadata) == (
        "q1",
        ["A"],
        ["d1"],
        {"hops": 2},
    )
    assert second.supporting_ids == [] and second.to_dict()["question"] == "Who?"


QA_BAD = [
    ("malformed", b"{nope", "malformed JSON"),
    ("no_question", _qa(question=""), "'question' must be a non-empty string"),
    ("answers_string", _qa(answers="A"), "'answers' must be a non-empty list"),
    ("answers_empty", _qa(answers=[]), "'answers' must be a non-empty list"),
    ("supporting_ints", _qa(supporting_ids=[1]), "'supporting_ids' must be a list"),
    ("metadata_nested", _qa(metadata={"x": [1]}), "'metadata' values must be scalars"),
    ("duplicate", _qa(), "duplicate id (first seen at line 1)"),
]


@pytest.mark.parametrize(("line", "reason"), [c[1:] for c in QA_BAD], ids=[c[0] for c in QA_BAD])
def test_read_qa_strict_names_the_line(tmp_path: Path, line: bytes, reason: str) -> None:
    path = _jsonl(tmp_path, _qa(), line, name="qa.jsonl")
    with pytest.raises(DataError) as caught:
        read_qa(path)
    assert str(caught.value).startswith(f"{path}:2: ") and reason in str(caught.value)
    # Lenient mode keeps the good question and drops the bad one.
    assert [p.id for p in read_qa(path, strict=False)] == ["q1"]


def test_read_qa_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "qa.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="qa file is empty"):
        read_qa(empty)
    with pytest.raises(DataError, match="qa file not found"):
        read_qa(tmp_path / "missing.jsonl")


# ---------------------------------------------------------------- digests and writers


def test_document_digest_tracks_content_not_timestamps() -> None:
    base = Document(id="a", text="t", title="T", acl=("hr",), metadata={"x": 1, "y": "z"})
    digest = document_digest(base)
    assert len(digest) == 64
    reordered = Document(
        id="other",
        text="t",
        title="T",
        acl=("hr",),
        metadata={"y": "z", "x": 1},
        updated_at="2030-01-01T00:00:00Z",
    )
    assert document_digest(reordered) == digest  # id, key order and timestamp do not matter
    for changed in (
        Document(id="a", text="t2", title="T", acl=("hr",), metadata={"x": 1, "y": "z"}),
        Document(id="a", text="t", title="T2", acl=("hr",), metadata={"x": 1, "y": "z"}),
        Document(id="a", text="t", title="T", acl=("hr", "legal"), metadata={"x": 1, "y": "z"}),
        Document(id="a", text="t", title="T", acl=("hr",), metadata={"x": 2, "y": "z"}),
    ):
        assert document_digest(changed) != digest


def test_write_jsonl_atomic_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "out.jsonl"
    rows = [{"id": "a", "text": "é ü"}, {"id": "b", "text": "x"}]
    assert write_jsonl_atomic(path, iter(rows)) == 2
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows
    assert "é" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]


def test_write_jsonl_atomic_keeps_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"id": "old"}])

    def rows():
        yield {"id": "new"}
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(path, rows())
    assert json.loads(path.read_text()) == {"id": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left


def test_write_json_atomic_is_stable(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, {"z": [1], "a": "x"})
    write_json_atomic(b, {"a": "x", "z": [1]})
    assert a.read_bytes() == b.read_bytes()
