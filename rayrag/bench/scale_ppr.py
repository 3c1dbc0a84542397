"""Scale curve `ppr`: HippoRAG Personalized PageRank latency per query vs knowledge-graph size.

Part of `rayrag bench scale` (rayrag/bench/scale.py). Graphs come from the kg bench's
generator (`bench.kg.synthetic_graph`: ~40% passages, Zipf-popular entities, co-occurrence,
verb and synonym edges, as the ingest writes them) and queries from its seeder (3-5 linked
entities weighted 1 / #passages). Each query is the real serving call,
`GraphRetriever.rank_seeds(..., top_k=10)`, timed per query, alternating the solvers:

    sparse    `method="sparse"`: power iteration on the cached CSR transition matrix (what
              `kg.ppr_method: auto` runs below `ppr_push_min_nodes`, 20k)
    push      `method="push"`: local forward push (rayrag/retrieval/ppr.py; what `auto` runs
              from 20k nodes), epsilon `kg.ppr_push_epsilon`; `meta.sizes_detail` has its
              top-10 agreement with sparse per size
    networkx  `method="networkx"`: `nx.pagerank` on a cached `nx.Graph`, only up to
              `NETWORKX_MAX_NODES` (it rebuilds its scipy matrix from the graph every call,
              far slower than sparse at 100k nodes; measured: docs/DECISIONS.md)

What to expect: the power iteration touches every edge once per iteration, and damping 0.5
halves the error each step (~27 iterations to 1e-8), so a query costs O(edges), i.e. linear
in graph size, not bounded by the seeds' neighbourhood. Push touches at most
1 / ((1 - damping) epsilon) edges whatever the graph's size; what still grows with the graph
is the per-query O(nodes) bookkeeping (dense score arrays, the passage top-k). The cached view (CSR
build) is paid once per group set and is reported in meta as `first_call_s`, not in the curve.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rayrag.bench import alternate, median
from rayrag.bench.kg import _queries, synthetic_graph
from rayrag.config import KGConfig
from rayrag.retrieval.graph_query import GraphRetriever
from rayrag.types import Principal

SIZES = (1_000, 10_000, 100_000, 300_000)
QUICK_SIZES = (500, 5_000)
NETWORKX_MAX_NODES = 10_000
QUERIES = 12
QUICK_QUERIES = 6
TOP_K = 10


def bench_size(
    n_nodes: int, n_queries: int, methods: tuple[str, ...], seed: int = 7
) -> dict[str, Any]:
    """p50 ms per `rank_seeds` call for each method on one synthetic graph."""
    started = time.perf_counter()
    kg = synthetic_graph(n_nodes, seed)
    generate_s = time.perf_counter() - started
    retriever = GraphRetriever(kg, KGConfig())
    principal = Principal("bench")
    queries = _queries(kg, n_queries + 1, seed + 1)
    first_call: dict[str, float] = {}
    for method in methods:  # first call builds the cached view / nx.Graph; not in the curve
        start = time.perf_counter()
        retriever.rank_seeds(queries[0], principal, top_k=TOP_K, method=method)
        first_call[method] = round(time.perf_counter() - start, 3)
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    agreement = {}
    if "push" in methods and "sparse" in methods:  # same top-10 passages, in the same order?
        lists = [
            [
                [c for c, _ in retriever.rank_seeds(seeds, principal, top_k=TOP_K, method=m)]
                for m in ("sparse", "push")
            ]
            for seeds in queries[1:]
        ]
        agreement = {
            "push_top10_identical": round(sum(a == b for a, b in lists) / len(lists), 3),
            "push_top10_overlap": round(
                sum(len(set(a) & set(b)) / max(len(a), 1) for a, b in lists) / len(lists), 3
            ),
        }
    for i, seeds in enumerate(queries[1:]):
        competitors = {
            m: (
                lambda m=m, seeds=seeds: retriever.rank_seeds(
                    seeds, principal, top_k=TOP_K, method=m
                )
            )
            for m in methods
        }
        if i % 2:  # alternate which solver goes first, query by query
            competitors = dict(reversed(competitors.items()))
        for method, values in alternate(competitors, 1).items():
            seconds[method].extend(values)
    return {
        "nodes": kg.graph.number_of_nodes(),
        "edges": kg.graph.number_of_edges(),
        "passages": kg.stats()["passages"],
        "queries": n_queries,
        "generate_s": round(generate_s, 2),
        "first_call_s": first_call,
        "p50_ms": {m: round(1000 * median(v), 3) for m, v in seconds.items()},
        "max_ms": {m: round(1000 * max(v), 3) for m, v in seconds.items()},
        **agreement,
    }


def curve(
    quick: bool = False,
    sizes: tuple[int, ...] | None = None,
    networkx_max: int = NETWORKX_MAX_NODES,
    queries: int | None = None,
) -> dict[str, Any]:
    """PPR p50 ms per query vs graph nodes; see the module docstring."""
    sizes = tuple(sorted(sizes or (QUICK_SIZES if quick else SIZES)))
    n_queries = queries or (QUICK_QUERIES if quick else QUERIES)
    started = time.perf_counter()
    series: dict[str, list[list[float]]] = {}
    per_size: dict[str, dict[str, Any]] = {}
    for n in sizes:
        methods = ("sparse", "push", "networkx") if n <= networkx_max else ("sparse", "push")
        result = bench_size(n, n_queries, methods)
        for method, ms in result["p50_ms"].items():
            series.setdefault(method, []).append([result["nodes"], ms])
        per_size[str(n)] = result
        print(
            f"[bench scale/ppr {time.perf_counter() - started:6.1f}s] nodes={result['nodes']} "
            f"edges={result['edges']} p50_ms={result['p50_ms']}",
            file=sys.stderr,
            flush=True,
        )
    largest = per_size[str(sizes[-1])]
    sparse_ms = largest["p50_ms"]["sparse"]
    return {
        "name": "ppr",
        "x": "graph_nodes",
        "y": "ms_p50",
        "series": series,
        "per_unit": {
            "sparse_ms_per_query_at_largest": sparse_ms,
            "push_ms_per_query_at_largest": largest["p50_ms"]["push"],
            # The constant to project with: PPR per query is O(edges) (module docstring).
            "sparse_ms_per_query_per_1m_edges": round(sparse_ms * 1e6 / largest["edges"], 3),
            "edges_per_node": round(largest["edges"] / largest["nodes"], 3),
        },
        "meta": {
            "sizes": list(sizes),
            "damping": KGConfig().ppr_damping,
            "top_k": TOP_K,
            "queries_per_size": n_queries,
            "networkx_max_nodes": networkx_max,
            "sizes_detail": per_size,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    }
