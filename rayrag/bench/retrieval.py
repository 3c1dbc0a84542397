"""Bench `retrieval`: approximate (IVF) vs exact (Flat) FAISS search, and ACL-filtered search.

`rayrag bench retrieval [--quick] --json`. For each corpus size (100k and 1M
vectors; quick: 20k and 100k), in one process, alternating over rounds, median times:

    flat        `faiss.IndexFlatIP`, exact: the baseline and the ground truth for recall
    ann         `VectorIndex` with `IndexConfig(factory="IVF{nlist},Flat", nprobe=...)`,
                the index the project ships for large corpora on these machines

and on the largest size, both through `VectorIndex.search`:

    unfiltered  `search(queries, 10)`
    filtered    `search(queries, 10, allowed_ids=...)`, a random 50% of the ids allowed: the
                IDSelector inside the search plus the post-retrieval fail-closed check

BM25 (`bench_bm25`): the bundle's lexical index over synthetic Zipf-distributed passages (100k;
quick 20k), one query at a time, unfiltered vs half the rows allowed through the ACL weight
mask. Modes (`bench_modes`): p50 / p95 per query of dense, bm25, graph and hybrid on the demo
corpus ingested with the default config (`hybrid_vs_dense_p50` is what fusion, PageRank and
the hops cost over a FAISS search).

Why IVF and not HNSW (the size-based default): building HNSW32 (efConstruction 80) at 1M
would not fit in the bench's 15 minutes on these shared cores, while IVF trains k-means on a
sample (48 points per list, above faiss's 39 minimum) and adds 1M vectors in minutes
(measured: docs/DECISIONS.md). nlist is the power of two nearest 4*sqrt(n) (FAISS's guideline
is 4..16*sqrt(n); plain sqrt(n), 1024 lists at 1M, scans 4x more vectors a probe); nprobe is
calibrated per size, as an operator would set `index.nprobe`: the smallest of 4, 8, 16, ...
whose recall@10 on separate calibration queries reaches `CALIBRATION_RECALL`. The reported
recall is then measured on the bench's own queries, which calibration never saw.

Data: uniform random unit vectors in 384-d are a pathological case for any ANN index (all
pairwise similarities concentrate near 0, so "nearest" is noise). Real sentence embeddings
are clustered with low intrinsic dimension, so vectors here are a Gaussian mixture: one
topic centre per 100 vectors, plus a per-topic rank-24 subspace spread (24 latent
coordinates through the topic's own random basis, spread 0.15), plus isotropic noise
(0.015 a coordinate), then L2-normalised. Queries are fresh draws from the same mixture,
not copies of base vectors. The ANN figures depend on how clustered the data is, and the
spread is the knob: overlapping topics need many more probes for the same recall, up to IVF
losing to batched exact search (measured: docs/DECISIONS.md). Real corpora sit somewhere
between.

Both competitors search the same query batch (exact search is batched BLAS, which
amortises memory traffic over the batch; a smaller flat batch would flatter the ratio). Both
competitors run on CPU (`use_gpu="never"`) so the comparison is like for like. Memory: the 1M run
holds the vectors three times (array, flat, IVF), about 4.5 GiB; `peak_rss_gib` reports it.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from typing import Any

import faiss
import numpy as np

from rayrag.bench import alternate, median
from rayrag.config import IndexConfig
from rayrag.index.vector import AllowedIds, VectorIndex

DIM = 384
K = 10
CALIBRATION_RECALL = 0.97  # a margin above the 0.95 goal: calibration and test queries differ
NPROBE_LADDER = (4, 8, 16, 32, 64, 128, 256)
TRAIN_POINTS_PER_LIST = 48
VECTORS_PER_TOPIC = 100
ACL_QUERIES = 200
ADD_CHUNK = 100_000  # bounded temporary copies while adding to the index


def synthetic_vectors(
    n: int,
    seed: int,
    n_topics: int,
    dim: int = DIM,
    rank: int = 24,
    spread: float = 0.15,
    noise: float = 0.015,
    mixture_seed: int = 0,
    chunk: int = 100_000,
    n_bases: int | None = None,
) -> np.ndarray:
    """(n, dim) float32 unit vectors from a clustered, low-intrinsic-dimension mixture.

    `mixture_seed`, `n_topics` and `n_bases` fix the mixture (pass the same to draw queries
    for a corpus); `seed` draws the points. Generated in float32 chunks to bound memory.
    """
    mixture = np.random.default_rng(mixture_seed)
    # One basis per topic by default: topics sharing a basis overlap into one blob whose
    # density grows with n, making the 1M corpus a different (harder) problem than the 100k one.
    n_bases = n_topics if n_bases is None else n_bases
    centres = mixture.standard_normal((n_topics, dim), dtype=np.float32) / math.sqrt(dim)
    bases = mixture.standard_normal((n_bases, rank, dim), dtype=np.float32) / math.sqrt(dim)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        topics = rng.integers(0, n_topics, m)
        x = rng.standard_normal((m, dim), dtype=np.float32)
        x *= noise
        x += centres[topics]
        latent = rng.standard_normal((m, rank), dtype=np.float32) * spread  # (m, rank)
        # Group rows by basis so each basis is one matmul rather than one per row.
        which = topics % n_bases
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(n_bases + 1))
        for b in range(n_bases):
            rows = order[bounds[b] : bounds[b + 1]]
            x[rows] += latent[rows] @ bases[b]  # (rows, rank) @ (rank, dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start : start + m] = x
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row's true top-k ids that `found`'s row contains (ids >= 0)."""
    assert found.shape[0] == truth.shape[0], (found.shape, truth.shape)
    hits = (found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)  # (nq, kf, kt)
    return float(hits.any(axis=1).sum(axis=1).mean() / truth.shape[1])


def nlist_for(n: int) -> int:
    """The power of two nearest 4*sqrt(n), the low end of FAISS's 4..16*sqrt(n) guideline.

    More lists mean fewer vectors scanned per probe; the coarse quantizer (nlist dot products
    a query, batched BLAS) stays cheap. At 1M, sqrt(n) lists (1024) needed so many probes that
    IVF gained little over batched exact search (measured: docs/DECISIONS.md).
    """
    wanted = round(math.log2(4 * math.sqrt(n)))
    trainable = math.floor(math.log2(max(n // 39, 2)))  # faiss wants >= 39 points a list
    return 2 ** max(1, min(wanted, trainable))


def build_ivf(
    vectors: np.ndarray, nlist: int, nprobe: int | None = None
) -> tuple[VectorIndex, float]:
    """IVF `VectorIndex` over `vectors` (ids = rows), k-means trained on a prefix sample.

    Rows are i.i.d., so the first `TRAIN_POINTS_PER_LIST * nlist` are a random sample;
    `build` trains on them and the rest go in through `add`, as incremental ingest does.
    Returns the index and the build seconds.
    """
    config = IndexConfig(factory=f"IVF{nlist},Flat", nprobe=nprobe, use_gpu="never")
    n_train = min(len(vectors), TRAIN_POINTS_PER_LIST * nlist)
    started = time.perf_counter()
    index = VectorIndex(config, dim=vectors.shape[1]).build(
        vectors[:n_train], np.arange(n_train, dtype=np.int64)
    )
    for start in range(n_train, len(vectors), ADD_CHUNK):
        stop = min(start + ADD_CHUNK, len(vectors))
        index.add(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
    return index, time.perf_counter() - started


def with_nprobe(index: VectorIndex, nprobe: int) -> VectorIndex:
    """The same FAISS index searched with another nprobe (config is read at search time)."""
    tuned = VectorIndex(index.config.model_copy(update={"nprobe": nprobe}), dim=index.dim)
    tuned._index, tuned._factory = index._index, index.factory_string
    return tuned


def calibrate_nprobe(
    index: VectorIndex, queries: np.ndarray, truth: np.ndarray, nlist: int
) -> tuple[int, float]:
    """Smallest ladder nprobe reaching CALIBRATION_RECALL on these queries (else the largest)."""
    ladder = [p for p in NPROBE_LADDER if p < nlist] + [nlist]
    nprobe, score = ladder[-1], 0.0
    for nprobe in ladder:
        found = with_nprobe(index, nprobe).search(queries, K)[1]
        score = recall_at_k(found, truth)
        if score >= CALIBRATION_RECALL:
            break
    return nprobe, score


def _qps(n_queries: int, seconds: list[float]) -> float:
    return n_queries / median(seconds)


def bench_size(
    n: int, n_queries: int, n_flat_queries: int, n_calibration: int, rounds: int
) -> dict[str, Any]:
    """Flat vs IVF at one corpus size; keeps the IVF index and queries for the ACL part."""
    started = time.perf_counter()
    n_topics = max(1, n // VECTORS_PER_TOPIC)
    vectors = synthetic_vectors(n, seed=1, n_topics=n_topics)
    queries = synthetic_vectors(n_queries, seed=2, n_topics=n_topics)
    calibration = synthetic_vectors(n_calibration, seed=3, n_topics=n_topics)
    generate_s = time.perf_counter() - started

    started = time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(vectors)
    flat_build_s = time.perf_counter() - started
    nlist = nlist_for(n)
    ann, ann_build_s = build_ivf(vectors, nlist)
    del vectors  # both indexes hold their own copies

    calibration_truth = flat.search(calibration, K)[1]
    nprobe, calibration_recall = calibrate_nprobe(ann, calibration, calibration_truth, nlist)
    ann = with_nprobe(ann, nprobe)

    flat_queries = queries[:n_flat_queries]
    results: dict[str, np.ndarray] = {}
    seconds = alternate(
        {
            "flat": lambda: results.__setitem__("flat", flat.search(flat_queries, K)[1]),
            "ann": lambda: results.__setitem__("ann", ann.search(queries, K)[1]),
        },
        rounds,
    )
    flat_qps, ann_qps = _qps(n_flat_queries, seconds["flat"]), _qps(n_queries, seconds["ann"])
    return {
        "n": n,
        "ann_factory": ann.factory_string,
        "nprobe": nprobe,
        "queries": {"ann": n_queries, "flat": n_flat_queries, "calibration": n_calibration},
        "build_s": {"flat": round(flat_build_s, 2), "ann": round(ann_build_s, 2)},
        "generate_s": round(generate_s, 2),
        "seconds": {name: [round(s, 4) for s in values] for name, values in seconds.items()},
        "qps": {"flat": round(flat_qps, 1), "ann": round(ann_qps, 1)},
        "recall_at_10": round(recall_at_k(results["ann"][:n_flat_queries], results["flat"]), 4),
        "calibration_recall_at_10": round(calibration_recall, 4),
        "ann_vs_flat_qps": round(ann_qps / flat_qps, 2),
        "_index": ann,
        "_queries": queries,
    }


def bench_acl(
    index: VectorIndex, queries: np.ndarray, rounds: int, single_queries: int
) -> dict[str, Any]:
    """Filtered (a random 50% of ids allowed) vs unfiltered search on the same index.

    The batch figure is the ratio that counts. Single queries are timed twice: with the
    selector rebuilt from the id array on every call (`filtered`), and with one
    `AllowedIds` built once and reused (`filtered_cached`), which is what `DenseRetriever`
    does per group set when serving.
    """
    rng = np.random.default_rng(4)
    allowed = rng.choice(index.ntotal, size=index.ntotal // 2, replace=False).astype(np.int64)
    found: dict[str, np.ndarray] = {}
    seconds = alternate(
        {
            "unfiltered": lambda: found.__setitem__("unfiltered", index.search(queries, K)[1]),
            "filtered": lambda: found.__setitem__(
                "filtered", index.search(queries, K, allowed_ids=allowed)[1]
            ),
        },
        rounds,
    )
    singles = queries[:single_queries]

    def one_by_one(allowed_ids: np.ndarray | AllowedIds | None) -> None:
        for query in singles:
            index.search(query, K, allowed_ids=allowed_ids)

    cached = AllowedIds(allowed)
    single_seconds = alternate(
        {
            "unfiltered": lambda: one_by_one(None),
            "filtered": lambda: one_by_one(allowed),
            "filtered_cached": lambda: one_by_one(cached),
        },
        rounds,
    )
    filtered = found["filtered"]
    return {
        "allowed_fraction": 0.5,
        "queries": len(queries),
        "seconds": {name: [round(s, 4) for s in values] for name, values in seconds.items()},
        "qps": {name: round(_qps(len(queries), values), 1) for name, values in seconds.items()},
        "single_query_qps": {
            name: round(_qps(len(singles), values), 1) for name, values in single_seconds.items()
        },
        "filtered_full_rows": bool(((filtered >= 0).sum(axis=1) == K).all()),
        "filtered_all_allowed": bool(np.isin(filtered[filtered >= 0], allowed).all()),
        "single_query_ratio": round(
            median(single_seconds["unfiltered"]) / median(single_seconds["filtered"]), 3
        ),
        "single_query_cached_ratio": round(
            median(single_seconds["unfiltered"]) / median(single_seconds["filtered_cached"]), 3
        ),
        "ratio": round(median(seconds["unfiltered"]) / median(seconds["filtered"]), 3),
    }


def synthetic_texts(n: int, seed: int = 0, vocab: int = 50_000, length: int = 60) -> list[str]:
    """`n` passages of `length` words drawn from a Zipf(1.1) vocabulary of `vocab` words:
    word frequencies shaped like text's (a few very common words, a long tail), which is what
    decides how many postings a BM25 query term touches."""
    rng = np.random.default_rng(seed)
    ranks = np.minimum(rng.zipf(1.1, size=(n, length)), vocab) - 1
    return [" ".join(f"w{r}" for r in row) for row in ranks]


def bench_bm25(n: int, n_queries: int, rounds: int) -> dict[str, Any]:
    """BM25 (`LexicalIndex`, bm25s) over `n` synthetic passages: unfiltered vs a random 50% of
    the rows allowed (the ACL weight mask inside the search), queries of 4 words from the
    same distribution, one query at a time (as a server runs them)."""
    from rayrag.index.lexical import LexicalIndex

    texts = synthetic_texts(n)
    started = time.perf_counter()
    index = LexicalIndex.build(texts, np.arange(n))
    build_seconds = time.perf_counter() - started
    rng = np.random.default_rng(5)
    queries = [
        " ".join(f"w{r}" for r in np.minimum(rng.zipf(1.1, size=4), 50_000) - 1)
        for _ in range(n_queries)
    ]
    everyone = np.ones(n, np.float32)
    mask = np.zeros(n, np.float32)
    mask[rng.choice(n, size=n // 2, replace=False)] = 1.0
    found: dict[str, list[list[int]]] = {}

    def run_all(name: str, weights: np.ndarray) -> None:
        found[name] = [[row for row, _ in index.search(q, K, weights)] for q in queries]

    seconds = alternate(
        {
            "unfiltered": lambda: run_all("unfiltered", everyone),
            "filtered": lambda: run_all("filtered", mask),
        },
        rounds,
    )
    allowed = set(np.flatnonzero(mask).tolist())
    return {
        "passages": n,
        "queries": n_queries,
        "allowed_fraction": 0.5,
        "build_seconds": round(build_seconds, 2),
        "qps": {name: round(_qps(n_queries, values), 1) for name, values in seconds.items()},
        "filtered_all_allowed": all(row in allowed for rows in found["filtered"] for row in rows),
        "ratio": round(median(seconds["unfiltered"]) / median(seconds["filtered"]), 3),
    }


def bench_modes(quick: bool) -> dict[str, Any]:
    """Per-query latency of each retrieval mode on a real bundle: the demo corpus (seed 0)
    ingested with the default config (titles in the vectors, BM25 in hybrid), its questions
    asked as an admin, one at a time, after one warm-up pass. p50 / p95 in milliseconds."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from rayrag.config import resolve_config
    from rayrag.data.demo_corpus import generate_demo_corpus
    from rayrag.data.readers import read_qa
    from rayrag.pipelines.ingest import ingest
    from rayrag.retrieval.hybrid import MODES, HybridRetriever
    from rayrag.types import Principal

    os.environ.setdefault("RAYRAG_HMAC_KEY", "bench-only-hmac-key")
    os.environ.setdefault("RAYRAG_ENCRYPTION_KEY", "bench-only-key-0123456789abcdef"[:32])
    config = resolve_config(
        None,
        [
            "tracking.enabled=false",
            "ingest.num_cpus=2",
            "chunking.chunk_size=128",
            "chunking.chunk_overlap=16",
        ],
    )
    workdir = Path(tempfile.mkdtemp(prefix="rayrag-bench-modes-"))
    try:
        corpus = generate_demo_corpus(workdir / "data", seed=0)
        ingest(
            corpus.corpus_path, workdir / "bundle", config, engine="local", progress=lambda _m: None
        )
        questions = [qa.question for qa in read_qa(corpus.qa_path)][: 40 if quick else 150]
        retriever = HybridRetriever(workdir / "bundle", config)
        admin = Principal("admin", frozenset({"public", "hr", "finance", "legal"}))
        for mode in MODES:  # warm-up: models, graph, caches
            retriever.retrieve(questions[0], admin, mode=mode, with_facts=False)
        ms: dict[str, list[float]] = {mode: [] for mode in MODES}
        for i, question in enumerate(questions):
            # alternate, as `alternate` does
            order = MODES if i % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                t0 = time.perf_counter()
                retriever.retrieve(question, admin, mode=mode, with_facts=False)
                ms[mode].append((time.perf_counter() - t0) * 1000)
        return {
            "questions": len(questions),
            "p50_ms": {mode: round(float(np.percentile(v, 50)), 2) for mode, v in ms.items()},
            "p95_ms": {mode: round(float(np.percentile(v, 95)), 2) for mode, v in ms.items()},
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _progress(message: str, started: float) -> None:
    # stderr, so the JSON stays the last stdout line; a slow machine shows where time goes.
    print(
        f"[retrieval bench {time.perf_counter() - started:7.1f}s] {message}",
        file=sys.stderr,
        flush=True,
    )


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def run(quick: bool = False) -> dict[str, Any]:
    sizes = (20_000, 100_000) if quick else (100_000, 1_000_000)
    # Sized for two shared, slow cores, where exact search at 1M is slow (docs/DECISIONS.md).
    n_queries, n_calibration, rounds, single = (200, 200, 2, 20) if quick else (500, 100, 2, 20)
    started = time.perf_counter()
    per_size: dict[str, dict[str, Any]] = {}
    acl: dict[str, Any] = {}
    for n in sizes:
        # Same batch for both: batched exact search amortises memory traffic over the batch,
        # so a smaller flat batch would flatter the ANN ratio.
        n_flat = n_queries
        _progress(f"n={n}: generate, build, calibrate, time flat vs ann", started)
        result = bench_size(n, n_queries, n_flat, n_calibration, rounds)
        index, queries = result.pop("_index"), result.pop("_queries")
        _progress(f"n={n}: {json.dumps(result)}", started)
        if n == sizes[-1]:
            acl = bench_acl(index, queries[:ACL_QUERIES], rounds, single)
            _progress(f"acl: {json.dumps(acl)}", started)
        del index
        per_size[_label(n)] = result
    n_bm25 = 20_000 if quick else 100_000
    _progress(f"bm25: {n_bm25} passages, filtered vs unfiltered", started)
    bm25 = bench_bm25(n_bm25, 200, rounds)
    _progress(f"bm25: {json.dumps(bm25)}", started)
    _progress("modes: ingest the demo corpus, time each retrieval mode", started)
    modes = bench_modes(quick)
    _progress(f"modes: {json.dumps(modes)}", started)
    small, large = (per_size[_label(n)] for n in sizes)
    return {
        "bench": "retrieval",
        "quick": quick,
        "dim": DIM,
        "k": K,
        "sizes": per_size,
        "acl": acl,
        "bm25": bm25,
        "modes": modes,
        "peak_rss_gib": round(_peak_rss_gib(), 2),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "ratios": {
            f"ann_vs_flat_qps_{_label(sizes[0])}": small["ann_vs_flat_qps"],
            f"ann_vs_flat_qps_{_label(sizes[1])}": large["ann_vs_flat_qps"],
            "filtered_vs_unfiltered_qps": acl["ratio"],
            "bm25_filtered_vs_unfiltered_qps": bm25["ratio"],
            "hybrid_vs_dense_p50": round(modes["p50_ms"]["hybrid"] / modes["p50_ms"]["dense"], 3),
            f"recall_at_10_{_label(sizes[0])}": small["recall_at_10"],
            f"recall_at_10_{_label(sizes[1])}": large["recall_at_10"],
        },
    }


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"
