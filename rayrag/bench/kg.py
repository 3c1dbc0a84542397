"""Bench `kg`: HippoRAG Personalized PageRank per query, sparse power iteration vs nx.pagerank.

Competitors, alternating per query in one process on the same synthetic graph and seeds:
  * sparse — `GraphRetriever.rank_seeds(method="sparse")`: power iteration on the cached
    column-stochastic CSR matrix (built once per group set, not per query);
  * networkx — the same call with `method="networkx"`: `nx.pagerank` on a cached `nx.Graph`,
    which rebuilds its scipy matrix from the graph on every call;
  * push — `method="push"`: local forward push (rayrag/retrieval/ppr.py) on the cached CSC
    transition, `kg.ppr_push_epsilon` at its default; cost set by the seeds' neighbourhood.
All return the top 10 passages; the build of each cached structure is reported apart.

Graphs are shaped like the ingest's (Gutiérrez et al. 2024, HippoRAG): ~40% passage nodes,
each mentioning a handful of entities drawn from a Zipf-like popularity (a few hub
companies, a long tail), co-occurrence edges between a passage's entities (confidence
0.3) and a verb relation for some pairs (0.9), plus a few synonym edges. Each query seeds
3-5 entities weighted 1 / #passages mentioning them, as `GraphRetriever.link` does.
`ratios.sparse_vs_networkx_<size>` = networkx p50 / sparse p50 (> 1: sparse is faster);
`ratios.sparse_vs_networkx` is the largest size's; `_cpu_` ratios use process CPU time.
`ratios.push_vs_sparse_<size>` = sparse p50 / push p50 (> 1: push is faster), and
`push_top10_identical` / `push_top10_overlap` compare push's top 10 with sparse's (push is
approximate: its error bound is in ppr.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np

from rayrag.bench import alternate, median
from rayrag.config import KGConfig
from rayrag.index.graph import FORMAT_VERSION, MENTIONS, SYNONYM, KnowledgeGraph
from rayrag.retrieval.graph_query import GraphRetriever
from rayrag.types import Principal

MENTIONS_PER_PASSAGE = (2, 6)  # inclusive range; the demo averages 3.8 per chunk
PASSAGE_SHARE = 0.4
RELATION_SHARE = 0.3  # entity pairs in a passage linked by a verb rather than co-occurrence
SYNONYM_SHARE = 0.02  # entities with one synonym edge
METHODS = ("sparse", "networkx", "push")


def synthetic_graph(n_nodes: int, seed: int = 0) -> KnowledgeGraph:
    """A public KnowledgeGraph of about `n_nodes` nodes with the attributes queries read."""
    rng = np.random.default_rng(seed)
    n_passages = int(n_nodes * PASSAGE_SHARE)
    n_entities = n_nodes - n_passages
    popularity = 1.0 / np.arange(1, n_entities + 1) ** 0.8  # Zipf-like: hubs and a long tail
    popularity /= popularity.sum()
    g = nx.MultiDiGraph(
        format_version=FORMAT_VERSION,
        acronyms={},
        synonyms_stale=False,
        kg_config=KGConfig().model_dump(mode="json"),
    )
    support: dict[int, list[str]] = {}
    edges: dict[tuple[int, int, str], list[str]] = {}
    # One weighted draw for all mentions: a draw per passage re-scans the distribution.
    counts = rng.integers(MENTIONS_PER_PASSAGE[0], MENTIONS_PER_PASSAGE[1] + 1, size=n_passages)
    draws = np.split(
        rng.choice(n_entities, size=int(counts.sum()), p=popularity), np.cumsum(counts)[:-1]
    )
    for p, drawn in enumerate(draws):
        chunk_id = f"doc-{p // 2}#{p % 2}"
        g.add_node(
            f"passage:{chunk_id}",
            kind="passage",
            chunk_id=chunk_id,
            doc_id=f"doc-{p // 2}",
            acl=["public"],
        )
        mentioned = sorted(set(drawn.tolist()))
        for e in mentioned:
            support.setdefault(e, []).append(chunk_id)
            g.add_edge(
                f"passage:{chunk_id}",
                f"entity:e{e}",
                key=MENTIONS,
                relation=MENTIONS,
                confidence=1.0,
                chunk_ids=[chunk_id],
            )
        # Neighbouring mentions only: co-occurrence is per sentence, so a chunk links about
        # as many pairs as it names entities (the demo: 2.5 relation edges per chunk).
        for a, b in zip(mentioned, mentioned[1:], strict=False):
            relation = "acquire" if rng.random() < RELATION_SHARE else "co_occurs"
            edges.setdefault((a, b, relation), []).append(chunk_id)
    for e in range(n_entities):
        chunk_ids = support.get(e, [])
        g.add_node(
            f"entity:e{e}",
            kind="entity",
            name=f"Entity {e}",
            alias_keys=[f"e{e}"],
            chunk_ids=chunk_ids,
            acl=["public"] if chunk_ids else [],
        )
    for (a, b, relation), chunk_ids in edges.items():
        g.add_edge(
            f"entity:e{a}",
            f"entity:e{b}",
            key=relation,
            relation=relation,
            confidence=0.9 if relation != "co_occurs" else 0.3,
            chunk_ids=chunk_ids,
        )
    for a in rng.choice(n_entities, size=int(n_entities * SYNONYM_SHARE), replace=False):
        b = int(rng.integers(n_entities))
        if a != b:
            g.add_edge(
                f"entity:e{a}", f"entity:e{b}", key=SYNONYM, relation=SYNONYM, confidence=0.85
            )
    return KnowledgeGraph(KGConfig(), g)


def _queries(kg: KnowledgeGraph, n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    entities = [
        (node, len(d["chunk_ids"]))
        for node, d in kg.graph.nodes(data=True)
        if d["kind"] == "entity" and d["chunk_ids"]
    ]
    picks = [
        rng.choice(len(entities), size=int(rng.integers(3, 6)), replace=False) for _ in range(n)
    ]
    return [{entities[i][0]: 1.0 / entities[i][1] for i in pick} for pick in picks]


def _ranker(
    retriever: GraphRetriever,
    principal: Principal,
    seeds: dict[str, float],
    method: str,
    results: dict[str, list[str]],
    cpu: dict[str, list[float]],
) -> Callable[[], None]:
    def call() -> None:
        start = time.process_time()
        results[method] = [
            c for c, _ in retriever.rank_seeds(seeds, principal, top_k=10, method=method)
        ]
        cpu[method].append(time.process_time() - start)

    return call


def _bench_size(n_nodes: int, n_queries: int, seed: int) -> dict[str, Any]:
    started = time.perf_counter()
    kg = synthetic_graph(n_nodes, seed)
    generated = time.perf_counter() - started
    retriever = GraphRetriever(kg, KGConfig())
    principal = Principal("bench")
    queries = _queries(kg, n_queries, seed + 1)
    build: dict[str, float] = {}
    for method in METHODS:  # first call builds the cached view / nx.Graph / CSC
        start = time.perf_counter()
        retriever.rank_seeds(queries[0], principal, method=method)
        build[method] = round(time.perf_counter() - start, 3)
    agree, push_agree, push_overlap = [], [], []
    seconds: dict[str, list[float]] = {m: [] for m in METHODS}
    cpu: dict[str, list[float]] = {m: [] for m in METHODS}
    for r, query in enumerate(queries):
        results: dict[str, list[str]] = {}
        competitors = {m: _ranker(retriever, principal, query, m, results, cpu) for m in METHODS}
        if r % 2:  # alternate which solver goes first, query by query
            competitors = dict(reversed(competitors.items()))
        for method, values in alternate(competitors, 1).items():
            seconds[method].extend(values)
        agree.append(results["sparse"] == results["networkx"])
        push_agree.append(results["sparse"] == results["push"])
        push_overlap.append(
            len(set(results["sparse"]) & set(results["push"])) / max(len(results["sparse"]), 1)
        )
    stats = kg.stats()
    return {
        "nodes": kg.graph.number_of_nodes(),
        "passages": stats["passages"],
        "edges": kg.graph.number_of_edges(),
        "queries": n_queries,
        "generate_seconds": round(generated, 2),
        "first_call_seconds": build,  # view + CSR build (sparse), then nx.Graph build
        "p50_ms": {m: round(1000 * median(v), 2) for m, v in seconds.items()},
        # Process CPU time swings less than wall time when other jobs share the cores.
        "cpu_p50_ms": {m: round(1000 * median(v), 2) for m, v in cpu.items()},
        "top10_identical": sum(agree) / len(agree),
        "push_top10_identical": sum(push_agree) / len(push_agree),
        "push_top10_overlap": round(sum(push_overlap) / len(push_overlap), 3),
    }


def run(quick: bool = False) -> dict[str, Any]:
    plan = (
        {"2k": (2_000, 10), "10k": (10_000, 6)}
        if quick
        else {"20k": (20_000, 20), "200k": (200_000, 6)}
    )
    started = time.perf_counter()
    sizes = {name: _bench_size(n, q, seed=7) for name, (n, q) in plan.items()}
    largest = sizes[list(plan)[-1]]
    return {
        "bench": "kg",
        "quick": quick,
        "damping": KGConfig().ppr_damping,
        "sizes": sizes,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "ratios": {
            # The headline figure is the largest graph's; every size is listed too.
            "sparse_vs_networkx": round(
                largest["p50_ms"]["networkx"] / largest["p50_ms"]["sparse"], 2
            ),
            **{
                f"sparse_vs_networkx_{name}": round(
                    s["p50_ms"]["networkx"] / s["p50_ms"]["sparse"], 2
                )
                for name, s in sizes.items()
            },
            **{
                f"sparse_vs_networkx_cpu_{name}": round(
                    s["cpu_p50_ms"]["networkx"] / s["cpu_p50_ms"]["sparse"], 2
                )
                for name, s in sizes.items()
            },
            "push_vs_sparse": round(largest["p50_ms"]["sparse"] / largest["p50_ms"]["push"], 2),
            **{
                f"push_vs_sparse_{name}": round(s["p50_ms"]["sparse"] / s["p50_ms"]["push"], 2)
                for name, s in sizes.items()
            },
            **{
                f"push_vs_sparse_cpu_{name}": round(
                    s["cpu_p50_ms"]["sparse"] / s["cpu_p50_ms"]["push"], 2
                )
                for name, s in sizes.items()
            },
            **{
                f"push_top10_identical_{name}": s["push_top10_identical"]
                for name, s in sizes.items()
            },
        },
    }
