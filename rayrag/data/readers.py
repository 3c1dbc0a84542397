"""Corpus and QA readers: the validated door through which every document enters rayrag.

A corpus is a JSONL file (the README's Data formats) or a folder (or s3:// prefix) of
document files, parsed by `rayrag.data.files`. Reading never
trusts a row: each line is decoded and validated on its own, bad rows go to a quarantine
list with a one-line reason that names the line and never quotes document text (reasons
end up in logs and MLflow), and `strict=True` turns the first bad row into a `DataError`.
The writers here are atomic (temp file + fsync + `os.replace`) so a crash never leaves a
half-written corpus behind.

    >>> result = read_corpus("corpus.jsonl")
    >>> len(result.documents), [q.to_dict() for q in result.quarantined]
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rayrag.atomic import atomic_text
from rayrag.config import FilesConfig
from rayrag.errors import DataError
from rayrag.types import PUBLIC_GROUP, Document, Scalar

log = logging.getLogger(__name__)

# A single document file is not a corpus: its folder is.
FOLDER_SUFFIXES = (".md", ".txt", ".markdown", ".pdf", ".html", ".htm", ".docx")
_SCALAR_TYPES = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class QuarantinedRow:
    """A row that failed validation: where it was and why (never its content)."""

    source: str
    line: int
    doc_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CorpusReadResult:
    """Valid documents, quarantined rows and a digest of the raw input bytes."""

    documents: list[Document]
    quarantined: list[QuarantinedRow]
    source_digest: str


@dataclass(frozen=True)
class QAPair:
    """One evaluation question with gold answers and gold supporting document ids."""

    id: str
    question: str
    answers: list[str]
    supporting_ids: list[str]
    metadata: dict[str, Scalar] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _BadRow(Exception):
    """Internal: a row failed validation; carries the reason and the id when known."""

    def __init__(self, reason: str, doc_id: str | None = None, byte_offset: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.doc_id = doc_id
        self.byte_offset = byte_offset  # where in a folder file the problem is (for its line)


# ---------------------------------------------------------------- public readers


def read_corpus(
    path: str | Path,
    *,
    strict: bool = False,
    max_doc_chars: int = 2_000_000,
    files: FilesConfig | None = None,
    engine: str = "local",
) -> CorpusReadResult:
    """Read a JSONL corpus file, or a folder / s3://bucket/prefix of document files (.md,
    .txt, .pdf, .html, .docx: `rayrag.data.files`), into validated `Document`s.

    `files`: the file limits (`ingest.files`); `engine="ray_data"` parses the files on Ray
    Data (Ray must be up), "local" in this process."""
    from rayrag.data.files.listing import is_uri
    from rayrag.data.files.reader import read_files

    if is_uri(path):
        result = read_files(
            str(path), files=files, engine=engine, strict=strict, max_doc_chars=max_doc_chars
        )
        return _nonempty(result, str(path))
    path = Path(path)
    if not path.exists():
        raise DataError(f"corpus not found: {path}")
    if path.is_dir():
        result = read_files(
            path, files=files, engine=engine, strict=strict, max_doc_chars=max_doc_chars
        )
    elif path.suffix.lower() in FOLDER_SUFFIXES:
        raise DataError(
            f"a corpus is a JSONL file or a folder of document files; pass the folder of {path}"
        )
    else:
        result = _read_jsonl_corpus(path, strict=strict, max_doc_chars=max_doc_chars)
    return _nonempty(result, str(path))


def _nonempty(result: CorpusReadResult, where: str) -> CorpusReadResult:
    if not result.documents:
        first = result.quarantined[0] if result.quarantined else None
        hint = f" (first: line {first.line}: {first.reason})" if first else ""
        raise DataError(
            f"no valid documents in {where}: {len(result.quarantined)} rows quarantined{hint}"
        )
    return result


def read_qa(path: str | Path, *, strict: bool = True) -> list[QAPair]:
    """Read a QA JSONL file. Strict by default: a silently dropped gold question biases eval.

    With `strict=False` bad rows are skipped and logged (line and reason only).
    """
    path = Path(path)
    raw = _read_nonempty_file(path, kind="qa")
    pairs: list[QAPair] = []
    first_line: dict[str, int] = {}
    for line_no, obj in _iter_json_lines(raw):
        try:
            pair = _parse_qa(obj)
            if pair.id in first_line:
                raise _BadRow(f"duplicate id (first seen at line {first_line[pair.id]})", pair.id)
        except _BadRow as bad:
            if strict:
                raise DataError(f"{path}:{line_no}: {bad.reason}") from None
            log.warning("skipping QA row %s:%d: %s", path, line_no, bad.reason)
            continue
        first_line[pair.id] = line_no
        pairs.append(pair)
    if not pairs:
        raise DataError(f"no valid questions in {path}")
    return pairs


def document_digest(doc: Document) -> str:
    """sha256 of the content that matters for re-ingest (text, title, acl, metadata).

    `updated_at` is left out on purpose: touching a file must not force a re-embed. A
    document's layout (sections, pages) counts: it changes the chunks.
    """
    payload: dict[str, Any] = {
        "text": doc.text,
        "title": doc.title,
        "acl": list(doc.acl),
        "metadata": doc.metadata,
    }
    if doc.layout:  # only when present: digests of plain documents stay what they were
        payload["layout"] = [[s.start, s.end, s.section, s.page] for s in doc.layout]
    return hashlib.sha256(_canonical_json(payload).encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- atomic writers


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL atomically (temp file in the same dir, fsync, rename); returns count."""
    count = 0
    with atomic_text(Path(path)) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write one JSON value atomically, pretty-printed with sorted keys (stable bytes)."""
    with atomic_text(Path(path)) as handle:
        handle.write(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- JSONL corpus


def _read_jsonl_corpus(path: Path, *, strict: bool, max_doc_chars: int) -> CorpusReadResult:
    raw = _read_nonempty_file(path, kind="corpus")
    sink = _Quarantine(str(path), strict)
    documents: list[Document] = []
    first_line: dict[str, int] = {}
    for line_no, obj in _iter_json_lines(raw):
        try:
            doc = _parse_document(obj, max_doc_chars)
            if doc.id in first_line:
                raise _BadRow(f"duplicate id (first seen at line {first_line[doc.id]})", doc.id)
        except _BadRow as bad:
            sink.add(line_no, bad.doc_id, bad.reason)
            continue
        first_line[doc.id] = line_no
        documents.append(doc)
    return CorpusReadResult(documents, sink.rows, hashlib.sha256(raw).hexdigest())


def _read_nonempty_file(path: Path, *, kind: str) -> bytes:
    if not path.exists():
        raise DataError(f"{kind} file not found: {path}")
    if not path.is_file():
        raise DataError(f"{kind} path is not a file: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{kind} file is empty: {path}")
    return raw


def _iter_json_lines(raw: bytes) -> Iterator[tuple[int, Any]]:
    """Yield (1-based line, parsed JSON or `_Invalid`) for every non-blank line.

    Bytes are decoded per line so one bad byte costs one row, not the whole file.
    """
    for index, raw_line in enumerate(raw.split(b"\n")):
        if not raw_line.strip():
            continue
        try:
            yield index + 1, _decode_json_line(raw_line)
        except _BadRow as bad:
            yield index + 1, _Invalid(bad.reason)


@dataclass(frozen=True)
class _Invalid:
    """A line that could not be decoded; parsers turn it back into `_BadRow`."""

    reason: str


def _decode_json_line(raw_line: bytes) -> Any:
    try:
        text = raw_line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRow(f"line is not valid UTF-8 (bad byte at column {exc.start + 1})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the column describe the syntax error without echoing the content.
        raise _BadRow(f"malformed JSON ({exc.msg} at column {exc.colno})") from None


def _parse_document(obj: Any, max_doc_chars: int) -> Document:
    if isinstance(obj, _Invalid):
        raise _BadRow(obj.reason)
    if not isinstance(obj, dict):
        raise _BadRow(f"row is not a JSON object (got {_json_type(obj)})")
    doc_id = _require_id(obj)
    text = obj.get("text")
    if "text" not in obj:
        raise _BadRow("missing 'text'", doc_id)
    if not isinstance(text, str):
        raise _BadRow(f"'text' must be a string, got {_json_type(text)}", doc_id)
    if not text.strip():
        raise _BadRow("'text' is empty", doc_id)
    if len(text) > max_doc_chars:
        raise _BadRow(
            f"'text' has {len(text)} characters, more than max_doc_chars={max_doc_chars}", doc_id
        )
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise _BadRow(f"'title' must be a string, got {_json_type(title)}", doc_id)
    return Document(
        id=doc_id,
        text=text,
        title=title,
        acl=_parse_acl(obj, doc_id),
        metadata=_parse_metadata(obj, doc_id),
        updated_at=_parse_updated_at(obj, doc_id),
    )


def _require_id(obj: dict[str, Any]) -> str:
    if "id" not in obj:
        raise _BadRow("missing 'id'")
    doc_id = obj["id"]
    if not isinstance(doc_id, str):
        raise _BadRow(f"'id' must be a string, got {_json_type(doc_id)}")
    if not doc_id.strip():
        raise _BadRow("'id' is empty")
    return doc_id


def _parse_acl(obj: dict[str, Any], doc_id: str) -> tuple[str, ...]:
    if obj.get("acl") is None:
        return (PUBLIC_GROUP,)
    acl = obj["acl"]
    if (
        not isinstance(acl, list)
        or not acl
        or not all(isinstance(group, str) and group.strip() for group in acl)
    ):
        raise _BadRow("'acl' must be a non-empty list of non-empty strings", doc_id)
    # Order-preserving dedupe so the same groups always give the same tuple.
    return tuple(dict.fromkeys(acl))


def _parse_metadata(obj: dict[str, Any], doc_id: str | None) -> dict[str, Scalar]:
    metadata = obj.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise _BadRow(f"'metadata' must be an object, got {_json_type(metadata)}", doc_id)
    for key, value in metadata.items():
        if not isinstance(value, _SCALAR_TYPES):
            raise _BadRow(
                f"'metadata' values must be scalars, key {key!r} holds {_json_type(value)}", doc_id
            )
    return dict(metadata)


def _parse_updated_at(obj: dict[str, Any], doc_id: str) -> str | None:
    value = obj.get("updated_at")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRow(f"'updated_at' must be a string, got {_json_type(value)}", doc_id)
    try:
        # Python < 3.11 does not parse a trailing Z; it means UTC.
        datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise _BadRow("'updated_at' is not an ISO-8601 timestamp", doc_id) from None
    return value


# ---------------------------------------------------------------- QA rows


def _parse_qa(obj: Any) -> QAPair:
    if isinstance(obj, _Invalid):
        raise _BadRow(obj.reason)
    if not isinstance(obj, dict):
        raise _BadRow(f"row is not a JSON object (got {_json_type(obj)})")
    qa_id = _require_id(obj)
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _BadRow("'question' must be a non-empty string", qa_id)
    answers = obj.get("answers")
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise _BadRow("'answers' must be a non-empty list of non-empty strings", qa_id)
    supporting = obj.get("supporting_ids", [])
    if not isinstance(supporting, list) or not all(isinstance(s, str) and s for s in supporting):
        raise _BadRow("'supporting_ids' must be a list of document ids (strings)", qa_id)
    return QAPair(
        id=qa_id,
        question=question,
        answers=list(answers),
        supporting_ids=list(dict.fromkeys(supporting)),
        metadata=_parse_metadata(obj, qa_id),
    )


# ---------------------------------------------------------------- helpers


class _Quarantine:
    """Collects bad rows, or raises on the first one when strict."""

    def __init__(self, source: str, strict: bool) -> None:
        self.source = source
        self.strict = strict
        self.rows: list[QuarantinedRow] = []

    def add(self, line: int, doc_id: str | None, reason: str, *, source: str | None = None) -> None:
        where = source or self.source
        if self.strict:
            raise DataError(f"{where}:{line}: {reason}")
        self.rows.append(QuarantinedRow(where, line, doc_id, reason))


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return names.get(type(value), type(value).__name__)


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
