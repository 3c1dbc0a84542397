"""`rayrag eval fusion`: calibrate hybrid retrieval's fusion weights on a development split and
report them on the held-back rest, beside each single retriever.

Fusion is only worth having if it cannot lose to its best input. The weights of dense, graph
and BM25 in the weighted reciprocal rank fusion (`retrieval.fusion_weights`) are chosen on
the first part of a QA set (`dev_fraction`, in file order: no question is seen twice) by
recall@2 + recall@5 + MRR of the whole hybrid pipeline (fusion, identifier anchor,
graph-guided hops; within one question of the best, the setting nearest equal weights:
`choose`), and the held-back part reports hybrid with those weights against dense, bm25 and graph
alone. Each question's three rankings are computed once; only fusion and the hops rerun per
weight setting. RRF is unchanged by scaling every weight alike, so dense is fixed at 1.

    >>> report = calibrate_fusion(Path("bundle"), Path("qa.jsonl"), cfg, principal)
    >>> report["chosen"]["weights"], report["heldout"]["hybrid"]["recall_at_5"]
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.data.readers import read_qa
from rayrag.errors import ConfigError, DataError
from rayrag.evaluation.retrieval_eval import aggregate, distinct_in_order, question_metrics
from rayrag.types import Principal

GRID = (0.0, 0.5, 1.0, 2.0)  # graph and bm25 weights tried (dense = 1)
SINGLE = ("dense", "bm25", "graph")


def _objective(metrics: dict[str, float]) -> float:
    """What the reader needs (the answer passages in its first 2-5) plus MRR, which moves with
    every rank and so separates settings a recall cut-off scores alike."""
    return metrics["recall_at_2"] + metrics["recall_at_5"] + metrics["mrr"]


def _distance_from_equal(weights: dict[str, float]) -> float:
    return sum(abs(math.log2(w)) if w > 0 else 4.0 for w in weights.values())


def choose(tried: list[dict[str, Any]], n_dev: int) -> dict[str, Any]:
    """The best setting on the dev split; among those within one question of it (1 / n_dev),
    the nearest to equal weights: on a small split the grid is flat and its top is noise."""
    best = max(_objective(t["dev"]) for t in tried)
    near = [t for t in tried if _objective(t["dev"]) >= best - 1.0 / n_dev - 1e-9]
    return min(near, key=lambda t: (_distance_from_equal(t["weights"]), -_objective(t["dev"])))


def calibrate_fusion(
    bundle: Path,
    dataset: Path,
    config: RAGConfig,
    principal: Principal,
    dev_fraction: float = 0.5,
    grid: tuple[float, ...] = GRID,
) -> dict[str, Any]:
    """Weights chosen on the first `dev_fraction` of `dataset`, scored on the rest.

    Returns {"chosen": {"weights", "dev"}, "dev": {mode: metrics}, "heldout": {mode: metrics},
    "grid": [{"weights", "dev"}...], "counts", "seconds"}; metrics are recall@2/5/10 and MRR
    over documents, as `rayrag eval --retrieval-only` scores them."""
    from rayrag.retrieval.hybrid import HybridRetriever, passages_ranking

    if not 0 < dev_fraction < 1:
        raise ConfigError(f"dev_fraction must be in (0, 1), got {dev_fraction} (--dev-fraction)")
    questions = [qa for qa in read_qa(dataset) if qa.supporting_ids]
    split = round(len(questions) * dev_fraction)
    if split < 1 or split >= len(questions):
        raise DataError(
            f"{len(questions)} questions with gold documents "
            f"cannot be split {dev_fraction:.2f} / rest"
        )
    started = time.perf_counter()
    retriever = HybridRetriever(Path(bundle), config)
    retriever.warm_up(graph=True)
    if not retriever.has_lexical():
        retriever.dense.bundle.lexical_index()  # raises: calibrating BM25's weight needs the index
    top_k = max(config.retrieval.candidate_k, 40)  # deep enough for ten distinct documents
    cached = []
    for qa in questions:
        query = retriever.dense.redacted(qa.question)  # as `HybridRetriever.rank` sees it
        dense_hits = retriever.dense.retrieve(query, principal, top_k=top_k)
        graph = retriever.graph_ranking(
            retriever.link(query, principal), principal, dense_hits, top_k
        )
        cached.append(
            (
                qa,
                query,
                passages_ranking(dense_hits),
                graph,
                retriever.lexical_ranking(query, principal, top_k),
            )
        )

    def scores(rows: list[tuple[Any, ...]], ranking_of) -> dict[str, float]:
        per_question = []
        for qa, query, dense, graph, lexical in rows:
            docs = distinct_in_order(
                retriever.doc_id(c) for c, _ in ranking_of(query, dense, graph, lexical)
            )
            per_question.append(question_metrics(docs, qa.supporting_ids))
        return aggregate(per_question)

    def hybrid(weights: dict[str, float]):
        cfg = config.model_copy(
            update={
                "retrieval": config.retrieval.model_copy(
                    update={"fusion": "rrf", "fusion_weights": weights}
                )
            }
        )
        tuned = retriever.with_config(cfg)

        def ranking(query, dense, graph, lexical):
            fused = tuned.fuse(dense, graph, top_k, lexical)
            return tuned.hops(query, principal, tuned.anchor(query.text, fused))

        return ranking

    singles = {
        "dense": lambda q, d, g, b: d,
        "graph": lambda q, d, g, b: g,
        "bm25": lambda q, d, g, b: b,
    }
    dev, held = cached[:split], cached[split:]
    tried = []
    for graph_w, bm25_w in itertools.product(grid, grid):
        weights = {"dense": 1.0, "graph": graph_w, "bm25": bm25_w}
        tried.append({"weights": weights, "dev": scores(dev, hybrid(weights))})
    best = choose(tried, len(dev))
    report_dev = {mode: scores(dev, singles[mode]) for mode in SINGLE}
    report_dev["hybrid"] = best["dev"]
    heldout = {mode: scores(held, singles[mode]) for mode in SINGLE}
    heldout["hybrid"] = scores(held, hybrid(best["weights"]))
    current = dict(config.retrieval.fusion_weights)
    heldout["hybrid_configured"] = scores(held, hybrid(current))
    return {
        "chosen": best,
        "configured_weights": current,
        "dev": report_dev,
        "heldout": heldout,
        "grid": tried,
        "counts": {"dev": len(dev), "heldout": len(held)},
        "seconds": round(time.perf_counter() - started, 1),
    }
