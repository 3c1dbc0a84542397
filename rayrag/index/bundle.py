"""IndexBundle: the one versioned directory an ingest produces and every server reads.

Layout: `manifest.json`, `chunks.parquet`, `documents.parquet`, `vectors.faiss`,
`lexical/` (the BM25 index; bundles written before it have none), `graph.json`,
`pii_report.json`, `quarantine.jsonl`. A bundle is written
to a temporary sibling directory and renamed into place, so a killed ingest never leaves a
half bundle and the previous bundle stays intact until the new one is complete.

    >>> bundle = IndexBundle.load(".rayrag/demo/bundle")
    >>> bundle.manifest["counts"]["chunks"], bundle.chunks().num_rows
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rayrag.atomic import pid_alive, swap_dir_into_place
from rayrag.config import PERSONAL_POLICY, IndexConfig, RedactionConfig
from rayrag.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNKS = "chunks.parquet"
DOCUMENTS = "documents.parquet"
VECTORS = "vectors.faiss"
GRAPH = "graph.json"
PII_REPORT = "pii_report.json"
QUARANTINE = "quarantine.jsonl"
LEXICAL = "lexical"  # a directory: optional, older bundles lack it
REQUIRED_FILES = (MANIFEST, CHUNKS, DOCUMENTS, VECTORS, GRAPH, PII_REPORT)
REDACTION_POLICY_KEY = "redaction_policy"  # chunk metadata: the policy that redacted its document
# The redaction settings a manifest records (its "redaction" object) and queries are redacted by.
RECORDED_REDACTION_KEYS = (
    "entities",
    "operators",
    "default_operator",
    "policies",
    "default_policy",
    "policy_field",
    "policy_rules",
)


def place_of(metadata_json: str | None) -> dict[str, Any]:
    """Where a chunk sits in its file, from its metadata JSON: {"page": int, "section": str}
    for the keys it has (structured files; `rayrag.pipelines.layout_prepare`), else {}."""
    try:
        metadata = json.loads(metadata_json) if metadata_json else {}
    except json.JSONDecodeError:
        return {}
    place: dict[str, Any] = {}
    if isinstance(metadata.get("page"), int) and not isinstance(metadata["page"], bool):
        place["page"] = metadata["page"]
    if isinstance(metadata.get("section"), str):
        place["section"] = metadata["section"]
    return place


CHUNK_SCHEMA = pa.schema(
    [
        ("row_id", pa.int64()),  # the FAISS id of the chunk's vector
        ("chunk_id", pa.string()),
        ("doc_id", pa.string()),
        ("title", pa.string()),
        ("text", pa.string()),  # already redacted
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("acl", pa.list_(pa.string())),
        ("metadata", pa.string()),  # JSON object of scalars: heterogeneous across docs
    ]
)

DOCUMENT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("digest", pa.string()),  # content digest of the raw document: drives incremental ingest
        ("title", pa.string()),  # redacted
        ("acl", pa.list_(pa.string())),
        ("metadata", pa.string()),
        ("updated_at", pa.string()),
        ("n_chunks", pa.int64()),
        ("pii_counts", pa.string()),  # JSON {entity_type: count}; never values
    ]
)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _sweep_stale_temps(out: Path) -> None:
    """Remove temp dirs left by ingests that were killed (their pid is gone)."""
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(stale.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def write_bundle(
    out: Path, writers: dict[str, Callable[[Path], None]], manifest: dict[str, Any]
) -> Path:
    """Write a bundle atomically: each `writers[name](path)` fills one file in a temp dir,
    the manifest goes last, then the temp dir replaces `out` in two renames."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not (out / MANIFEST).is_file():
        if not out.is_dir() or any(out.iterdir()):
            raise BundleError(f"refusing to replace {out}: it exists and is not an index bundle")
    _sweep_stale_temps(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, write in writers.items():
            write(tmp / name)
        _write_json(tmp / MANIFEST, manifest)
        for name in REQUIRED_FILES:
            if not (tmp / name).is_file():
                raise BundleError(f"internal: bundle file {name} was not written")
        swap_dir_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_table(table: pa.Table) -> Callable[[Path], None]:
    return lambda path: pq.write_table(table, path)


def write_json_file(data: Any) -> Callable[[Path], None]:
    return lambda path: _write_json(path, data)


def write_jsonl_file(rows: list[dict[str, Any]]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, sort_keys=True) + "\n")

    return write


def policy_documents(chunks: pa.Table, default_policy: str) -> dict[str, int]:
    """Redaction policy -> how many documents of `chunks` it redacted (chunk metadata says)."""
    documents: dict[str, set[str]] = {}
    for doc_id, raw in zip(
        chunks.column("doc_id").to_pylist(), chunks.column("metadata").to_pylist(), strict=True
    ):
        documents.setdefault(
            json.loads(raw or "{}").get(REDACTION_POLICY_KEY, default_policy), set()
        ).add(doc_id)
    return {policy: len(ids) for policy, ids in sorted(documents.items())}


class IndexBundle:
    """A bundle on disk; tables, index and graph load lazily and once."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self._chunks: pa.Table | None = None
        self._documents: pa.Table | None = None
        self._graph: Any = None

    @classmethod
    def load(cls, path: str | Path) -> IndexBundle:
        path = Path(path)
        if not path.is_dir():
            raise BundleError(f"index bundle not found: {path} (--bundle)")
        missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
        if missing:
            raise BundleError(
                f"{path} is not a complete index bundle: missing {', '.join(missing)}"
            )
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BundleError(f"corrupt bundle manifest: {path / MANIFEST}") from None
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise BundleError(
                f"bundle {path} has format_version {version!r}; this rayrag reads {FORMAT_VERSION}"
            )
        return cls(path, manifest)

    @property
    def bundle_id(self) -> str:
        return str(self.manifest["bundle_id"])

    def _read_table(self, name: str) -> pa.Table:
        try:
            return pq.read_table(self.path / name)
        except (pa.ArrowInvalid, OSError) as exc:
            raise BundleError(
                f"corrupt bundle table {self.path / name}: {type(exc).__name__}"
            ) from None

    def chunks(self) -> pa.Table:
        if self._chunks is None:
            self._chunks = self._read_table(CHUNKS)
        return self._chunks

    def documents(self) -> pa.Table:
        if self._documents is None:
            self._documents = self._read_table(DOCUMENTS)
        return self._documents

    def document_digests(self) -> dict[str, str]:
        table = self.documents()
        return dict(
            zip(table.column("doc_id").to_pylist(), table.column("digest").to_pylist(), strict=True)
        )

    def vector_index(self, config: IndexConfig) -> Any:
        from rayrag.index.vector import VectorIndex

        return VectorIndex.load(self.path / VECTORS, config)

    def has_lexical(self) -> bool:
        return (self.path / LEXICAL / "row_ids.json").is_file()

    def lexical_index(self) -> Any:
        """The BM25 index; `BundleError` naming the fix when the bundle predates it."""
        from rayrag.index.lexical import LexicalIndex

        if not self.has_lexical():
            raise BundleError(
                f"bundle {self.path} has no lexical (BM25) index: it was written without "
                "index.lexical or by an older rayrag; re-ingest it"
            )
        return LexicalIndex.load(self.path / LEXICAL)

    def text_format(self) -> str:
        """How chunks were embedded (`embedding.text_format`); bundles before it:
        the chunk alone."""
        return str(self.manifest.get("embedder", {}).get("text_format", "chunk"))

    def query_redaction(self, base: RedactionConfig) -> RedactionConfig:
        """The redaction to apply to queries over this bundle: the policies its documents were
        redacted with (from the manifest), keys and engine settings from `base`. A bundle
        ingested without redaction gets unredacted queries; bundles before policies: `base`."""
        recorded = self.manifest.get("redaction")
        if recorded is None:
            return base
        if not recorded.get("enabled", True):
            return base.model_copy(update={"enabled": False})
        return RedactionConfig.model_validate(
            {
                **base.model_dump(mode="json"),
                "enabled": True,
                **{key: recorded[key] for key in RECORDED_REDACTION_KEYS},
            }
        )

    def policies_used(self) -> tuple[str, ...]:
        """The redaction policies this bundle's documents were redacted with (sorted); the
        default policy alone for bundles before policies, none when redaction was off."""
        recorded = self.manifest.get("redaction")
        if recorded is None:
            return (PERSONAL_POLICY,)
        if not recorded.get("enabled", True):
            return ()
        return tuple(sorted(recorded.get("documents", {}) or {recorded["default_policy"]: 0}))

    def chunk_policies(self) -> list[str]:
        """Per chunk row, the policy that redacted it ("" when redaction was off)."""
        used = self.policies_used()
        if len(used) <= 1:  # one policy: no need to parse every chunk's metadata
            return [used[0] if used else ""] * self.chunks().num_rows
        return [
            str(json.loads(raw or "{}").get(REDACTION_POLICY_KEY, ""))
            for raw in self.chunks().column("metadata").to_pylist()
        ]

    def graph(self) -> Any:
        if self._graph is None:
            from rayrag.index.graph import KnowledgeGraph

            self._graph = KnowledgeGraph.load(self.path / GRAPH)
        return self._graph

    def pii_report(self) -> dict[str, Any]:
        return json.loads((self.path / PII_REPORT).read_text(encoding="utf-8"))

    def quarantine(self) -> list[dict[str, Any]]:
        path = self.path / QUARANTINE
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
