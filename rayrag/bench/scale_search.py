"""Scale curve `search`: per-query search latency vs index size, through rayrag's `VectorIndex`.

Part of `rayrag bench scale` (rayrag/bench/scale.py; format in its docstring). Every series
searches one query at a time (batch 1, what a serving replica does per request) through
`VectorIndex.search`, so the ACL path, padding and fail-closed check are what is timed:

    flat      `IndexConfig(factory="Flat")`: exact, the ground truth for recall
    ivf       `IVF{nlist},Flat`, nlist = the power of two nearest sqrt(n), k-means trained on
              48 vectors a list (a prefix sample: rows are i.i.d.), nprobe = the config
              default ceil(sqrt(nlist)); recall@10 vs flat is reported, not tuned
    hnsw      `HNSW32,Flat` with the config's efConstruction 80 / efSearch 64, only up to
              `HNSW_MAX_VECTORS`: building it is ~n log n single-insert work, too slow
              beyond that on these two shared cores (measured: docs/DECISIONS.md)
    ivf_acl   the ivf index with half the ids allowed (a random 50%), an `AllowedIds` built
              once per size as `DenseRetriever` caches it per group set: the selector inside
              the search plus the fail-closed check. IVF, not the size default (HNSW above
              50k), because HNSW does not build at 1M here and IVF is what the retrieval
              bench ships for large corpora on these machines.

Why sqrt(n) lists and not the 4*sqrt(n) the retrieval bench uses: at 1M, 4096 lists cost
k-means on 196k points plus assigning 1M vectors to 4096 centroids, which on two shared cores takes
as long as the whole search curve may (measured: docs/DECISIONS.md). With nprobe = sqrt(nlist) an
IVF query scans ~n^0.75 vectors either way, so the slope is the same; 4*sqrt(n) only lowers the
constant (see docs/SCALING.md).

Data: one clustered draw of max(sizes) unit vectors shaped like sentence embeddings (a
Gaussian mixture of `N_TOPICS` topic centres, each spread along a rank-24 subspace, plus
isotropic noise, normalised; the mixture of bench/retrieval.py with its bases shared in a
pool of 64 so generation is 64 large matmuls per chunk, not one per topic). Each size is a
prefix of that draw, i.e. a random sample of the same corpus; queries are fresh draws.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import faiss
import numpy as np

from rayrag.bench import alternate, median
from rayrag.bench.retrieval import recall_at_k, synthetic_vectors
from rayrag.config import IndexConfig
from rayrag.index.vector import AllowedIds, VectorIndex

DIM = 384
K = 10
SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000)
QUICK_SIZES = (2_000, 20_000)
HNSW_MAX_VECTORS = 30_000
N_TOPICS = 2_000
N_BASES = 64
TRAIN_POINTS_PER_LIST = 48
TIMED_QUERIES = 30  # batch-1 queries per series per size: p50 is steady, p99 is near the max
QUICK_TIMED_QUERIES = 10
RECALL_QUERIES = 50
CHUNK = 100_000
# One OpenMP thread per query: a replica serves concurrent requests on its other cores, and
# with two threads on these shared, busy cores OpenMP's spin-waits make even a small exact
# search slow (the scheduler, not the scan; measured: docs/DECISIONS.md).
SEARCH_THREADS = 1


def embedding_like(
    n: int,
    seed: int,
    dim: int = DIM,
    n_topics: int = N_TOPICS,
    rank: int = 24,
    spread: float = 0.15,
    noise: float = 0.015,
    mixture_seed: int = 0,
) -> np.ndarray:
    """(n, dim) float32 unit vectors from the retrieval bench's clustered mixture, with
    `N_BASES` shared bases (docs/SCALING.md's figures were measured on this draw).

    `mixture_seed` fixes the mixture (queries use the corpus's), `seed` draws the points."""
    return synthetic_vectors(
        n,
        seed,
        n_topics,
        dim=dim,
        rank=rank,
        spread=spread,
        noise=noise,
        mixture_seed=mixture_seed,
        chunk=CHUNK,
        n_bases=N_BASES,
    )


def nlist_for(n: int) -> int:
    """The power of two nearest sqrt(n), bounded so every list gets >= 39 training points."""
    wanted = round(math.log2(math.sqrt(n)))
    trainable = math.floor(math.log2(max(n // 39, 2)))
    return 2 ** max(1, min(wanted, trainable))


def _build(kind: str, vectors: np.ndarray) -> tuple[VectorIndex, float]:
    """A CPU `VectorIndex` of `kind` over `vectors` (ids = rows) and its build seconds."""
    n = len(vectors)
    started = time.perf_counter()
    if kind == "ivf":
        nlist = nlist_for(n)
        index = VectorIndex(IndexConfig(factory=f"IVF{nlist},Flat", use_gpu="never"), dim=DIM)
        n_train = min(n, TRAIN_POINTS_PER_LIST * nlist)
        index.build(vectors[:n_train])
        for start in range(n_train, n, CHUNK):  # bounded temporary copies, as ingest adds
            stop = min(start + CHUNK, n)
            index.add(vectors[start:stop], np.arange(start, stop, dtype=np.int64))
    else:
        factory = {"flat": "Flat", "hnsw": "HNSW32,Flat"}[kind]
        index = VectorIndex(IndexConfig(factory=factory, use_gpu="never"), dim=DIM).build(vectors)
    return index, time.perf_counter() - started


def _percentile_ms(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(seconds, q)), 3)


def bench_size(
    vectors: np.ndarray, queries: np.ndarray, kinds: tuple[str, ...], timed: int, seed: int = 4
) -> dict[str, Any]:
    """Batch-1 latency of each kind (and ivf_acl) at one size, alternating per query."""
    n = len(vectors)
    indexes: dict[str, VectorIndex] = {}
    build_s: dict[str, float] = {}
    for kind in kinds:
        indexes[kind], build_s[kind] = _build(kind, vectors)
    rng = np.random.default_rng(seed)
    allowed = AllowedIds(rng.choice(n, size=n // 2, replace=False).astype(np.int64))
    acl_kind = "ivf" if "ivf" in indexes else kinds[0]

    # Recall on a batch (cheap): exact truth from flat, unfiltered and filtered.
    recall_q = queries[:RECALL_QUERIES]
    truth = indexes["flat"].search(recall_q, K)[1]
    recall = {
        kind: round(recall_at_k(indexes[kind].search(recall_q, K)[1], truth), 4)
        for kind in kinds
        if kind != "flat"
    }
    acl_truth = indexes["flat"].search(recall_q, K, allowed_ids=allowed)[1]
    recall[f"{acl_kind}_acl"] = round(
        recall_at_k(indexes[acl_kind].search(recall_q, K, allowed_ids=allowed)[1], acl_truth), 4
    )

    searches = {
        kind: (lambda q, index=index: index.search(q, K)) for kind, index in indexes.items()
    }
    searches[f"{acl_kind}_acl"] = lambda q: indexes[acl_kind].search(q, K, allowed_ids=allowed)
    seconds: dict[str, list[float]] = {name: [] for name in searches}
    threads_before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(SEARCH_THREADS)
    try:
        for search in searches.values():  # warm-up: first-touch pages
            search(queries[0])
        for i, query in enumerate(queries[:timed]):
            competitors = {name: (lambda s=s, q=query: s(q)) for name, s in searches.items()}
            if i % 2:  # alternate which index goes first, query by query
                competitors = dict(reversed(competitors.items()))
            for name, values in alternate(competitors, 1).items():
                seconds[name].extend(values)
    finally:
        faiss.omp_set_num_threads(threads_before)
    ivf = indexes.get("ivf")
    return {
        "n": n,
        "p50_ms": {name: round(1000 * median(s), 3) for name, s in seconds.items()},
        "p99_ms": {name: _percentile_ms(s, 99) for name, s in seconds.items()},
        "build_s": {kind: round(s, 2) for kind, s in build_s.items()},
        "recall_at_10": recall,
        "ivf": {"factory": ivf.factory_string, "nprobe": ivf._nprobe(ivf._core())} if ivf else None,
        "timed_queries": min(timed, len(queries)),
    }


def curve(
    quick: bool = False,
    sizes: tuple[int, ...] | None = None,
    hnsw_max: int = HNSW_MAX_VECTORS,
    timed_queries: int | None = None,
) -> dict[str, Any]:
    """Search latency (batch 1, p50 ms) vs index size; see the module docstring."""
    sizes = tuple(sorted(sizes or (QUICK_SIZES if quick else SIZES)))
    timed = timed_queries or (QUICK_TIMED_QUERIES if quick else TIMED_QUERIES)
    started = time.perf_counter()
    corpus = embedding_like(sizes[-1], seed=1)
    queries = embedding_like(max(timed, RECALL_QUERIES), seed=2)
    generate_s = time.perf_counter() - started
    series: dict[str, list[list[float]]] = {}
    per_size: dict[str, dict[str, Any]] = {}
    for n in sizes:
        kinds = ("flat", "ivf", "hnsw") if n <= hnsw_max else ("flat", "ivf")
        result = bench_size(corpus[:n], queries, kinds, timed)
        for name, p50 in result["p50_ms"].items():
            series.setdefault(name, []).append([n, p50])
        per_size[str(n)] = result
        print(
            f"[bench scale/search {time.perf_counter() - started:6.1f}s] n={n} "
            f"p50_ms={result['p50_ms']} recall@10={result['recall_at_10']}",
            file=sys.stderr,
            flush=True,
        )
    largest = per_size[str(sizes[-1])]
    label = _label(sizes[-1])
    per_unit = {f"{name}_ms_per_query_at_{label}": ms for name, ms in largest["p50_ms"].items()}
    # Flat scans every vector: its cost per million vectors is the constant to project with.
    per_unit["flat_ms_per_query_per_1m_vectors"] = round(
        largest["p50_ms"]["flat"] * 1e6 / sizes[-1], 3
    )
    # Memory per vector (analytic: float32 vector + int64 id; HNSW adds 2*M level-0 links).
    per_unit["bytes_per_vector_flat_or_ivf"] = DIM * 4 + 8
    per_unit["bytes_per_vector_hnsw32"] = DIM * 4 + 8 + 2 * 32 * 4
    return {
        "name": "search",
        "x": "vectors",
        "y": "ms_p50",
        "series": series,
        "per_unit": per_unit,
        "meta": {
            "dim": DIM,
            "k": K,
            "batch": 1,
            "sizes": list(sizes),
            "n_topics": N_TOPICS,
            "hnsw": {
                "m": 32,
                "ef_construction": IndexConfig().hnsw_ef_construction,
                "ef_search": IndexConfig().hnsw_ef_search,
                "max_vectors": hnsw_max,
            },
            "search_threads": SEARCH_THREADS,
            "acl_allowed_fraction": 0.5,
            "recall_queries": RECALL_QUERIES,
            "generate_s": round(generate_s, 2),
            "sizes_detail": per_size,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }


def _label(n: int) -> str:
    return (
        f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)
    )
