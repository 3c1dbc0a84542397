"""Bench `ingest`: the whole Ray Data ingest pipeline vs a bare `encode()` of the same chunks.

Competitors, alternating in one process on the same corpus:
  * pipeline — `rayrag.pipelines.ingest.ingest` end to end (read, validate, Presidio
    redaction, chunking, embedding actor pool, triple extraction, FAISS, graph, bundle write),
    model loading in the Ray actors included, as every real ingest pays it;
  * raw_encode — one in-process SentenceTransformer `encode()` of exactly the chunks the
    pipeline produced, model already loaded (the embedding cost alone);
  * sequential_stages — the same per-batch work as the pipeline (redact + chunk, embed,
    extract) in this process, one stage after the other, models already loaded: what the
    pipeline's work costs without Ray.
`ratios.pipeline_vs_raw_encode` = pipeline chunks/s ÷ raw chunks/s: how close the whole
pipeline gets to the cost of embedding alone (1.0 = everything else is free).
`ratios.pipeline_vs_sequential_stages` > 1 means Ray's streaming over the stages beats
doing the same work serially; < 1 is what Ray costs on top.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rayrag.bench import alternate, median
from rayrag.config import RAGConfig, resolve_config


def _corpus(workdir: Path, copies: int, seed: int, documents: int | None = None) -> Path:
    """The demo corpus (its first `documents` documents when given), `copies` times over with
    distinct ids (same cost per copy)."""
    from rayrag.data.demo_corpus import generate_demo_corpus

    demo = generate_demo_corpus(workdir / "demo", seed=seed)
    rows = [
        json.loads(line)
        for line in demo.corpus_path.read_text(encoding="utf-8").splitlines()
        if line
    ]
    rows = rows[:documents] if documents is not None else rows
    path = workdir / "corpus.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for copy in range(copies):
            for row in rows:
                handle.write(json.dumps({**row, "id": f"{row['id']}~{copy}"}) + "\n")
    return path


def _sequential_stages(corpus: Path, config: RAGConfig):
    """The pipeline's per-batch work in-process, serially, with warm models."""
    from rayrag.data.readers import read_corpus
    from rayrag.index.embedder import Embedder
    from rayrag.index.kg_extract import TripleExtractor
    from rayrag.pipelines.ingest_stages import DocumentPreparer

    preparer, extractor, embedder = (
        DocumentPreparer(config),
        TripleExtractor(config.kg),
        Embedder(config.embedding),
    )
    for component in (preparer, extractor, embedder):
        component.warm_up()
    batch = config.ingest.read_batch_size

    def run_stages() -> None:
        documents = read_corpus(corpus).documents
        for start in range(0, len(documents), batch):
            chunks = preparer(documents[start : start + batch]).chunks
            embedder.encode([c.text for c in chunks])
            extractor(chunks)

    return run_stages


def run(
    quick: bool = False, config: RAGConfig | None = None, documents: int | None = None
) -> dict[str, Any]:
    """The bench record; `documents` cuts the demo corpus to its first N (a test's small run)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from rayrag.index.bundle import IndexBundle
    from rayrag.index.embedder import resolve_model
    from rayrag.pipelines.ingest import ingest
    from rayrag.ray_runtime import ensure_ray

    os.environ.setdefault("RAYRAG_HMAC_KEY", "bench-only-hmac-key")
    os.environ.setdefault("RAYRAG_ENCRYPTION_KEY", "bench-only-key-0123456789abcdef"[:32])
    config = config or resolve_config("demo", ["tracking.enabled=false"])
    copies, rounds = (1, 2) if quick else (3, 3)
    workdir = Path(tempfile.mkdtemp(prefix="rayrag-bench-ingest-"))
    threads_before = torch.get_num_threads()
    try:
        corpus = _corpus(workdir, copies, config.seed, documents)
        ensure_ray(config)  # cluster start-up is paid once, like a long-running Ray job
        outputs = {"n": 0}

        def pipeline() -> None:
            out = workdir / f"bundle-{outputs['n']}"
            outputs["n"] += 1
            ingest(corpus, out, config, progress=lambda _m: None)

        pipeline()  # warm-up: first Ray Data execution imports and caches the modules
        chunk_texts = IndexBundle.load(workdir / "bundle-0").chunks().column("text").to_pylist()
        model = SentenceTransformer(resolve_model(config.embedding).path, device="cpu")
        torch.set_num_threads(os.cpu_count() or 1)

        def raw_encode() -> None:
            model.encode(
                chunk_texts, batch_size=config.embedding.batch_size, normalize_embeddings=True
            )

        raw_encode()  # warm-up
        sequential = _sequential_stages(corpus, config)
        started = time.perf_counter()
        seconds = alternate(
            {"pipeline": pipeline, "raw_encode": raw_encode, "sequential_stages": sequential},
            rounds,
        )
        wall = time.perf_counter() - started
        n_chunks = len(chunk_texts)
        pipeline_rate = n_chunks / median(seconds["pipeline"])
        raw_rate = n_chunks / median(seconds["raw_encode"])
        stage_seconds = IndexBundle.load(workdir / f"bundle-{outputs['n'] - 1}").manifest[
            "stage_seconds"
        ]
        return {
            "bench": "ingest",
            "quick": quick,
            "documents": sum(1 for _ in corpus.open(encoding="utf-8")),
            "chunks": n_chunks,
            "rounds": rounds,
            "seconds": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
            "chunks_per_s": {
                "pipeline": round(pipeline_rate, 2),
                "raw_encode": round(raw_rate, 2),
                "sequential_stages": round(n_chunks / median(seconds["sequential_stages"]), 2),
            },
            "last_pipeline_stage_seconds": stage_seconds,
            "wall_seconds": round(wall, 2),
            "ratios": {
                "pipeline_vs_raw_encode": round(pipeline_rate / raw_rate, 3),
                "pipeline_vs_sequential_stages": round(
                    median(seconds["sequential_stages"]) / median(seconds["pipeline"]), 3
                ),
            },
        }
    finally:
        torch.set_num_threads(threads_before)
        shutil.rmtree(workdir, ignore_errors=True)
