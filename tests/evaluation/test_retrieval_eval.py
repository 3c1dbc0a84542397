"""Retrieval evaluation: HippoRAG recall@k and MRR on hand examples; one tracked run end to end."""

from __future__ import annotations

import json

import pytest

from rayrag.config import resolve_config
from rayrag.evaluation.retrieval_eval import (
    aggregate,
    distinct_in_order,
    mlflow_metric_name,
    mrr,
    question_metrics,
    recall_at_k,
    slice_metrics,
)
from rayrag.tracking.tracker import Tracker
from rayrag.types import Principal

# ---------------------------------------------------------------- metric math


def test_recall_counts_distinct_documents_in_rank_order():
    # chunks of d1 twice, then d2, d3: distinct docs are [d1, d2, d3, d4]
    ranked = ["d1", "d1", "d2", "d3", "d4"]
    assert distinct_in_order(ranked) == ["d1", "d2", "d3", "d4"]
    gold = ["d3", "d1"]
    assert recall_at_k(ranked, gold, 2) == 0.5  # top-2 docs {d1, d2}: 1 of 2 gold
    assert recall_at_k(ranked, gold, 3) == 1.0  # the duplicate d1 chunk does not use a slot
    assert recall_at_k(ranked, gold, 10) == 1.0
    assert recall_at_k([], gold, 5) == 0.0
    assert recall_at_k(["x", "d1"], ["d1", "d1"], 2) == 1.0  # gold is a set
    with pytest.raises(ValueError):
        recall_at_k(ranked, [], 2)
    with pytest.raises(ValueError):
        recall_at_k(ranked, gold, 0)


def test_mrr_is_reciprocal_rank_of_first_gold_document():
    assert mrr(["d1", "d2"], ["d1"]) == 1.0
    assert mrr(["a", "a", "b", "g"], ["g", "z"]) == pytest.approx(1 / 3)  # distinct rank 3
    assert mrr(["a", "b"], ["g"]) == 0.0


def test_aggregate_and_slices_hand_example():
    q1 = question_metrics(["g1", "x", "g2"], ["g1", "g2"])  # r@2 .5, r@5 1, mrr 1
    q2 = question_metrics(["x", "y", "z"], ["g3"])  # all 0
    q3 = question_metrics(["y", "g4"], ["g4"])  # r@2 1, mrr .5
    assert q1 == {"recall_at_2": 0.5, "recall_at_5": 1.0, "recall_at_10": 1.0, "mrr": 1.0}
    overall = aggregate([q1, q2, q3])
    assert overall["recall_at_2"] == pytest.approx(1.5 / 3)
    assert overall["recall_at_5"] == pytest.approx(2 / 3)
    assert overall["mrr"] == pytest.approx(1.5 / 3)
    slices = slice_metrics([q1, q2, q3], [{"hops": 2}, {"hops": 2}, {"hops": 1, "kind": "a b"}])
    assert slices["hops=2"]["recall_at_2"] == pytest.approx(0.25) and slices["hops=2"]["n"] == 2
    assert slices["hops=1"]["mrr"] == 0.5 and slices["kind=a b"]["n"] == 1
    assert aggregate([])["mrr"] == 0.0


def test_mlflow_metric_names_are_legal():
    assert mlflow_metric_name("recall_at_5", "hops=2") == "recall_at_5/hops/2"
    assert mlflow_metric_name("mrr", "doc_type=press release!") == "mrr/doc_type/press release_"


# ---------------------------------------------------------------- end to end on a tiny bundle

N_QUESTIONS = 5


@pytest.fixture(scope="module")
def tiny(ray_local, demo_corpus, tmp_path_factory):
    """The supporting documents of a few demo questions plus restricted documents, ingested."""
    from rayrag.pipelines.ingest import ingest

    root = tmp_path_factory.mktemp("tiny-eval")
    docs = {d["id"]: d for d in map(json.loads, demo_corpus.corpus_path.read_text().splitlines())}
    questions = [json.loads(line) for line in demo_corpus.qa_path.read_text().splitlines()]
    public_q = [
        q for q in questions if all(docs[i]["acl"] == ["public"] for i in q["supporting_ids"])
    ]
    chosen = public_q[:N_QUESTIONS]
    keep = {i for q in chosen for i in q["supporting_ids"]}
    keep |= set(sorted(d for d, row in docs.items() if "public" not in row["acl"])[:4])
    keep |= set(sorted(docs)[:4])  # distractors
    (root / "corpus.jsonl").write_text("".join(json.dumps(docs[d]) + "\n" for d in sorted(keep)))
    (root / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in chosen))
    config = resolve_config("demo", [f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"])
    tracker = Tracker(config.tracking, artifact_root=root / "artifacts")
    ingest(root / "corpus.jsonl", root / "bundle", config, tracker=tracker)
    return root, config, tracker, docs, keep


@pytest.mark.slow
@pytest.mark.integration
def test_dense_eval_end_to_end_is_tracked_without_question_text(tiny):
    from rayrag.evaluation.retrieval_eval import evaluate_retrieval

    root, config, tracker, _, _ = tiny
    admin = Principal("admin", frozenset({"public", "hr", "finance", "legal"}))
    result = evaluate_retrieval(root / "bundle", root / "qa.jsonl", config, "dense", admin, tracker)
    assert result["counts"]["questions"] == N_QUESTIONS
    for name in ("recall_at_2", "recall_at_5", "recall_at_10", "mrr"):
        assert 0.0 <= result[name] <= 1.0
    assert result["recall_at_2"] <= result["recall_at_5"] <= result["recall_at_10"]
    assert result["recall_at_10"] > 0.5  # a tiny corpus: the gold documents are found
    assert "hops=2" in result["slices"] or "hops=1" in result["slices"]
    run = next(r for r in tracker.find_runs("eval") if r["run_id"] == result["run_id"])
    assert run["tags.mode"] == "dense" and run["tags.dataset_digest"] == result["dataset_digest"]
    assert any(k.startswith("metrics.recall_at_5/hops/") for k in run)
    logged = json.dumps({k: str(v) for k, v in run.items()})
    for q in (json.loads(line) for line in (root / "qa.jsonl").read_text().splitlines()):
        assert q["question"] not in logged


@pytest.mark.slow
@pytest.mark.integration
def test_hybrid_never_returns_restricted_passages_to_public(tiny):
    from rayrag.retrieval.hybrid import HybridRetriever

    root, config, _, docs, keep = tiny
    retriever = HybridRetriever(root / "bundle", config)
    public = Principal("anon", frozenset({"public"}))
    restricted = {d for d in keep if "public" not in docs[d]["acl"]}
    assert restricted
    for q in (json.loads(line) for line in (root / "qa.jsonl").read_text().splitlines()):
        for mode in ("dense", "graph", "hybrid"):
            evidence = retriever.retrieve(q["question"], public, mode=mode, top_k=20)
            assert not {p.doc_id for p in evidence.passages} & restricted
            assert not {d for f in evidence.facts for d in f.doc_ids} & restricted
    # The public selector was built once and reused; it allows exactly the public chunks.
    dense = retriever.dense
    [((groups, policies), allowed)] = dense._selectors.items()
    assert groups == public.groups and policies is None  # one redaction policy: one search over all
    assert allowed.count == sum("public" in acl for acl in dense._acl) < len(dense._acl)
