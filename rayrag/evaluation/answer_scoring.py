"""Scoring one answered question and a set of them: the outcome of a request, per-question
scores, means, calibration, AUROC and the champion gate.

An `Outcome` is the /v1/ask JSON normalised to ids and numbers (plus the answer text, which
is scored and then dropped); `score_example` turns it into the metrics `rayrag eval`
reports (`evaluation/answer_eval.py` lists them). Pure functions: no model, no MLflow.

    >>> scores = score_example(qa, outcome_from_response(body, latency_ms=12.0), canaries=[])
    >>> gate_check({"answer_f1": 0.61}, {"answer_f1": 0.64}, ["answer_f1"], tolerance=0.02)
    (False, [{'metric': 'answer_f1', 'baseline': 0.64, 'current': 0.61, 'delta': -0.03}])
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rayrag.data.readers import QAPair
from rayrag.evaluation.qa_metrics import (
    citation_precision,
    exact_match,
    leaked,
    mean,
    percentile,
    token_f1,
)
from rayrag.evaluation.retrieval_eval import (
    RECALL_KS,
    distinct_in_order,
    question_metrics,
)

QUALITY_METRICS = (
    *(f"recall_at_{k}" for k in RECALL_KS),
    "mrr",
    "context_recall",
    "answer_em",
    "reader_em",
    "answer_f1",
    "groundedness",
    "citation_precision",
    "kg_validation_rate",
    "kg_supported_rate",
    "pii_leak_rate",
)
LOWER_IS_BETTER = frozenset({"pii_leak_rate"})


MARKER_RE = re.compile(r"\[\d{1,3}\]")


@dataclass
class Outcome:
    """One question's trip through the system, normalised from the /v1/ask JSON (ids and numbers,
    plus the answer text, which is scored and then dropped)."""

    ranked_doc_ids: list[str]
    cited_doc_ids: list[str]
    answer: str
    groundedness: float
    validation: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    cost: float
    latency_ms: float
    model_version: str = ""
    # the reader's passages (top_k), rank order
    context_doc_ids: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def doc_of_chunk(chunk_id: str) -> str:
    """`press-002#3` -> `press-002` (chunk ids are `<doc id>#<n>`, chunking.py)."""
    return chunk_id.rsplit("#", 1)[0]


def outcome_from_response(
    body: dict[str, Any], latency_ms: float, ranked_doc_ids: Sequence[str] | None = None
) -> Outcome:
    """The /v1/ask JSON -> an `Outcome`. Without `ranked_doc_ids` the ranking is the prompt's
    citations then the chunks truncated to fit the window (the deepest the response shows)."""
    citations = sorted(body.get("citations") or [], key=lambda c: c["marker"])
    by_marker = {c["marker"]: c["doc_id"] for c in citations}
    truncated = (body.get("truncated") or {}).get("chunk_ids") or []
    context = distinct_in_order(
        [c["doc_id"] for c in citations] + [doc_of_chunk(c) for c in truncated]
    )
    if ranked_doc_ids is None:
        ranked_doc_ids = context
    markers = [m for m in body.get("cited_markers") or [] if m in by_marker]
    cited = [by_marker[m] for m in markers] or [c["doc_id"] for c in citations]
    usage = body.get("usage") or {}
    return Outcome(
        ranked_doc_ids=list(ranked_doc_ids),
        cited_doc_ids=cited,
        answer=body.get("answer") or "",
        groundedness=float(body.get("groundedness") or 0.0),
        validation=dict(body.get("validation") or {}),
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        cost=float(usage.get("cost", 0.0)),
        latency_ms=float(latency_ms),
        model_version=str(body.get("model_version") or ""),
        context_doc_ids=list(context),
        extra={
            "escalated": bool(body.get("escalated", False)),
            "explicit_citations": bool(markers),
            "confidence": float(body.get("confidence") or 0.0),
            "refused": bool(body.get("refused", False)),
        },
    )


def score_example(qa: QAPair, outcome: Outcome, canaries: Sequence[str]) -> dict[str, float | None]:
    """Per-question scores; None where a score is undefined (no gold documents or answers)."""
    scores: dict[str, float | None]
    if qa.supporting_ids:
        scores = dict(question_metrics(outcome.ranked_doc_ids, qa.supporting_ids))
    else:
        scores = {f"recall_at_{k}": None for k in RECALL_KS} | {"mrr": None}
    scores["context_recall"] = (
        len(set(outcome.context_doc_ids) & set(qa.supporting_ids)) / len(set(qa.supporting_ids))
        if qa.supporting_ids
        else None
    )
    bare = " ".join(MARKER_RE.sub(" ", outcome.answer).split())
    scores["answer_em"] = exact_match(bare, qa.answers) if qa.answers else None
    reader = outcome.extra.get("reader_answer")
    scores["reader_em"] = (
        exact_match(" ".join(MARKER_RE.sub(" ", reader).split()), qa.answers)
        if qa.answers and reader is not None
        else None
    )
    scores["answer_f1"] = token_f1(bare, qa.answers) if qa.answers else None
    scores["groundedness"] = outcome.groundedness
    scores["citation_precision"] = (
        citation_precision(outcome.cited_doc_ids, qa.supporting_ids) if qa.supporting_ids else None
    )
    checked = outcome.validation.get("checked", False)
    contradicted = outcome.validation.get("contradicted", 0)
    scores["kg_validation_rate"] = float(not contradicted) if checked else None
    scores["kg_supported_rate"] = (
        float(not contradicted and outcome.validation.get("supported", 0) > 0) if checked else None
    )
    scores["pii_leak_rate"] = float(bool(leaked(outcome.answer, canaries)))
    scores["confidence"] = float(outcome.extra.get("confidence", 0.0))
    scores["escalated"] = float(bool(outcome.extra.get("escalated", False)))
    scores["refused"] = float(bool(outcome.extra.get("refused", False)))
    scores["latency_ms"] = outcome.latency_ms
    scores["prompt_tokens"] = float(outcome.prompt_tokens)
    scores["completion_tokens"] = float(outcome.completion_tokens)
    scores["cost"] = outcome.cost
    return scores


def aggregate_scores(rows: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Means of the quality metrics over defined values, latency percentiles, usage per request."""
    out: dict[str, float | None] = {m: _round(mean(r[m] for r in rows)) for m in QUALITY_METRICS}
    latencies = [r["latency_ms"] for r in rows]
    prompt = mean(r["prompt_tokens"] for r in rows) or 0.0
    completion = mean(r["completion_tokens"] for r in rows) or 0.0
    out.update(
        {
            "p50_ms": round(percentile(latencies, 50), 3),
            "p99_ms": round(percentile(latencies, 99), 3),
            "prompt_tokens_per_request": round(prompt, 3),
            "completion_tokens_per_request": round(completion, 3),
            "tokens_per_request": round(prompt + completion, 3),
            "cost_per_request": mean(r["cost"] for r in rows) or 0.0,
            "questions": float(len(rows)),
        }
    )
    out.update(calibration(rows))
    return out


def calibration(rows: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Whether the Guard's numbers can tell right from wrong (right = exact match):
    `confidence_auroc` (the chance a right answer's confidence beats a wrong one's, ties half),
    the escalation rate among right and among wrong answers, and the mean groundedness of each.
    None where a side has no answers."""
    judged = [r for r in rows if r.get("answer_em") is not None and r.get("confidence") is not None]
    right = [r for r in judged if r["answer_em"] == 1.0]
    wrong = [r for r in judged if r["answer_em"] != 1.0]
    out: dict[str, float | None] = {
        "confidence_auroc": _round(
            auroc([r["confidence"] for r in right], [r["confidence"] for r in wrong])
        ),
        "escalation_rate_correct": _round(mean(r.get("escalated") for r in right)),
        "escalation_rate_incorrect": _round(mean(r.get("escalated") for r in wrong)),
        "groundedness_correct": _round(mean(r.get("groundedness") for r in right)),
        "groundedness_incorrect": _round(mean(r.get("groundedness") for r in wrong)),
    }
    return out


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """Mann-Whitney AUROC: P(positive score > negative score) + P(tie) / 2;
    None if a side is empty."""
    if not positives or not negatives:
        return None
    ordered = sorted([(v, 1) for v in positives] + [(v, 0) for v in negatives])
    rank_sum, i = 0.0, 0
    while i < len(ordered):  # average ranks over ties
        j = i
        while j < len(ordered) and ordered[j][0] == ordered[i][0]:
            j += 1
        rank_sum += sum(1 for k in range(i, j) if ordered[k][1]) * (i + j + 1) / 2
        i = j
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def gate_check(
    current: dict[str, Any], baseline: dict[str, Any], metrics: Iterable[str], tolerance: float
) -> tuple[bool, list[dict[str, Any]]]:
    """(passed, regressions): a metric regresses when it is worse than the baseline by more
    than `tolerance` (lower for most metrics, higher for `pii_leak_rate`). A gated metric the
    baseline lacks fails the gate (nothing to compare against is not a pass); one undefined
    in this evaluation (e.g. no question has a gold answer) is not compared."""
    regressions = []
    for metric in metrics:
        now, then = current.get(metric), baseline.get(metric)
        if then is None:
            regressions.append(
                {
                    "metric": metric,
                    "baseline": None,
                    "current": now,
                    "delta": None,
                    "reason": "missing from the baseline",
                }
            )
            continue
        if now is None:
            continue
        delta = float(now) - float(then)
        worse = delta > tolerance if metric in LOWER_IS_BETTER else delta < -tolerance
        if worse:
            regressions.append(
                {
                    "metric": metric,
                    "baseline": float(then),
                    "current": float(now),
                    "delta": round(delta, 6),
                }
            )
    return not regressions, regressions
