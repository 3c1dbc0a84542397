"""Retrieval evaluation: recall@k and MRR over gold documents, overall and per slice.

Metrics follow HippoRAG (Gutiérrez et al. 2024): retrieval ranks chunks, the ranking is
collapsed to distinct documents in rank order (a document counts at its best chunk), and

    recall@k = |top-k documents ∩ gold documents| / |gold documents|   (averaged over questions)
    MRR      = mean of 1 / rank of the first gold document (0 when none is retrieved)

Every metric is also computed per value of every QA metadata key (`hops=2`,
`doc_type=press_release`, ...): the disaggregated view the governance layer asks for.
One evaluation is one MLflow run in the `eval` experiment, tagged with mode, bundle id and
dataset digest; slice metrics are logged as `recall_at_5/hops/2` (`<metric>/<key>/<value>`). Nothing
logged carries question text: only ids, counts and numbers.

    >>> result = evaluate_retrieval(Path("bundle"), Path("qa.jsonl"), cfg, "hybrid",
    ...                             Principal("admin", frozenset({"public", "hr"})), tracker)
    >>> result["recall_at_5"], result["slices"]["hops=2"]["recall_at_5"]
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rayrag.config import RAGConfig
from rayrag.data.readers import QAPair, read_qa
from rayrag.tracking.tracker import Tracker, compose_run_name
from rayrag.types import Principal

RECALL_KS = (2, 5, 10)
METRICS = tuple(f"recall_at_{k}" for k in RECALL_KS) + ("mrr",)


# ---------------------------------------------------------------- pure metrics


def distinct_in_order(items: Iterable[str]) -> list[str]:
    """First occurrence of each item, in order: a chunk ranking becomes a document ranking."""
    return list(dict.fromkeys(items))


def recall_at_k(ranked_docs: Sequence[str], gold: Iterable[str], k: int) -> float:
    """|top-k ∩ gold| / |gold| over distinct documents (HippoRAG's recall@k)."""
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    gold_set = set(gold)
    if not gold_set:
        raise ValueError("recall is undefined without gold documents")
    top = set(distinct_in_order(ranked_docs)[:k])
    return len(top & gold_set) / len(gold_set)


def mrr(ranked_docs: Sequence[str], gold: Iterable[str]) -> float:
    """1 / (1-based rank of the first gold document among distinct documents); 0 if absent."""
    gold_set = set(gold)
    for rank, doc in enumerate(distinct_in_order(ranked_docs), 1):
        if doc in gold_set:
            return 1.0 / rank
    return 0.0


def question_metrics(ranked_docs: Sequence[str], gold: Iterable[str]) -> dict[str, float]:
    gold = list(gold)
    scores = {f"recall_at_{k}": recall_at_k(ranked_docs, gold, k) for k in RECALL_KS}
    scores["mrr"] = mrr(ranked_docs, gold)
    return scores


def aggregate(per_question: list[dict[str, float]]) -> dict[str, float]:
    """Means over questions (each question weighs the same, as in HippoRAG)."""
    if not per_question:
        return {name: 0.0 for name in METRICS}
    return {name: sum(q[name] for q in per_question) / len(per_question) for name in METRICS}


def slice_metrics(
    per_question: list[dict[str, float]], metadata: list[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """{"key=value": {metric: mean, "n": count}} for every metadata key and value."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for scores, meta in zip(per_question, metadata, strict=True):
        for key, value in meta.items():
            groups[f"{key}={value}"].append(scores)
    return {
        name: {**aggregate(rows), "n": float(len(rows))} for name, rows in sorted(groups.items())
    }


def mlflow_metric_name(metric: str, slice_name: str) -> str:
    """`recall_at_5` + `hops=2` -> `recall_at_5/hops/2`: the `<metric>/<key>/<value>` names the
    answer evaluation logs too (`disaggregate.metric_key`: MLflow's allowed characters)."""
    from rayrag.evaluation.disaggregate import metric_key

    key, _, value = slice_name.partition("=")
    return metric_key(metric, key, value)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- the evaluation


def evaluate_retrieval(
    bundle: Path,
    dataset: Path,
    config: RAGConfig,
    mode: str,
    principal: Principal,
    tracker: Tracker | None = None,
    retriever: Any = None,
) -> dict[str, Any]:
    """Run every question of `dataset` through retrieval in `mode` and score the documents.

    Returns {"recall_at_2", "recall_at_5", "recall_at_10", "mrr", "slices", "counts",
    "mode", "bundle_id", "dataset_digest", "run_id"}. `retriever` lets a caller reuse a
    warmed `HybridRetriever` across modes.
    """
    from rayrag.retrieval.hybrid import MODES, HybridRetriever

    if mode not in MODES:
        from rayrag.errors import ConfigError

        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r} (--mode)")
    questions: list[QAPair] = read_qa(dataset)
    digest = file_digest(dataset)
    retriever = retriever or HybridRetriever(Path(bundle), config)
    retriever.warm_up(graph=mode not in ("dense", "bm25"))
    bundle_id = retriever.dense.bundle.bundle_id
    # Deep enough that ten distinct documents survive chunk-to-document collapsing.
    depth = max(config.retrieval.candidate_k, 4 * max(RECALL_KS))

    per_question: list[dict[str, float]] = []
    metadata: list[dict[str, Any]] = []
    skipped = 0
    started = time.perf_counter()
    for qa in questions:
        if not qa.supporting_ids:
            skipped += 1  # recall is undefined without gold documents
            continue
        evidence = retriever.retrieve(
            qa.question, principal, mode=mode, top_k=depth, with_facts=False
        )
        ranked_docs = distinct_in_order(p.doc_id for p in evidence.passages)
        per_question.append(question_metrics(ranked_docs, qa.supporting_ids))
        metadata.append(dict(qa.metadata))
    seconds = time.perf_counter() - started

    overall = aggregate(per_question)
    slices = slice_metrics(per_question, metadata)
    counts = {"questions": len(per_question), "skipped_no_gold": skipped}
    result: dict[str, Any] = {
        **overall,
        "mode": mode,
        "slices": slices,
        "counts": counts,
        "bundle_id": bundle_id,
        "dataset_digest": digest,
        "seconds_per_question": seconds / max(len(per_question), 1),
    }

    tracker = tracker or Tracker(config.tracking)
    tags = {
        "mode": mode,
        "bundle_id": bundle_id,
        "dataset_digest": digest,
        "principal": principal.name,
        "fusion": config.retrieval.fusion,
    }
    name = compose_run_name("eval", config, mode, "retrieval-only")
    with tracker.start_run("eval", config, tags=tags, run_name=name) as run:
        metrics = dict(overall)
        for slice_name, values in slices.items():
            for metric, value in values.items():
                metrics[mlflow_metric_name(metric, slice_name)] = value
        metrics.update(
            {
                "questions": float(counts["questions"]),
                "skipped_no_gold": float(skipped),
                "seconds_per_question": result["seconds_per_question"],
            }
        )
        run.log_metrics(metrics)
        run.log_params(
            {
                "eval.mode": mode,
                "eval.depth": depth,
                "eval.principal_groups": ",".join(sorted(principal.groups)),
            }
        )
        result["run_id"] = run.run_id
    return result
