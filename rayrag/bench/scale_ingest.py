"""Scale curve `ingest`: wall time of the real Ray Data ingest against corpus size.

One curve for `rayrag bench scale` (format in `rayrag.bench.scale`): x = corpus tokens,
y = seconds, series

    pipeline    `rayrag.pipelines.ingest.ingest` end to end (read, redaction, chunking,
                embedding actor pool, triples, FAISS, graph, bundle write), the actors'
                model loads included, as every real ingest pays them
    embed_only  one in-process SentenceTransformer `encode()` of the chunks that ingest
                produced, model already loaded: the embedding share of the slope

The corpora are distinct demo worlds (`generate_demo_corpus` with seeds 0, 1, 2, ...; ids
prefixed with the seed), shuffled together and cut to each size, so no document repeats and
nothing can be served from a digest. A straight line y = a + b*x through the pipeline
points splits the cost into a fixed part (actor start-up and model loads: `ingest_fixed_s`)
and a per-unit part (`ingest_s_per_1k_tokens`, `ingest_s_per_doc`) — the figures
docs/SCALING.md projects from. Ray is started once with 2 CPUs (or reused) for all sizes;
tracking is off, so nothing is written to mlflow.db.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FULL_SIZES = (75, 150, 300, 600)  # documents (the run's time: docs/DECISIONS.md)
QUICK_SIZES = (6, 12)
RAY_CPUS = 2


def _log(message: str) -> None:
    print(f"[bench scale ingest] {message}", file=sys.stderr, flush=True)


def build_corpus(workdir: Path, n_docs: int, seed: int = 0) -> Path:
    """WORKDIR/corpus-N.jsonl: `n_docs` documents drawn from as many demo worlds as needed."""
    from rayrag.data.demo_corpus import generate_demo_corpus

    rows: list[dict[str, Any]] = []
    world = 0
    while len(rows) < n_docs:
        demo = generate_demo_corpus(workdir / f"world-{world}", seed=seed + world)
        for line in demo.corpus_path.read_text(encoding="utf-8").splitlines():
            if line:
                row = json.loads(line)
                rows.append({**row, "id": f"s{world}-{row['id']}"})
        world += 1
    # Shuffled so every size mixes document types (the demo writes them grouped by type).
    random.Random(seed).shuffle(rows)
    path = workdir / f"corpus-{n_docs}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows[:n_docs]), encoding="utf-8")
    return path


def count_tokens(corpus: Path, tokenizer: Any) -> int:
    """Embedder-tokenizer tokens of the documents' text (no special tokens, titles not counted)."""
    texts = [
        json.loads(line)["text"] for line in corpus.read_text(encoding="utf-8").splitlines() if line
    ]
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return int(sum(len(ids) for ids in encoded))


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line y = a + b*x."""
    if len(xs) < 2:
        raise ValueError("a line needs at least two points")
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def _ensure_ray(config: Any) -> bool:
    """Start Ray with RAY_CPUS CPUs unless one is running; True when started here."""
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        num_cpus=config.ingest.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def _embed_only(chunk_texts: dict[int, list[str]], config: Any) -> tuple[dict[int, float], float]:
    """Seconds of one warm in-process `encode()` per size, and the model's load seconds."""
    import torch
    from sentence_transformers import SentenceTransformer

    from rayrag.index.embedder import resolve_model

    started = time.perf_counter()
    model = SentenceTransformer(resolve_model(config.embedding).path, device="cpu")
    torch.set_num_threads(RAY_CPUS)  # the cores the pipeline's Ray had
    model.encode(["warm up"], normalize_embeddings=True)
    load_seconds = time.perf_counter() - started
    seconds = {}
    for n_docs, texts in chunk_texts.items():
        t = time.perf_counter()
        model.encode(texts, batch_size=config.embedding.batch_size, normalize_embeddings=True)
        seconds[n_docs] = time.perf_counter() - t
    return seconds, load_seconds


def curve(
    quick: bool = False,
    sizes: tuple[int, ...] | None = None,
    embed_only: bool = True,
    warmup: bool = False,
) -> dict[str, Any]:
    """The ingest curve at `sizes` documents (default FULL_SIZES, QUICK_SIZES when quick).

    `warmup` runs one small ingest first and discards it (first-execution caches); off by
    default: the driver's imports are done before timing, and each ingest starts its own
    actors anyway, so the first point pays only what every ingest pays."""
    from rayrag.config import resolve_config
    from rayrag.errors import ConfigError
    from rayrag.index.bundle import IndexBundle
    from rayrag.index.embedder import load_tokenizer
    from rayrag.pipelines.ingest import ingest

    sizes = tuple(sorted(sizes or (QUICK_SIZES if quick else FULL_SIZES)))
    if len(sizes) < 2 or sizes[0] < 1:
        raise ConfigError(f"the ingest curve needs at least two sizes >= 1 document, got {sizes}")
    os.environ.setdefault("RAYRAG_HMAC_KEY", "bench-only-hmac-key")
    os.environ.setdefault("RAYRAG_ENCRYPTION_KEY", "bench-only-key-0123456789abcdef"[:32])
    config = resolve_config("demo", ["tracking.enabled=false", f"ingest.num_cpus={RAY_CPUS}"])
    tokenizer = load_tokenizer(config.embedding)
    workdir = Path(tempfile.mkdtemp(prefix="rayrag-scale-ingest-"))
    load_start = os.getloadavg()[0]  # other work on the machine, for reading the figures
    started_ray = False
    try:
        import ray

        started_ray = _ensure_ray(config)
        cores = int(ray.cluster_resources().get("CPU", 0))
        quiet = lambda _message: None  # noqa: E731 — ingest's progress lines are not the bench's
        # The driver's own first-use imports (FAISS, graph, the embedder it loads to link
        # entities) are paid once per process, not per ingest: outside the timings.
        import sentence_transformers  # noqa: F401

        import rayrag.index.embedder  # noqa: F401
        import rayrag.index.graph  # noqa: F401
        import rayrag.index.vector  # noqa: F401

        if warmup:
            ingest(
                build_corpus(workdir, min(8, sizes[0]), config.seed),
                workdir / "bundle-warmup",
                config,
                progress=quiet,
            )
        points, chunk_texts = [], {}
        for n_docs in sizes:
            corpus = build_corpus(workdir, n_docs, config.seed)
            tokens = count_tokens(corpus, tokenizer)
            out = workdir / f"bundle-{n_docs}"
            t = time.perf_counter()
            result = ingest(corpus, out, config, progress=quiet)
            seconds = time.perf_counter() - t
            chunk_texts[n_docs] = IndexBundle.load(out).chunks().column("text").to_pylist()
            points.append(
                {
                    "documents": n_docs,
                    "tokens": tokens,
                    "chunks": len(chunk_texts[n_docs]),
                    "seconds": round(seconds, 3),
                    "stage_seconds": result.manifest["stage_seconds"],
                }
            )
            shutil.rmtree(out, ignore_errors=True)
            _log(f"{n_docs} documents, {tokens} tokens: {seconds:.1f} s")
    finally:
        if started_ray:
            import ray

            ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)

    series = {"pipeline": [[p["tokens"], p["seconds"]] for p in points]}
    meta: dict[str, Any] = {}
    if embed_only:
        embed_seconds, load_seconds = _embed_only(chunk_texts, config)
        series["embed_only"] = [
            [p["tokens"], round(embed_seconds[p["documents"]], 3)] for p in points
        ]
        meta["embed_only_model_load_s"] = round(load_seconds, 2)
    tokens, docs, secs = ([p[k] for p in points] for k in ("tokens", "documents", "seconds"))
    fixed, per_token = linear_fit(tokens, secs)
    fixed_by_docs, per_doc = linear_fit(docs, secs)
    per_unit = {
        "ingest_fixed_s": round(fixed, 3),
        "ingest_s_per_1k_tokens": round(per_token * 1000, 4),
        "ingest_s_per_doc": round(per_doc, 5),
    }
    if embed_only:
        _, embed_per_token = linear_fit(tokens, [y for _, y in series["embed_only"]])
        per_unit["embed_s_per_1k_tokens"] = round(embed_per_token * 1000, 4)
    meta.update(
        {
            "x_counts": "document text tokens by the embedder's tokenizer "
            f"({config.embedding.model}, no special tokens, titles excluded)",
            "fit": "least squares y = a + b*x over the pipeline points; a = ingest_fixed_s, "
            "b = ingest_s_per_1k_tokens / 1000 (ingest_s_per_doc: the same fit against documents)",
            "fixed_s_by_documents_fit": round(fixed_by_docs, 3),
            "corpus": "distinct demo worlds (seeds 0..k, ids prefixed), shuffled, cut to each size",
            "points": points,
            "load_avg_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            "ray_cpus": cores,
            "machine_cores": os.cpu_count(),
            "warmup": warmup,
            "embedding_batch_size": config.embedding.batch_size,
            "embedding_actors": config.embedding.num_actors,
            "tracking": "disabled (no mlflow.db written)",
            "quick": quick,
        }
    )
    return {
        "name": "ingest",
        "x": "corpus_tokens",
        "y": "seconds",
        "series": series,
        "per_unit": per_unit,
        "meta": meta,
    }


if __name__ == "__main__":
    print(json.dumps(curve(quick="--quick" in sys.argv)))
