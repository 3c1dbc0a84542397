"""Ingest: a corpus in, a versioned IndexBundle out — on Ray Data.

    read ─► validate ─► redact ─► chunk ─► extract triples ─► embed (actor pool)
         (quarantine)  (Presidio)  (tokens)  (spaCy)            (MiniLM)
      ─► FAISS index + knowledge graph ─► IndexBundle (atomic) ─► MLflow run

Incremental ingest (`previous=`) re-processes only new or changed documents (by id and
content digest), drops the stale chunks, vectors and graph edges of changed documents and
keeps everything else. The driver holds only what it must assemble (vectors, extractions);
the heavy per-document work runs in Ray Data actors and streams. `engine="local"` runs the
same stages in-process instead, for a caller that is itself a Ray task (rayrag.tune.bundles).
A folder or s3:// corpus of files (PDF, HTML, DOCX, Markdown, text) is read and parsed on
Ray Data too (`rayrag.data.files.reader`), or in-process with `engine="local"`.

    >>> result = ingest(
    ...     Path("corpus.jsonl"), Path("bundle"), load_config("rayrag/configs/demo.yaml")
    ... )
    >>> result.counts["chunks"]
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from rayrag.config import RAGConfig
from rayrag.data.readers import QuarantinedRow, document_digest, read_corpus
from rayrag.errors import BundleError, ConfigError, user_error_in
from rayrag.event_log import StageTimer, get_logger
from rayrag.index import bundle as bundle_io
from rayrag.index.embedder import TEXT_FORMAT_VERSIONS
from rayrag.index.lexical import TOKENIZER as LEXICAL_TOKENIZER
from rayrag.pipelines.ingest_report import log_ingest_plots
from rayrag.pipelines.ingest_stages import EmbedStage, ExtractStage, PrepareStage, document_to_row
from rayrag.ray_runtime import ensure_ray
from rayrag.tracking.tracker import Tracker, compose_run_name
from rayrag.types import Document

_log = get_logger("rayrag.ingest")
_PACKAGES = (
    "rayrag",
    "ray",
    "torch",
    "faiss-gpu",
    "faiss-cpu",
    "sentence-transformers",
    "presidio-analyzer",
    "presidio-anonymizer",
    "spacy",
    "networkx",
    "mlflow",
    "pyarrow",
)

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[rayrag ingest] {message}", file=sys.stderr, flush=True)


@dataclass
class IngestResult:
    bundle_path: Path
    manifest: dict[str, Any]
    quarantined: list[QuarantinedRow] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.manifest["counts"])

    def summary(self) -> dict[str, Any]:
        """The one JSON object `rayrag ingest` prints last."""
        return {
            **self.counts,
            "bundle": str(self.bundle_path),
            "bundle_id": self.manifest["bundle_id"],
            "mlflow_run_id": self.manifest.get("mlflow_run_id"),
        }


@dataclass
class _Processed:
    """What the Ray Data pipeline returns for the documents it processed."""

    chunk_rows: dict[str, list[Any]]
    vectors: np.ndarray
    extractions: list[Any]
    pii_counts: dict[str, dict[str, int]]


def ingest_fingerprint(config: RAGConfig) -> str:
    """Hash of the config sections that shape chunks and vectors: an incremental ingest
    may only extend a bundle built with the same ones."""
    embedding: dict[str, Any] = {
        "model": config.embedding.model,
        "model_path": config.embedding.model_path,
        "dim": config.embedding.dim,
    }
    if config.embedding.max_seq_length is not None:  # only when set: older fingerprints stay valid
        embedding["max_seq_length"] = config.embedding.max_seq_length
    if (
        config.embedding.text_format != "chunk"
    ):  # likewise: bundles before it embedded the chunk alone
        embedding["text_format"] = config.embedding.text_format
    parts = {
        "chunking": config.chunking.model_dump(mode="json"),
        "embedding": embedding,
        "redaction": config.governance.redaction.model_dump(mode="json"),
        "kg": config.kg.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def redaction_manifest(config: RAGConfig, chunks: pa.Table) -> dict[str, Any]:
    """What the manifest records about redaction: the policies (entity types and operators,
    never keys), the rule that picked them, and how many documents each one redacted; the
    query side redacts questions from this, not from whatever config it runs with."""
    redaction = config.governance.redaction
    dumped = redaction.model_dump(mode="json")
    return {
        "enabled": redaction.enabled,
        **{key: dumped[key] for key in bundle_io.RECORDED_REDACTION_KEYS},
        "documents": bundle_io.policy_documents(chunks, redaction.default_policy)
        if redaction.enabled
        else {},
    }


def run_pipeline(documents: list[Document], config: RAGConfig) -> _Processed:
    """Redact, chunk, embed and extract on Ray Data; return rows in corpus order."""
    import ray

    ensure_ray(config)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    config_json = config.model_dump_json()
    rows = [document_to_row(doc, i) for i, doc in enumerate(documents)]
    stage_cpus = config.ingest.stage_num_cpus
    ds = ray.data.from_items(
        rows, override_num_blocks=max(1, min(len(rows) // config.ingest.read_batch_size, 64))
    )
    fused = config.ingest.fuse_text_stages
    ds = ds.map_batches(
        PrepareStage,
        fn_constructor_kwargs={"config_json": config_json, "extract": fused},
        batch_size=config.ingest.read_batch_size,
        batch_format="numpy",
        compute=_text_stage_pool(config),
        num_cpus=stage_cpus,
    )
    embed_gpus = 1 if _use_gpu_for_embedding(config) else 0
    ds = ds.map_batches(
        EmbedStage,
        fn_constructor_kwargs={
            "config_json": config_json,
            # Its CPU reservation, not every core: the text actors hold the others, and
            # OpenMP threads on busy cores cost more than they add (docs/DECISIONS.md).
            "num_threads": config.embedding.num_threads or max(1, round(config.embedding.num_cpus)),
        },
        batch_size=config.embedding.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.embedding.num_actors),
        num_cpus=config.embedding.num_cpus,
        num_gpus=embed_gpus,
    )
    if not fused:
        ds = ds.map_batches(
            ExtractStage,
            fn_constructor_kwargs={"config_json": config_json},
            batch_size=config.ingest.read_batch_size,
            batch_format="numpy",
            compute=_text_stage_pool(config),
            num_cpus=stage_cpus,
        )
    collected: dict[str, list[Any]] = {}
    vectors: list[np.ndarray] = []
    try:
        for batch in ds.iter_batches(batch_size=1024, batch_format="numpy"):
            _collect(batch, collected, vectors)
    except Exception as exc:
        user_error = user_error_in(exc)
        if user_error is not None:
            raise user_error from None
        raise
    return _in_corpus_order(collected, vectors, config)


def text_actor_range(config: RAGConfig, cluster_cpus: float) -> tuple[int, int]:
    """(min, max) redaction/KG actors: `prepare_actors_max`, or when unset one actor per
    cluster CPU that the embedding actors do not reserve (spaCy keeps one core busy per
    actor; more actors than free cores only add model loads), never below the minimum."""
    low = config.ingest.prepare_actors_min
    high = config.ingest.prepare_actors_max
    if high is None:
        embedding = config.embedding
        high = max(low, int(cluster_cpus - embedding.num_actors * embedding.num_cpus))
    return low, high


def _text_stage_pool(config: RAGConfig) -> Any:
    """The redaction/KG actor pool: `prepare_actors_min` actors from the start, scaled up
    while batches queue (the slowest stage grows with the cluster)."""
    import ray

    low, high = text_actor_range(config, ray.cluster_resources().get("CPU", 1.0))
    if low == high:
        return ray.data.ActorPoolStrategy(size=low)
    return ray.data.ActorPoolStrategy(min_size=low, max_size=high)


def run_local(documents: list[Document], config: RAGConfig) -> _Processed:
    """The same stages as `run_pipeline`, run one batch after another in this process.

    For a caller that is itself a Ray task (a tuning sweep building one bundle per
    chunking config): Ray Data actor pools started inside a 1-CPU task wait for CPUs its
    siblings hold and deadlock on a small machine.
    """
    config_json = config.model_dump_json()
    fused = config.ingest.fuse_text_stages
    prepare = PrepareStage(config_json, extract=fused)
    embed = EmbedStage(config_json)
    extract = None if fused else ExtractStage(config_json)
    collected: dict[str, list[Any]] = {}
    vectors: list[np.ndarray] = []
    read_size, embed_size = config.ingest.read_batch_size, config.embedding.batch_size
    for first in range(0, len(documents), read_size):
        rows = [
            document_to_row(doc, first + i)
            for i, doc in enumerate(documents[first : first + read_size])
        ]
        chunks = _numpy_batch(
            prepare(_numpy_batch({key: [row[key] for row in rows] for key in rows[0]}))
        )
        for start in range(0, len(chunks["chunk_id"]), embed_size):
            batch = embed(
                {key: column[start : start + embed_size] for key, column in chunks.items()}
            )
            _collect(extract(batch) if extract is not None else batch, collected, vectors)
    return _in_corpus_order(collected, vectors, config)


def _numpy_batch(columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Columns as Ray Data's numpy batch format has them; list cells stay one object each."""
    batch = {}
    for key, values in columns.items():
        if any(isinstance(value, list) for value in values):
            column = np.empty(len(values), dtype=object)
            column[:] = values
            batch[key] = column
        else:
            batch[key] = np.asarray(values)
    return batch


def _collect(
    batch: dict[str, np.ndarray], collected: dict[str, list[Any]], vectors: list[np.ndarray]
) -> None:
    for key, column in batch.items():
        if key == "embedding":
            vectors.append(np.asarray(column, dtype=np.float32))
        else:
            collected.setdefault(key, []).extend(column.tolist())


def _in_corpus_order(
    collected: dict[str, list[Any]], vectors: list[np.ndarray], config: RAGConfig
) -> _Processed:
    """Collected stage output -> `_Processed` with rows in corpus order (by document
    position, then chunk index), so row ids do not depend on how batches were scheduled."""
    if not collected:
        return _Processed({}, np.zeros((0, config.embedding.dim), np.float32), [], {})
    stacked = (
        np.concatenate(vectors) if vectors else np.zeros((0, config.embedding.dim), np.float32)
    )
    order = sorted(
        range(len(collected["chunk_id"])),
        key=lambda i: (collected["position"][i], collected["chunk_index"][i]),
    )
    ordered = {key: [column[i] for i in order] for key, column in collected.items()}
    from rayrag.index.kg_extract import ChunkExtraction

    extractions = [ChunkExtraction.from_dict(json.loads(e)) for e in ordered.pop("extraction")]
    pii = {
        doc_id: json.loads(raw)
        for doc_id, raw in zip(ordered["doc_id"], ordered["doc_pii"], strict=True)
        if raw
    }
    return _Processed(ordered, stacked[order], extractions, pii)


def _use_gpu_for_embedding(config: RAGConfig) -> bool:
    if config.embedding.device == "cpu":
        return False
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def _file_corpus(corpus: str | Path) -> bool:
    """A folder or s3:// prefix of document files (read on Ray Data), not a JSONL file."""
    return (isinstance(corpus, str) and "://" in corpus) or Path(corpus).is_dir()


def ingest(
    corpus: str | Path,
    out: Path,
    config: RAGConfig,
    *,
    previous: Path | None = None,
    strict: bool | None = None,
    delete_missing: bool = False,
    tracker: Tracker | None = None,
    progress: Progress = _stderr,
    engine: str = "ray_data",
) -> IngestResult:
    """Run the whole ingest; the bundle at `out` is replaced atomically at the end.

    `engine` runs the stages on Ray Data actor pools ("ray_data") or in this process
    ("local", `run_local`: for callers that are already Ray tasks); the bundles are equal.
    """
    from rayrag.governance.privacy.redaction import read_secrets

    engines = {"ray_data": run_pipeline, "local": run_local}
    if engine not in engines:
        raise ConfigError(f"engine must be 'ray_data' or 'local', got {engine!r}")

    from rayrag.index.embedder import resolve_model

    read_secrets(config.governance.redaction)  # fail in one line before any worker starts
    embedder = resolve_model(config.embedding)
    timer = StageTimer()
    strict = config.ingest.strict if strict is None else strict
    with timer("read"):
        if engine == "ray_data" and _file_corpus(corpus):
            ensure_ray(config)  # the files are read and parsed on Ray Data
        read = read_corpus(
            corpus,
            strict=strict,
            max_doc_chars=config.ingest.max_doc_chars,
            files=config.ingest.files,
            engine=engine,
        )
    progress(f"read {len(read.documents)} documents, quarantined {len(read.quarantined)}")
    digests = {doc.id: document_digest(doc) for doc in read.documents}

    old = _load_previous(previous)
    if old is not None and old.manifest.get("ingest_fingerprint") != ingest_fingerprint(config):
        raise BundleError(
            f"bundle {previous} was built with different chunking, embedding, redaction "
            "or KG settings; run a full ingest instead of --bundle"
        )
    old_digests = old.document_digests() if old is not None else {}
    to_process = [doc for doc in read.documents if old_digests.get(doc.id) != digests[doc.id]]
    stale_docs = {doc.id for doc in to_process if doc.id in old_digests}
    if delete_missing:
        stale_docs |= set(old_digests) - set(digests)
    reused = len(old_digests) - len(stale_docs)
    progress(
        f"processing {len(to_process)} documents ({reused} "
        f"reused, {len(stale_docs)} replaced or removed)"
    )

    tracker = tracker or Tracker(config.tracking)
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with tracker.start_run(
        "ingest",
        config,
        tags={"corpus_source_digest": read.source_digest},
        run_name=compose_run_name("ingest", config, engine, Path(config.embedding.model).name),
    ) as run:
        with timer("pipeline"):
            processed = (
                engines[engine](to_process, config)
                if to_process
                else _Processed({}, np.zeros((0, config.embedding.dim), np.float32), [], {})
            )
        progress(f"pipeline produced {len(processed.chunk_rows.get('chunk_id', []))} chunks")
        with timer("assemble"):
            assembled = _assemble(
                old,
                stale_docs,
                processed,
                read.documents,
                to_process,
                digests,
                config,
                created_at,
                progress,
            )
        bundle_id = f"b-{created_at.replace(':', '').replace('-', '')[:15]}-{uuid.uuid4().hex[:8]}"
        manifest = _manifest(
            config,
            bundle_id,
            created_at,
            old,
            assembled,
            read,
            to_process,
            reused,
            stale_docs,
            timer,
            run.run_id,
            embedder.name,
        )
        with timer("write"):
            bundle_io.write_bundle(
                out,
                {
                    bundle_io.CHUNKS: bundle_io.write_table(assembled["chunks"]),
                    bundle_io.DOCUMENTS: bundle_io.write_table(assembled["documents"]),
                    bundle_io.VECTORS: assembled["index"].save,
                    **(
                        {bundle_io.LEXICAL: assembled["lexical"].save}
                        if assembled["lexical"] is not None
                        else {}
                    ),
                    bundle_io.GRAPH: assembled["graph"].save,
                    bundle_io.PII_REPORT: bundle_io.write_json_file(assembled["pii_report"]),
                    bundle_io.QUARANTINE: bundle_io.write_jsonl_file(
                        [q.to_dict() for q in read.quarantined]
                    ),
                },
                manifest,
            )
        manifest["stage_seconds"] = {k: round(v, 3) for k, v in timer.seconds.items()}
        run.set_tags({"bundle_id": bundle_id, "corpus_digest": manifest["corpus_digest"]})
        run.log_metrics(
            {
                **{f"count_{k}": v for k, v in manifest["counts"].items()},
                **{f"pii_{k}": v for k, v in assembled["pii_report"]["counts"].items()},
                **{f"seconds_{k}": v for k, v in manifest["stage_seconds"].items()},
            }
        )
        run.log_dict(manifest, "manifest.json")
        run.log_dict(assembled["pii_report"], "pii_report.json")
        log_ingest_plots(
            run, assembled["chunks"].column("doc_id").to_pylist(), assembled["pii_report"]["counts"]
        )
        # The input, by digest (a folder or s3:// corpus: the corpus_source_digest tag).
        if not _file_corpus(corpus) and Path(corpus).is_file():
            run.log_dataset(Path(corpus), "corpus", "ingest")
    _log.info("ingest_done", extra={"fields": {"bundle_id": bundle_id, **manifest["counts"]}})
    return IngestResult(bundle_path=out, manifest=manifest, quarantined=read.quarantined)


def _load_previous(path: Path | None) -> bundle_io.IndexBundle | None:
    return bundle_io.IndexBundle.load(path) if path is not None else None


def _assemble(
    old: bundle_io.IndexBundle | None,
    stale_docs: set[str],
    processed: _Processed,
    documents: list[Document],
    to_process: list[Document],
    digests: dict[str, str],
    config: RAGConfig,
    created_at: str,
    progress: Progress,
) -> dict[str, Any]:
    """Merge what was kept from the previous bundle with what was just processed."""
    from rayrag.index.embedder import Embedder
    from rayrag.index.graph import KnowledgeGraph
    from rayrag.index.lexical import LexicalIndex
    from rayrag.index.vector import VectorIndex

    rows = processed.chunk_rows
    n_new = len(rows.get("chunk_id", []))
    if old is not None:
        old_chunks = old.chunks()
        stale_mask = (
            np.isin(
                np.asarray(old_chunks.column("doc_id").to_pylist(), dtype=object), list(stale_docs)
            )
            if stale_docs
            else np.zeros(old_chunks.num_rows, bool)
        )
        stale_rows = np.asarray(old_chunks.column("row_id").to_pylist(), np.int64)[stale_mask]
        kept_chunks = old_chunks.filter(pa.array(~stale_mask))
        next_row = int(max(old_chunks.column("row_id").to_pylist(), default=-1)) + 1
    else:
        stale_rows = np.zeros(0, np.int64)
        kept_chunks = pa.Table.from_pylist([], schema=bundle_io.CHUNK_SCHEMA)
        next_row = 0
    new_ids = np.arange(next_row, next_row + n_new, dtype=np.int64)
    new_chunks = pa.Table.from_pydict(
        {
            "row_id": new_ids,
            "chunk_id": rows.get("chunk_id", []),
            "doc_id": rows.get("doc_id", []),
            "title": [
                t if h else None
                for t, h in zip(rows.get("title", []), rows.get("has_title", []), strict=True)
            ],
            "text": rows.get("text", []),
            "start": rows.get("start", []),
            "end": rows.get("end", []),
            "acl": rows.get("acl", []),
            "metadata": rows.get("metadata", []),
        },
        schema=bundle_io.CHUNK_SCHEMA,
    )
    chunks = pa.concat_tables([kept_chunks, new_chunks])

    progress(f"building FAISS index over {chunks.num_rows} vectors")
    if old is not None:
        index = old.vector_index(config.index)
        if len(stale_rows):
            index.remove_ids(stale_rows)
        if n_new:
            index.add(processed.vectors, new_ids)
    else:
        index = VectorIndex(config.index, dim=config.embedding.dim)
        index.build(processed.vectors, new_ids)

    progress(f"building knowledge graph from {len(processed.extractions)} chunk extractions")
    embedder = Embedder(config.embedding)
    if old is not None:
        graph = old.graph()
        if stale_docs:
            graph.remove_documents(stale_docs, embed_fn=embedder.encode)
        if processed.extractions:
            graph.add(
                processed.extractions,
                config=config.kg,
                embed_fn=embedder.encode,
                extracted_at=created_at,
            )
    else:
        graph = KnowledgeGraph.build(
            processed.extractions,
            config=config.kg,
            embed_fn=embedder.encode,
            extracted_at=created_at,
        )

    lexical = None
    if config.index.lexical:
        progress(f"building BM25 index over {chunks.num_rows} passages")
        lexical = LexicalIndex.from_chunks(
            chunks, config.embedding.text_format, config.index.bm25_k1, config.index.bm25_b
        )

    documents_table = _documents_table(
        old, stale_docs, documents, to_process, digests, processed, rows
    )
    pii_totals: Counter[str] = Counter()
    for raw in documents_table.column("pii_counts").to_pylist():
        pii_totals.update(json.loads(raw))
    pii_report = {
        "counts": dict(sorted(pii_totals.items())),
        "documents_with_pii": sum(
            1 for raw in documents_table.column("pii_counts").to_pylist() if json.loads(raw)
        ),
        "entities_analysed": list(config.governance.redaction.analysed_entities),
        "operators": dict(config.governance.redaction.operators),
        "policies": {
            name: list(config.governance.redaction.policy_entities(name))
            for name in config.governance.redaction.policy_names
        },
    }
    return {
        "chunks": chunks,
        "documents": documents_table,
        "index": index,
        "graph": graph,
        "pii_report": pii_report,
        "lexical": lexical,
    }


def _documents_table(
    old: bundle_io.IndexBundle | None,
    stale_docs: set[str],
    documents: list[Document],
    to_process: list[Document],
    digests: dict[str, str],
    processed: _Processed,
    rows: dict[str, list[Any]],
) -> pa.Table:
    n_chunks = Counter(rows.get("doc_id", []))
    titles = {
        d: (t if h else None)
        for d, t, h in zip(
            rows.get("doc_id", []), rows.get("title", []), rows.get("has_title", []), strict=True
        )
    }
    new = pa.Table.from_pylist(
        [
            {
                "doc_id": doc.id,
                "digest": digests[doc.id],
                "title": titles.get(doc.id),
                "acl": list(doc.acl),
                "metadata": json.dumps(doc.metadata, sort_keys=True),
                "updated_at": doc.updated_at,
                "n_chunks": n_chunks.get(doc.id, 0),
                "pii_counts": json.dumps(processed.pii_counts.get(doc.id, {}), sort_keys=True),
            }
            for doc in to_process
        ],
        schema=bundle_io.DOCUMENT_SCHEMA,
    )
    if old is None:
        return new
    old_docs = old.documents()
    keep = (
        ~np.isin(np.asarray(old_docs.column("doc_id").to_pylist(), dtype=object), list(stale_docs))
        if stale_docs
        else np.ones(old_docs.num_rows, bool)
    )
    return pa.concat_tables([old_docs.filter(pa.array(keep)), new])


def documents_digest(documents: pa.Table) -> str:
    pairs = sorted(
        zip(
            documents.column("doc_id").to_pylist(),
            documents.column("digest").to_pylist(),
            strict=True,
        )
    )
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()


def _package_versions() -> dict[str, str]:
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _manifest(
    config: RAGConfig,
    bundle_id: str,
    created_at: str,
    old: bundle_io.IndexBundle | None,
    assembled: dict[str, Any],
    read: Any,
    to_process: list[Document],
    reused: int,
    stale_docs: set[str],
    timer: StageTimer,
    run_id: str | None,
    embedder: str,
) -> dict[str, Any]:
    graph_stats = assembled["graph"].stats()
    index = assembled["index"]
    counts = {
        "documents": assembled["documents"].num_rows,
        "quarantined": len(read.quarantined),
        "chunks": assembled["chunks"].num_rows,
        "vectors": int(index.ntotal),
        "entities": int(graph_stats.get("entities", 0)),
        "edges": int(sum(v for k, v in graph_stats.items() if k.endswith("_edges"))),
        "processed_documents": len(to_process),
        "reused_documents": reused,
        "removed_documents": len(stale_docs),
    }
    return {
        "format_version": bundle_io.FORMAT_VERSION,
        "bundle_id": bundle_id,
        "parent_bundle_id": old.bundle_id if old is not None else None,
        "created_at": created_at,
        "config_hash": config.config_hash,
        "config_name": config.name,
        "ingest_fingerprint": ingest_fingerprint(config),
        "corpus_digest": documents_digest(assembled["documents"]),
        "corpus_source_digest": read.source_digest,
        "counts": counts,
        "graph": graph_stats,
        "redaction": redaction_manifest(config, assembled["chunks"]),
        "embedder": {
            "name": embedder,
            "dim": config.embedding.dim,
            "normalized": True,
            "text_format": config.embedding.text_format,
            "text_format_version": TEXT_FORMAT_VERSIONS[config.embedding.text_format],
        },
        "lexical": (
            {
                "scorer": "bm25s",
                "k1": config.index.bm25_k1,
                "b": config.index.bm25_b,
                "tokenizer": LEXICAL_TOKENIZER,
                "documents": assembled["lexical"].ntotal,
            }
            if assembled["lexical"] is not None
            else None
        ),
        "faiss_factory": index.factory_string,
        "package_versions": _package_versions(),
        "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "mlflow_run_id": run_id,
        "written_at_unix": round(time.time(), 3),
    }
