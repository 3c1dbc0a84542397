"""Erasure: forget documents everywhere they went (GDPR art. 17, the right to erasure).

`forget(bundle, doc_ids, config)` writes a new version of the bundle, atomically in place
(`pipelines.bundle.write_bundle`), that holds nothing derived from the documents:

- `chunks.parquet`, `documents.parquet`, `quarantine.jsonl`: their rows are dropped.
- `vectors.faiss`: their vectors are removed by id (`VectorIndex.remove_ids`; HNSW is
  rebuilt from the remaining vectors). Row ids are not renumbered: the chunk `row_id` ==
  FAISS id contract holds with gaps, as after an incremental ingest, and every reader maps
  ids through the chunks table (`DenseRetriever._rows`).
- `graph.json`: `KnowledgeGraph.remove_documents` drops their passage nodes, the edges
  only their chunks supported and the entities only they mentioned; shared edges and
  entities lose the documents' chunk ids and doc ids from their provenance, and names,
  aliases, acronyms and synonym neighbours are recomputed from what remains. The result
  is checked: no node or edge may still name a forgotten doc id or chunk id (fail closed).
- `pii_report.json`: recounted from the remaining documents.
- `manifest.json`: a new `bundle_id`, `parent_bundle_id`, updated counts and graph stats,
  and an `erasures` entry {audit_id, n_docs, at} (no ids of content); the rest is kept.

The previous directory is deleted by the swap, and so are the Ray Tune bundle cache
entries (`rayrag/tune/bundles.py`) whose documents table holds a forgotten document. The
action is recorded in the audit log (`governance.audit_log`): doc ids, the actor's hash,
bundle ids and counts. Serving stages reload the bundle when its manifest changes
(`serve.bundle_check_s`).

    >>> report = forget(".rayrag/demo/bundle", ["doc-0042"], cfg, actor="ana")
    >>> report.to_json()["chunks_removed"]
    3
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rayrag.atomic import exclusive_lock
from rayrag.config import RAGConfig
from rayrag.errors import BundleError, DataError
from rayrag.event_log import fingerprint, get_logger
from rayrag.governance.privacy.audit import AuditLog, is_id, new_audit_id
from rayrag.index import bundle as bundle_io

_log = get_logger("rayrag.erasure")
# Where `rayrag tune` keeps its bundle cache by default (rayrag.tune.sweep.DEFAULT_ROOT /
# "bundles").
DEFAULT_TUNE_CACHE = Path(".rayrag/tune/bundles")
MAX_DOCS_PER_CALL = 10_000


@dataclass
class ForgetReport:
    """What one `forget` removed (counts and ids only)."""

    doc_ids: list[str]
    previous_bundle_id: str
    bundle_id: str
    chunks_removed: int
    vectors_removed: int
    edges_removed: int
    edges_updated: int
    nodes_removed: int
    quarantine_removed: int
    cache_entries_removed: int
    audit_id: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


def forget(
    bundle: str | Path,
    doc_ids: Sequence[str],
    config: RAGConfig,
    *,
    actor: str = "cli",
    cache_roots: Sequence[str | Path] | None = None,
) -> ForgetReport:
    """Write a new version of `bundle` without `doc_ids`, purge cached copies, audit it.

    `cache_roots`: Ray Tune bundle caches to clean (default: `.rayrag/tune/bundles` and
    `tune/bundles` beside the bundle, where `rayrag demo` keeps its sweep cache).
    Unknown doc ids raise `DataError` naming how many, not which (nothing is written).
    """
    started = time.perf_counter()
    bundle_path = Path(bundle)
    wanted = _check_doc_ids(doc_ids)
    if not (bundle_path / bundle_io.MANIFEST).is_file():
        raise BundleError(f"index bundle not found: {bundle_path} (--bundle)")
    _check_known(bundle_io.IndexBundle.load(bundle_path), wanted)  # before the lock file is made
    with _bundle_lock(bundle_path):
        old = bundle_io.IndexBundle.load(bundle_path)
        new, counts = _without(old, wanted, config)
        bundle_id, audit_id = _bundle_id(), new_audit_id()
        manifest = _manifest(old, new, bundle_id, audit_id, len(wanted))
        bundle_io.write_bundle(
            bundle_path,
            {
                bundle_io.CHUNKS: bundle_io.write_table(new["chunks"]),
                bundle_io.DOCUMENTS: bundle_io.write_table(new["documents"]),
                bundle_io.VECTORS: new["index"].save,
                **({bundle_io.LEXICAL: new["lexical"].save} if new["lexical"] is not None else {}),
                bundle_io.GRAPH: new["graph"].save,
                bundle_io.PII_REPORT: bundle_io.write_json_file(new["pii_report"]),
                bundle_io.QUARANTINE: bundle_io.write_jsonl_file(new["quarantine"]),
            },
            manifest,
        )
        leftovers = _sweep_old_copies(bundle_path)
    # The sweep's default cache, and the one `rayrag demo` keeps beside its bundle
    # (DIR/tune/bundles).
    default_roots = [DEFAULT_TUNE_CACHE, bundle_path.parent / "tune" / "bundles"]
    roots = default_roots if cache_roots is None else [Path(r) for r in cache_roots]
    cache_removed = sum(_purge_cache(root, wanted, bundle_path) for root in roots)
    report = ForgetReport(
        doc_ids=sorted(wanted),
        previous_bundle_id=old.bundle_id,
        bundle_id=bundle_id,
        cache_entries_removed=cache_removed,
        audit_id=audit_id,
        seconds=time.perf_counter() - started,
        **counts,
    )
    AuditLog(config.governance.audit_log).record(
        "forget",
        audit_id=audit_id,
        doc_ids=report.doc_ids,
        actor_hash=fingerprint(actor),
        previous_bundle_id=old.bundle_id,
        bundle_id=bundle_id,
        old_copies_left=leftovers,
        **{
            k: v
            for k, v in report.to_json().items()
            if k not in ("doc_ids", "previous_bundle_id", "bundle_id", "audit_id")
        },
    )
    _log.info(
        "forget_done",
        extra={
            "fields": {
                "audit_id": audit_id,
                "bundle_id": bundle_id,
                "n_docs": len(wanted),
                **counts,
            }
        },
    )
    return report


def _check_doc_ids(doc_ids: Sequence[str]) -> set[str]:
    if isinstance(doc_ids, str):
        raise DataError("doc_ids must be a list of document ids, not one string")
    wanted = set(doc_ids)
    if not wanted:
        raise DataError("forget needs at least one document id (--doc-id)")
    if len(wanted) > MAX_DOCS_PER_CALL:
        raise DataError(
            f"forget takes at most {MAX_DOCS_PER_CALL} document ids per call, got {len(wanted)}"
        )
    bad = sum(1 for d in wanted if not is_id(d))
    if bad:
        # Never echo them: a "doc id" that is not id-shaped may be content.
        raise DataError(
            f"{bad} of {len(wanted)} document ids are not ids (<= 128 chars of letters, "
            "digits and ._:#@/+=-) (--doc-id)"
        )
    return wanted


def _check_known(bundle: bundle_io.IndexBundle, wanted: set[str]) -> None:
    known = (
        set(bundle.documents().column("doc_id").to_pylist())
        | set(bundle.chunks().column("doc_id").to_pylist())
        | {q.get("doc_id") for q in bundle.quarantine()}
    )
    unknown = len(wanted - known)
    if unknown:
        raise DataError(
            f"{unknown} of {len(wanted)} document ids are not in bundle {bundle.bundle_id} "
            "(nothing was changed)"
        )


def _bundle_lock(bundle_path: Path) -> Any:
    """Serialise erasures of one bundle (two at once would each drop only their own docs).
    The lock file sits beside the bundle: the bundle directory itself is replaced."""
    return exclusive_lock(bundle_path.parent / f".{bundle_path.name}.forget.lock")


def _without(
    old: bundle_io.IndexBundle, wanted: set[str], config: RAGConfig
) -> tuple[dict[str, Any], dict[str, int]]:
    """The bundle's contents minus `wanted`, and the counts of what went."""
    _check_known(old, wanted)  # again under the lock: a concurrent forget may have run
    chunks, documents, quarantine = old.chunks(), old.documents(), old.quarantine()
    chunk_docs = np.asarray(chunks.column("doc_id").to_pylist(), dtype=object)
    drop = np.isin(chunk_docs, list(wanted)) if len(chunk_docs) else np.zeros(0, bool)
    drop_rows = np.asarray(chunks.column("row_id").to_pylist(), np.int64)[drop]
    forgotten_chunks = set(
        np.asarray(chunks.column("chunk_id").to_pylist(), dtype=object)[drop].tolist()
    )
    kept_chunks = chunks.filter(pa.array(~drop))
    doc_keep = ~np.isin(
        np.asarray(documents.column("doc_id").to_pylist(), dtype=object), list(wanted)
    )
    kept_docs = documents.filter(pa.array(doc_keep))
    kept_quarantine = [q for q in quarantine if q.get("doc_id") not in wanted]

    index = old.vector_index(config.index)
    vectors_removed = index.remove_ids(drop_rows) if len(drop_rows) else 0
    if vectors_removed != len(drop_rows) or index.ntotal != kept_chunks.num_rows:
        raise BundleError(
            f"bundle {old.bundle_id}: {len(drop_rows)} chunks to forget but {vectors_removed} "
            f"vectors removed, {index.ntotal} left for {kept_chunks.num_rows} chunks; "
            "rebuild the bundle with a full ingest"
        )

    graph = old.graph()
    g = graph.graph
    nodes_before = set(g.nodes)
    edges_before = {
        (u, v, k): tuple(d.get("chunk_ids", ())) for u, v, k, d in g.edges(keys=True, data=True)
    }
    graph.remove_documents(wanted, embed_fn=_LazyEncoder(config))
    edges_after = {
        (u, v, k): tuple(d.get("chunk_ids", ())) for u, v, k, d in g.edges(keys=True, data=True)
    }
    _check_graph_clean(g, wanted, forgotten_chunks)

    counts = {
        "chunks_removed": int(drop.sum()),
        "vectors_removed": int(vectors_removed),
        "edges_removed": len(edges_before.keys() - edges_after.keys()),
        "edges_updated": sum(
            1 for e, cids in edges_after.items() if e in edges_before and edges_before[e] != cids
        ),
        "nodes_removed": len(nodes_before - set(g.nodes)),
        "quarantine_removed": len(quarantine) - len(kept_quarantine),
    }
    lexical = None
    if old.has_lexical():  # rebuilt over what is kept: BM25's statistics must forget the text too
        from rayrag.index.lexical import LexicalIndex

        params = old.manifest.get("lexical") or {}
        lexical = LexicalIndex.from_chunks(
            kept_chunks,
            old.text_format(),
            params.get("k1", config.index.bm25_k1),
            params.get("b", config.index.bm25_b),
        )
    new = {
        "chunks": kept_chunks,
        "documents": kept_docs,
        "quarantine": kept_quarantine,
        "index": index,
        "graph": graph,
        "pii_report": _pii_report(kept_docs, old.pii_report()),
        "lexical": lexical,
    }
    return new, counts


class _LazyEncoder:
    """The embedder's `encode`, loaded only if the graph needs it (a freed synonym slot to
    refill): most erasures touch no full synonym row and skip loading the model."""

    def __init__(self, config: RAGConfig) -> None:
        self.config = config
        self._encode: Any = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self._encode is None:
            from rayrag.index.embedder import Embedder

            self._encode = Embedder(self.config.embedding).encode
        return self._encode(texts)


def _check_graph_clean(g: Any, doc_ids: set[str], chunk_ids: set[str]) -> None:
    """Fail closed: no node or edge may still carry a forgotten doc or chunk id."""

    def dirty(data: dict[str, Any]) -> bool:
        return (
            data.get("doc_id") in doc_ids
            or bool(doc_ids.intersection(data.get("doc_ids", ())))
            or bool(chunk_ids.intersection(data.get("chunk_ids", ())))
            or bool(chunk_ids.intersection(data.get("support", {}) or {}))
        )

    bad = sum(1 for _, d in g.nodes(data=True) if dirty(d)) + sum(
        1 for *_, d in g.edges(data=True) if dirty(d)
    )
    if bad:
        raise BundleError(
            f"internal: {bad} graph nodes or edges still carry forgotten provenance; "
            "nothing was written"
        )


def _pii_report(documents: pa.Table, old_report: dict[str, Any]) -> dict[str, Any]:
    """Recount the PII report from the remaining documents (as ingest counts it)."""
    totals: Counter[str] = Counter()
    with_pii = 0
    for raw in documents.column("pii_counts").to_pylist():
        counts = json.loads(raw) if raw else {}
        totals.update(counts)
        with_pii += bool(counts)
    return {**old_report, "counts": dict(sorted(totals.items())), "documents_with_pii": with_pii}


def _bundle_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"b-{stamp}-{uuid.uuid4().hex[:8]}"


def _manifest(
    old: bundle_io.IndexBundle, new: dict[str, Any], bundle_id: str, audit_id: str, n_docs: int
) -> dict[str, Any]:
    from rayrag.pipelines.ingest import documents_digest

    manifest = json.loads(json.dumps(old.manifest))  # a deep copy: everything else is kept
    graph_stats = new["graph"].stats()
    counts = dict(manifest.get("counts", {}))
    counts.update(
        {
            "documents": new["documents"].num_rows,
            "quarantined": len(new["quarantine"]),
            "chunks": new["chunks"].num_rows,
            "vectors": int(new["index"].ntotal),
            "entities": int(graph_stats.get("entities", 0)),
            "edges": int(sum(v for k, v in graph_stats.items() if k.endswith("_edges"))),
            "processed_documents": 0,
            "reused_documents": new["documents"].num_rows,
            "removed_documents": n_docs,
        }
    )
    erased_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest.update(
        {
            "bundle_id": bundle_id,
            "parent_bundle_id": old.bundle_id,
            "counts": counts,
            "graph": graph_stats,
            "corpus_digest": documents_digest(new["documents"]),
            **(
                {"lexical": {**manifest["lexical"], "documents": new["lexical"].ntotal}}
                if new["lexical"] is not None and manifest.get("lexical")
                else {}
            ),
            **(
                {
                    "redaction": {
                        **manifest["redaction"],
                        "documents": bundle_io.policy_documents(
                            new["chunks"], manifest["redaction"]["default_policy"]
                        ),
                    }
                }
                if manifest.get("redaction", {}).get("enabled")
                else {}
            ),
            "erasures": [
                *manifest.get("erasures", []),
                {"audit_id": audit_id, "n_docs": n_docs, "at": erased_at},
            ],
            "written_at_unix": round(time.time(), 3),
        }
    )
    return manifest


def _sweep_old_copies(bundle_path: Path) -> int:
    """The swap deletes the previous directory with ignore_errors; make sure it is gone.
    Returns how many old copies could not be deleted (reported in the audit record)."""
    left = 0  # only this process's copies: another process's may be mid-swap
    for stale in bundle_path.parent.glob(f".{bundle_path.name}.old-{os.getpid()}-*"):
        shutil.rmtree(stale, ignore_errors=True)
        left += stale.exists()
    return left


def _purge_cache(root: Path, wanted: set[str], keep: Path) -> int:
    """Delete the tune-cache bundles under `root` whose documents include a forgotten one."""
    if not root.is_dir():
        return 0
    removed = 0
    for entry in sorted(root.iterdir()):
        docs = entry / bundle_io.DOCUMENTS
        if not docs.is_file() or entry.resolve() == keep.resolve():
            continue
        try:
            ids = set(pq.read_table(docs, columns=["doc_id"]).column("doc_id").to_pylist())
        except (pa.ArrowInvalid, OSError):
            ids = None  # unreadable: it may hold anything, so it goes too
        if ids is None or ids & wanted:
            # Renamed first so a sweep looking the bundle up never sees half of it.
            doomed = root / f".{entry.name}.forgotten-{uuid.uuid4().hex[:8]}"
            os.rename(entry, doomed)
            shutil.rmtree(doomed)
            removed += 1
    return removed
