"""A folder or s3:// prefix of document files -> validated `Document`s, parsing on Ray Data
(`engine="ray_data"`) or in this process (`engine="local"`, for callers that are Ray tasks).

The driver lists the files (names, sizes: cheap), reads the sidecars and folder rule files,
and quarantines what it can judge without the content (a malformed sidecar, an oversized or
unsupported file); Ray Data reads the rest (`read_binary_files`) and parses it in a
`map_batches` stage (`parse_batch`, a thin adapter around `parse_file`); the driver collects
the parsed documents. A bad file never stops the read: it becomes a `QuarantinedRow` with a
one-line reason. A document's id is its path relative to the root (posix).

    >>> result = read_files("s3://bucket/docs", files=FilesConfig(), engine="ray_data")
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from rayrag.config import FilesConfig
from rayrag.data.files.listing import Listed, list_files, open_root, read_bytes
from rayrag.data.files.meta import RULE_FILE, SIDECAR_SUFFIX, FileMeta, MetaResolver
from rayrag.data.files.parse import SUPPORTED, UNSUPPORTED, parse_file, suffix
from rayrag.data.files.parsed import FileRejected, ParseLimits
from rayrag.errors import DataError
from rayrag.types import PUBLIC_GROUP, Document, Span

_META_MAX_BYTES = 1 << 20


def limits_of(files: FilesConfig) -> ParseLimits:
    return ParseLimits(
        max_pages=files.max_pages,
        max_uncompressed_bytes=files.max_uncompressed_bytes,
        max_compression_ratio=files.max_compression_ratio,
        heading_font_ratio=files.heading_font_ratio,
    )


def parse_record(name: str, data: bytes, limits: ParseLimits) -> dict[str, Any]:
    """Parse one file into a plain row (what travels back from a Ray worker): the text and
    layout, or the reason it was rejected and the line it points at."""
    row: dict[str, Any] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "nbytes": len(data),
        "ok": False,
        "title": "",
        "has_title": False,
        "text": "",
        "layout": "[]",
        "reason": "",
        "line": 1,
    }
    try:
        parsed = parse_file(name, data, limits)
    except FileRejected as bad:
        row["reason"] = bad.reason
        if bad.byte_offset is not None:
            row["line"] = data[: bad.byte_offset].count(b"\n") + 1
        return row
    except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the ingest
        row["reason"] = f"the parser failed ({type(exc).__name__})"
        return row
    row.update(
        ok=True,
        title=parsed.title or "",
        has_title=parsed.title is not None,
        text=parsed.text,
        layout=json.dumps([[s.start, s.end, s.section, s.page] for s in parsed.layout]),
    )
    return row


def parse_batch(batch: dict[str, Any], limits: ParseLimits) -> dict[str, list[Any]]:
    """Ray Data adapter: rows of (path, bytes) in, one parsed row per file out."""
    out: dict[str, list[Any]] = {}
    for path, data in zip(batch["path"], batch["bytes"], strict=True):
        row = {"path": str(path), **parse_record(str(path), bytes(data), limits)}
        for key, value in row.items():
            out.setdefault(key, []).append(value)
    return out


def read_files(
    corpus: str | Path,
    *,
    files: FilesConfig | None = None,
    engine: str = "local",
    strict: bool = False,
    max_doc_chars: int = 2_000_000,
) -> Any:
    """Read every document file under `corpus` (a folder or s3://bucket/prefix) into a
    `CorpusReadResult`; bad files are quarantined (`strict`: the first one raises)."""
    from rayrag.data.readers import CorpusReadResult, _Quarantine

    files = files or FilesConfig()
    filesystem, base = open_root(corpus)
    listing = list_files(filesystem, base)
    where = str(corpus)
    sink = _Quarantine(where, strict)
    digest = hashlib.sha256()
    rule_files: dict[str, bytes] = {}
    sidecars: dict[str, bytes] = {}
    candidates: list[Listed] = []
    for item in listing:
        name = PurePosixPath(item.rel).name
        if name == RULE_FILE or name.endswith(SIDECAR_SUFFIX):
            raw = read_bytes(filesystem, item.path, _META_MAX_BYTES)
            (rule_files if name == RULE_FILE else sidecars)[item.rel] = (
                raw if len(raw) <= _META_MAX_BYTES else b"too large"  # parses as malformed
            )
            _frame(digest, item.rel, raw)
        elif suffix(name) in SUPPORTED or suffix(name) in UNSUPPORTED:
            candidates.append(item)
    if not candidates:
        raise DataError(
            f"no .md or .txt files (nor .pdf, .html, .docx) under corpus folder: {where}"
        )
    resolver = MetaResolver(rule_files, sidecars)
    metas: dict[str, FileMeta] = {}
    to_parse: list[Listed] = []
    rejected: dict[str, str] = {}
    for item in candidates:
        try:
            metas[item.rel] = resolver.resolve(item.rel)
        except FileRejected as bad:
            rejected[item.rel] = bad.reason
            continue
        if suffix(item.rel) in UNSUPPORTED:
            rejected[item.rel] = f"unsupported file type {suffix(item.rel)}"
        elif item.size > files.max_file_bytes:
            rejected[item.rel] = (
                f"file is {item.size} bytes, more than max_file_bytes={files.max_file_bytes}"
            )
        else:
            to_parse.append(item)
    parse = _parse_on_ray if engine == "ray_data" else _parse_here
    records = parse(filesystem, to_parse, limits_of(files), files)
    documents: list[Document] = []
    for item in candidates:
        source = f"{where.rstrip('/')}/{item.rel}"
        if item.rel in rejected:
            sink.add(1, item.rel, rejected[item.rel], source=source)
            continue
        record = records[item.path]
        digest.update(f"{item.rel}\0{record['nbytes']}\0{record['sha256']}\0".encode())
        if not record["ok"]:
            sink.add(record["line"], item.rel, record["reason"], source=source)
            continue
        text = record["text"]
        if len(text) > max_doc_chars:
            sink.add(
                1,
                item.rel,
                f"text has {len(text)} characters, more than max_doc_chars={max_doc_chars}",
                source=source,
            )
            continue
        documents.append(_document(item, record, metas[item.rel]))
    return CorpusReadResult(documents, sink.rows, digest.hexdigest())


def _frame(digest: Any, rel: str, raw: bytes) -> None:
    digest.update(f"{rel}\0{len(raw)}\0{hashlib.sha256(raw).hexdigest()}\0".encode())


def _parse_here(
    filesystem: Any, items: list[Listed], limits: ParseLimits, files: FilesConfig
) -> dict[str, dict[str, Any]]:
    """Read and parse in this process, one file at a time (engine="local")."""
    records = {}
    for item in items:
        data = read_bytes(filesystem, item.path, files.max_file_bytes)
        if len(data) > files.max_file_bytes:  # grew since it was listed
            records[item.path] = {
                **parse_record(item.rel, b"", limits),
                "reason": f"file is more than max_file_bytes={files.max_file_bytes}",
            }
            continue
        records[item.path] = parse_record(item.rel, data, limits)
    return records


def _parse_on_ray(
    filesystem: Any, items: list[Listed], limits: ParseLimits, files: FilesConfig
) -> dict[str, dict[str, Any]]:
    """Read the bytes and parse on Ray Data; the driver only collects the parsed rows."""
    if not items:
        return {}
    import ray

    ds = ray.data.read_binary_files(
        [item.path for item in items],
        include_paths=True,
        filesystem=filesystem,
        override_num_blocks=min(len(items), 64),
    )
    ds = ds.map_batches(
        parse_batch,
        fn_kwargs={"limits": limits},
        batch_size=files.read_batch_size,
        batch_format="numpy",
    )
    records = {}
    for row in ds.iter_rows():
        records[_normal(str(row["path"]))] = {k: row[k] for k in row if k != "path"}
    by_path = {_normal(item.path): item.path for item in items}
    return {by_path[path]: record for path, record in records.items() if path in by_path}


def _normal(path: str) -> str:
    return path.split("://", 1)[-1].lstrip("/")


def _document(item: Listed, record: dict[str, Any], meta: FileMeta) -> Document:
    parsed_title = str(record["title"]) if record["has_title"] else None
    layout = _layout(json.loads(record["layout"]), parsed_title)
    ext = suffix(item.rel).lstrip(".")
    return Document(
        id=item.rel,
        text=str(record["text"]),
        title=meta.title or parsed_title or PurePosixPath(item.rel).stem,
        acl=meta.acl or (PUBLIC_GROUP,),
        metadata={"format": ext, **meta.metadata},
        updated_at=item.updated_at,
        layout=layout,
    )


def _layout(rows: list[list[Any]], title: str | None) -> tuple[Span, ...]:
    """Spans with the document title dropped from the front of each heading path (the
    embedder puts the title before the path already); adjacent equal spans merge; a layout
    that says nothing (one section-less, page-less stretch) is ()."""
    spans: list[Span] = []
    for start, end, section, page in rows:
        if title and section is not None:
            if section == title:
                section = None
            elif section.startswith(title + " > "):
                section = section[len(title) + 3 :]
        if spans and (spans[-1].section, spans[-1].page) == (section, page):
            spans[-1] = Span(spans[-1].start, end, section, page)
        else:
            spans.append(Span(start, end, section, page))
    if all(s.section is None and s.page is None for s in spans):
        return ()
    return tuple(spans)
